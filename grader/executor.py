"""Grading one submission: read it, execute it in a sandboxed kernel, run the checks.

:func:`grade_submission` is the one entry point, used alike by the local batch
runner, Dask workers and ``grader check``. It never raises for anything the
student did: every outcome becomes a :class:`~grader.results.SubmissionResult`
with a status and a message.

Execution goes through nbclient with a new kernel per submission (launched by
:class:`SandboxedKernelManager`, from a zygote with the ``prepared`` provider; in the batch
runner's workers started ahead, while the previous submission runs: :class:`_Spare`),
per-cell and per-notebook wall-clock limits,
errors allowed so later questions still score, ``input()`` answered at once with
an error (the kernel gets no stdin), and outputs capped in size. The checks then
probe the live kernel (:mod:`grader.probe`); whatever the kernel prints while
they run is dropped.

Time limits are kept by killing, not by asking. A cell or a check that runs past its
limit is interrupted (a message the notebook can ignore) and given
:data:`INTERRUPT_GRACE_S` to stop; if it does not, its kernel's whole process tree is
killed and everything after it fails fast. Behind that, a :class:`~grader.sandbox.Deadline`
thread kills the tree at the notebook's limit, each check's, and the submission's total
(``notebook_timeout_s`` + the checks' budget, :func:`checks_budget_s`), a little after the
soft limit and whatever the kernel or the event loop does. So no worker is busy with one
submission for longer than :func:`time_bound_s`.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import hashlib
import json
import multiprocessing.util
import os
import queue
import re
import stat
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

import nbformat
from jupyter_client.blocking import BlockingKernelClient
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat.warnings import MissingIDFieldWarning

from . import __version__, data, fresh_inputs, kernels
from .kernels import Kernel, KernelSetup, SandboxedKernelManager
from .assignment import Assignment, Limits
from .checks import Check, run_checks
from .clean_kernel import CleanKernels
from .cleanroom import CleanRoom, run_in_loop
from .errors import DataUnavailable, InvalidSubmission
from .probe import (KernelTransport, Student, install_responder, install_responder_in,
                    next_message)
from .results import CellRun, CheckResult, Status, SubmissionResult, total_score
from .sandbox import Deadline, Watchdog, kill_tree, resolve_mode

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MAX_SUBMISSION_FOLDER_BYTES = 50 * 2**20
# A cell or probe past its time limit is interrupted, then given this long to stop
# before its kernel's whole tree is killed (an interrupt is a message: code looping
# inside C, ignoring SIGINT or with its I/O sabotaged never acts on it).
INTERRUPT_GRACE_S = 5.0
# The Deadline thread's hard limits pass this long after the soft ones, so that the
# interrupt-and-grace path, which can say which cell or check it was, normally acts first.
HARD_LIMIT_MARGIN_S = INTERRUPT_GRACE_S + 3.0
# What one submission may cost a worker beyond its notebook time and its checks' budget:
# the hard margin, the kernel's start and the kill and clean-up (see time_bound_s).
TIME_BOUND_SLACK_S = 30.0


@dataclass(frozen=True)
class GradeOptions:
    sandbox: str = "auto"  # auto | required | off
    device: str = "cpu"  # cpu | gpu
    data_dir: Path | None = None  # where housing.csv is, if not yet in the cache
    public_only: bool = False  # the student's self-check: public checks, no expected values
    executed_dir: Path | None = None  # write the executed notebook here
    scratch_root: Path | None = None  # where scratch folders go (default: the system tmp)
    gpu_devices: tuple[str, ...] = ()
    limits: Limits | None = None  # overrides the assignment's limits (tests, --cell-timeout)
    kernel_env: tuple[tuple[str, str], ...] = ()  # extra kernel environment (GRADER_SEED, ...)
    calibrating: bool = False  # bands open: trained-quality checks report, never fail
    # fresh | prepared (kernels forked from a per-worker zygote; see grader.kernels)
    kernel_provider: str = field(default_factory=kernels.default_provider)
    # Start the next submission's kernel in this process while this one runs (the batch
    # runner's worker processes, while submissions remain; see _Spare). A kernel started
    # ahead is used by the next submission with the same setup either way; each kernel
    # still grades one submission.
    warm_kernels: bool = False
    # The seed of the grading-time inputs (grader.fresh_inputs); None: derived from the
    # submission's bytes and GRADER_SECRET. Set it to replay a run (results record it).
    grading_seed: int | None = None


def read_notebook(raw: bytes) -> tuple[nbformat.NotebookNode, list[str]]:
    """Parse a submission; raise InvalidSubmission with a message the student understands."""
    notes: list[str] = []
    if not raw.strip():
        raise InvalidSubmission("The file is empty. Save your notebook in Jupyter "
                                "(File > Save) before you download and submit it.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidSubmission(
            f"The file is not UTF-8 text (byte {error.start} cannot be read), so it is not a "
            "Jupyter notebook. Submit the .ipynb file Jupyter saves, not a PDF or a zip.") from None
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidSubmission(
            f"The file is not valid notebook JSON (line {error.lineno}, column {error.colno}: "
            f"{error.msg}). It was probably edited by hand or cut short; download it again "
            "from Jupyter (File > Download as > Notebook).") from None
    if not isinstance(content, dict) or not isinstance(content.get("nbformat"), int):
        raise InvalidSubmission("The file is JSON but not a Jupyter notebook (it has no "
                                "'nbformat' field). Submit the .ipynb file of your notebook.")
    major = content["nbformat"]
    if major < 4:
        if "worksheets" not in content:
            raise InvalidSubmission(f"The notebook says nbformat {major} but has no worksheets; "
                                    "it cannot be read. Save it again from a current Jupyter.")
        try:
            notebook = nbformat.reads(text, as_version=4)
        except Exception as error:  # noqa: BLE001 - nbformat raises many kinds
            raise InvalidSubmission(f"The notebook is in the old format {major} and could not "
                                    f"be converted ({type(error).__name__}). Open and save it "
                                    "in a current Jupyter.") from None
        notes.append(f"Converted from notebook format {major} to 4.")
        return notebook, notes
    if not isinstance(content.get("cells"), list):
        raise InvalidSubmission("The notebook has no list of cells, so there is nothing to run. "
                                "Download it again from Jupyter.")
    for index, cell in enumerate(content["cells"]):
        if not isinstance(cell, dict) or "cell_type" not in cell or "source" not in cell:
            raise InvalidSubmission(f"Cell {index + 1} of the notebook is damaged (it has no "
                                    "type or source). Download the notebook again from Jupyter.")
    notebook = nbformat.from_dict(content)
    for cell in notebook.cells:
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
        cell.setdefault("metadata", {})
        if cell.cell_type == "code":
            cell.setdefault("outputs", [])
    return notebook, notes


class _StoppedByGrader(Exception):
    """A cell ran past its time limit and did not stop when interrupted: its kernel was killed."""


class CappedNotebookClient(NotebookClient):
    """nbclient with a cap on how much output a notebook may keep, and a cell time limit
    that holds: past it the kernel is interrupted, and killed if it does not stop."""

    def __init__(self, *args, max_output_bytes: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_output_bytes = max_output_bytes
        self.output_bytes = 0
        self.truncated_cells: set[int] = set()
        self.timed_out: set[int] = set()  # id() of cells whose time limit fired
        self.deadline: Deadline | None = None  # kills the kernel's tree (set once it runs)
        self._awaiting: str | None = None  # the msg_id of the cell being executed

    async def _async_poll_for_reply(self, msg_id, *args, **kwargs):
        self._awaiting = msg_id
        return await super()._async_poll_for_reply(msg_id, *args, **kwargs)

    async def _async_handle_timeout(self, timeout, cell=None):
        if cell is not None:
            self.timed_out.add(id(cell))
        if self.deadline is None:
            return await super()._async_handle_timeout(timeout, cell)
        try:
            reply = await super()._async_handle_timeout(timeout, cell)  # sends the interrupt
            stopped = await self._answered(INTERRUPT_GRACE_S)
        except Exception:  # noqa: BLE001 - the interrupt could not be sent: kill
            stopped = False
        if not stopped:
            await asyncio.to_thread(self.deadline.fire, "cell")
            raise _StoppedByGrader
        return reply

    async def _answered(self, seconds: float) -> bool:
        """Whether the interrupted cell's own reply arrives within ``seconds``: the kernel
        stopped it. (nbclient answers the timeout itself and goes on to the next cell.)"""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0 and not self.deadline.fired:
            try:  # in slices: the Deadline thread may have killed the kernel meanwhile
                msg = await self.kc.shell_channel.get_msg(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if msg.get("parent_header", {}).get("msg_id") == self._awaiting:
                return True
        return False

    def output(self, outs, msg, display_id, cell_index):
        size = len(json.dumps(msg.get("content", {}), default=str))
        if msg["msg_type"] != "error" and self.output_bytes + size > self.max_output_bytes:
            if cell_index not in self.truncated_cells:
                self.truncated_cells.add(cell_index)
                outs.append(nbformat.v4.new_output(
                    "stream", name="stderr",
                    text=f"[output truncated by the grader: the notebook's outputs passed "
                         f"{self.max_output_bytes // 1024} KB]\n"))
            return None
        self.output_bytes += size
        return super().output(outs, msg, display_id, cell_index)


class _Spare:
    """The warm pool: at most one kernel per worker process, started while the current
    submission runs, so that the next submission finds its kernel booted.

    A spare is a kernel like any other: its own sandbox and scratch folder, launched
    before its submission is known and given that submission's files (copied into its
    working directory, which is bound into the sandbox) before any cell runs. It never
    serves two submissions. It is killed, unused, when the setup changes, and when the
    worker process exits (a multiprocessing finalizer: the batch runner's workers)."""

    kernel: Kernel | None = None
    owner = 0  # the process the spare belongs to (a forked child inherits a stale copy)

    @classmethod
    def take(cls, setup: KernelSetup) -> Kernel | None:
        kernel, cls.kernel = cls._mine(), None
        if kernel is None:
            return None
        if kernel.setup != setup or not kernel.alive():
            kernel.discard()
            return None
        kernel.was_spare = True
        return kernel

    @classmethod
    async def prepare(cls, setup: KernelSetup) -> None:
        cls.release()
        kernel = Kernel(setup)
        try:
            await kernel.launch()
        except Exception:  # noqa: BLE001 - the next submission starts its own kernel
            kernel.discard()
            return
        if cls.owner != os.getpid():
            cls.owner = os.getpid()
            multiprocessing.util.Finalize(None, cls.release, exitpriority=110)
        cls.kernel = kernel

    @classmethod
    def release(cls) -> None:
        """Kill this process's spare kernel, if it has one."""
        kernel, cls.kernel = cls._mine(), None
        if kernel is not None:
            kernel.discard()

    @classmethod
    def _mine(cls) -> Kernel | None:
        if cls.owner != os.getpid():
            cls.kernel = None  # inherited through fork: the parent's spare, not ours
        return cls.kernel


release_spare_kernel = _Spare.release


def _kernel_for(setup: KernelSetup, notebook_path: Path, with_folder: bool) -> Kernel:
    """The spare kernel if it fits, else a new (not yet launched) one, with the submission
    copied into its working folder. Nothing is left behind if the copy fails."""
    kernel = _Spare.take(setup)
    if kernel is not None:
        try:
            _copy_submission(notebook_path, with_folder, kernel.work)
        except BaseException:
            kernel.discard()
            raise
        if not kernel.shadows_preloaded_modules():
            return kernel
        kernel.discard()  # a fresh kernel then, as the cold path gives it
    kernel = Kernel(setup)
    try:
        _copy_submission(notebook_path, with_folder, kernel.work)
    except BaseException:
        kernel.remove()
        raise
    return kernel


def grade_submission(notebook_path: Path, assignment: Assignment, options: GradeOptions,
                     student_id: str, *, with_folder: bool = False) -> SubmissionResult:
    """Grade one notebook. Never raises for the student's faults.

    ``with_folder``: the student submitted a folder; the small files beside the
    notebook are copied into the scratch folder too."""
    started = time.perf_counter()
    base = dict(student_id=student_id, assignment=assignment.name, score=0.0,
                max_score=_max_points(assignment, options), source_path=str(notebook_path),
                graded_at=_now(), versions=versions())
    try:
        raw = read_submission_bytes(notebook_path)
        base["submission_sha256"] = hashlib.sha256(raw).hexdigest()
        base["cache_key"] = cache_key(raw, assignment)
        notebook, notes = read_notebook(raw)
    except InvalidSubmission as error:
        return SubmissionResult(status=Status.INVALID, message=str(error),
                                checks=_not_run(assignment, options, "Not run: " + str(error)),
                                duration_s=time.perf_counter() - started, **base)
    try:
        datasets = data.prepare(assignment.datasets, options.data_dir)
    except DataUnavailable as error:
        message = f"The grader could not provide this assignment's data: {error}"
        return SubmissionResult(status=Status.GRADER_ERROR, message=message,
                                checks=_not_run(assignment, options, "Not run: " + message),
                                duration_s=time.perf_counter() - started, **base)
    mode, _warning = resolve_mode(options.sandbox)
    provider = kernels.provider_for(options.kernel_provider, mode, options.device,
                                    options.gpu_devices, assignment)
    run = _execute_and_check(notebook, notebook_path, with_folder, assignment, options, mode,
                             datasets, base, provider)
    # A new event loop per submission, spare kernels included: a loop kept between
    # submissions keeps selector registrations of sockets closed since, and a new socket
    # that gets the same descriptor number is then never polled (a hang).
    result = asyncio.run(run)
    message = " ".join([result.message, *notes]).strip()
    return replace(result, message=message, duration_s=round(time.perf_counter() - started, 3))


def read_submission_bytes(path: Path) -> bytes:
    """The bytes of a submitted notebook file, never blocking and never following a link:
    a FIFO, socket, device or folder named ``.ipynb`` is refused with a message for the
    student (opening a FIFO without O_NONBLOCK waits for a writer for ever)."""
    try:
        _refuse_unless_regular(os.lstat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY)
    except FileNotFoundError:
        raise InvalidSubmission("No notebook file was found for this submission.") from None
    except OSError as error:
        raise InvalidSubmission(f"The notebook file could not be opened ({error.strerror}). "
                                "Upload the .ipynb file itself.") from None
    with os.fdopen(fd, "rb") as handle:
        _refuse_unless_regular(os.fstat(fd).st_mode)  # what was opened, if it changed since
        return handle.read()


def _refuse_unless_regular(mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISLNK(mode):
        raise InvalidSubmission("The submission is a symbolic link, not a notebook file. "
                                "Upload the .ipynb file itself.")
    what = ("a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device or special file")
    raise InvalidSubmission(_NOT_A_FILE.format(what=what))


_NOT_A_FILE = ("The submission named .ipynb is {what}, not a notebook file, so it cannot be "
               "graded. Upload the .ipynb file Jupyter saves (File > Download as > Notebook).")


def cache_key(raw: bytes, assignment: Assignment) -> str:
    """The key of a submission's cached result: its bytes, the assignment (version and
    fingerprint: its checks, expected values and bands) and the grader's own code, so that
    a result is reused only where everything that could change it is unchanged."""
    digest = hashlib.sha256(raw)
    digest.update(f"\0{assignment.name}\0{assignment.version}\0{assignment.fingerprint}"
                  f"\0{__version__}\0{code_digest()}".encode())
    return digest.hexdigest()[:32]


def code_digest(package: Path | None = None) -> str:
    """A digest of the grader package's source (``*.py`` under ``package``, this package by
    default, read once per process): an edited or upgraded grader with an unchanged version
    number re-grades instead of reusing results its predecessor produced."""
    if package is None:
        return _own_code_digest()
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _own_code_digest() -> str:
    return code_digest(Path(__file__).resolve().parent)


def _copy_submission(notebook_path: Path, with_folder: bool, work: Path) -> None:
    """The notebook, plus small regular files beside it when the student submitted a folder."""
    shutil.copyfile(notebook_path, work / notebook_path.name)
    if not with_folder:
        return
    budget = MAX_SUBMISSION_FOLDER_BYTES
    for item in sorted(notebook_path.parent.iterdir()):
        if item.is_symlink() or not item.is_file() or item == notebook_path:
            continue
        budget -= item.stat().st_size
        if budget < 0:
            break
        shutil.copyfile(item, work / item.name)


async def _execute_and_check(notebook, notebook_path: Path, with_folder: bool,
                             assignment: Assignment, options: GradeOptions, mode: str,
                             datasets: dict[str, Path], base: dict,
                             provider: str = "fresh") -> SubmissionResult:
    limits = options.limits or assignment.limits
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    setup = KernelSetup.of(assignment, options, mode, datasets, provider)
    seed = options.grading_seed if options.grading_seed is not None \
        else fresh_inputs.grading_seed(base["submission_sha256"])
    context = fresh_inputs.GradingContext(
        seed=seed, cells=tuple(c.source for c in notebook.cells if c.cell_type == "code"))
    kernel = _kernel_for(setup, notebook_path, with_folder)
    km, io_dir = kernel.km, kernel.io_dir
    client = CappedNotebookClient(
        notebook, km=km, timeout=int(limits.cell_timeout_s), allow_errors=True,
        record_timing=True, interrupt_on_timeout=True, startup_timeout=60,
        error_on_timeout={"ename": "CellTimeoutError", "evalue": "", "traceback": []},
        max_output_bytes=limits.max_output_kb * 1024, shutdown_kernel="immediate",
        resources={"metadata": {"path": kernel.spec.cwd_inside}},
    )
    cells: list[CellRun] = []
    status, message = Status.OK, ""
    watchdog = deadline = None
    fired = None
    checks: list[CheckResult] = []
    # Graded runs only: models are rebuilt and measured there (grader.cleanroom).
    cleanroom = None if options.public_only else _clean_room_for(setup, asyncio.get_running_loop())
    try:
        if not kernel.was_spare:
            await kernel.launch()
        watchdog = Watchdog(km.provisioner.process.pid, limits.memory_mb, limits.max_processes)
        watchdog.start()
        deadline = client.deadline = Deadline(km.provisioner.process.pid)
        await client.async_start_new_kernel_client()
        # The probe's handler goes in before any cell runs: see grader.probe.
        probe_token = await install_responder(client.kc)
        timings["kernel_start"] = time.perf_counter() - t0
        if cleanroom is not None and _uses_clean_room(assignment):
            cleanroom.start_ahead()  # its kernel boots while the notebook runs
        if options.warm_kernels:  # the next submission's kernel boots while this one runs
            await _Spare.prepare(setup)
        t1 = time.perf_counter()
        budget = checks_budget_s(assignment, options)
        # The hard limits, from the first cell on: the notebook's, and the whole
        # submission's (the bound time_bound_s promises); each check arms its own.
        deadline.arm("total", limits.notebook_timeout_s + budget + HARD_LIMIT_MARGIN_S)
        deadline.arm("notebook", limits.notebook_timeout_s + HARD_LIMIT_MARGIN_S)
        status, message = await _run_cells(client, limits, cells, watchdog)
        deadline.clear("notebook")
        timings["cells"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        alive = deadline.fired is None and await km.is_alive() and \
            not (watchdog and watchdog.usage.killed_for)
        if alive:
            checks, stopped = await _run_checks_against(km, assignment, options, io_dir,
                                                        probe_token, deadline, budget,
                                                        context, setup, cleanroom)
            if stopped:  # the checks ran out of time: say so, after what the cells said
                status, message = Status.TIMEOUT, " ".join(filter(None, [message, stopped]))
        else:
            reason = message or "the kernel stopped"
            checks = list(_not_run(assignment, options, f"Not run: {reason}"))
        timings["checks"] = time.perf_counter() - t2
    except DeadKernelError:
        status = Status.CRASHED
    except Exception as error:  # noqa: BLE001 - a harness fault must not sink the batch
        if watchdog and watchdog.usage.killed_for:
            status = Status.MEMORY
        elif status is Status.OK and not (deadline and deadline.fired):
            status, message = Status.GRADER_ERROR, f"{type(error).__name__}: {error}"
    finally:
        if cleanroom is not None:
            closing = time.perf_counter()
            await asyncio.to_thread(cleanroom.close)
            if cleanroom.started:
                cleanroom.add_time("close", time.perf_counter() - closing)
            timings.update({f"cleanroom_{k}": v for k, v in cleanroom.timings.items()})
        t3 = time.perf_counter()
        fired = deadline.stop() if deadline else None
        await _shutdown(client, km)
        usage = watchdog.stop() if watchdog else None
        kernel.remove()
        timings["shutdown"] = time.perf_counter() - t3
    if fired and not (usage and usage.killed_for) and status is not Status.TIMEOUT:
        # Killed on a time limit where no cell or check could say so (between them, say).
        total = limits.notebook_timeout_s + checks_budget_s(assignment, options)
        status, message = Status.TIMEOUT, (
            f"Your notebook and its checks passed their time limit of {total:.0f} s and did not "
            f"stop when interrupted, so the grader stopped them{_while_running(cells)}. "
            f"{Status.TIMEOUT.explanation}")
    if usage and usage.killed_for:
        status = Status.MEMORY
        limit = (f"{limits.memory_mb} MB of memory" if usage.killed_for == "memory"
                 else f"{limits.max_processes} processes")
        message = (f"Your notebook was stopped for using more than {limit}"
                   f"{_while_running(cells)}. {Status.MEMORY.explanation}")
    elif status is Status.CRASHED and not message:
        message = f"The kernel died{_while_running(cells)}. {Status.CRASHED.explanation}"
    if not checks:
        checks = list(_not_run(assignment, options,
                               f"Not run: {message or 'the notebook did not finish'}"))
    score, max_score = total_score(checks)
    executed = _save_executed(client.nb, options, base["student_id"])
    return SubmissionResult(
        status=status, message=message or status.explanation, checks=tuple(checks),
        cells=tuple(cells), timings={k: round(v, 3) for k, v in timings.items()},
        peak_memory_mb=round(usage.peak_rss_mb, 1) if usage else 0.0, sandbox=mode,
        device=options.device, executed_notebook=executed,
        kernel_provider=getattr(km, "kernel_provider", "fresh"), warm_kernel=kernel.was_spare,
        grading_seed=str(seed) if not options.public_only else "",
        **{**base, "score": score, "max_score": max_score},
    )


async def _run_cells(client: CappedNotebookClient, limits, cells: list[CellRun],
                     watchdog: Watchdog) -> tuple[Status, str]:
    deadline = time.monotonic() + limits.notebook_timeout_s
    status, message = Status.OK, ""
    client.code_cells_executed = 0
    for index, cell in enumerate(client.nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Status.TIMEOUT, (f"Your notebook passed its time limit of "
                                    f"{limits.notebook_timeout_s:.0f} s before cell {index + 1} "
                                    f"ran. {Status.TIMEOUT.explanation}")
        client.timeout = max(1, int(min(limits.cell_timeout_s, remaining)))
        started = time.perf_counter()
        try:
            await client.async_execute_cell(cell, index,
                                            execution_count=client.code_cells_executed + 1)
        except (_StoppedByGrader, DeadKernelError) as error:
            duration = round(time.perf_counter() - started, 3)
            killed = client.deadline is not None and client.deadline.fired
            if not killed:
                cells.append(CellRun(index=index, duration_s=duration,
                                     error="The kernel died while this cell ran"))
                raise
            cells.append(CellRun(index=index, duration_s=duration, timed_out=True,
                                 error="the cell ran past its time limit and did not stop "
                                       "when interrupted"))
            if isinstance(error, _StoppedByGrader):
                what = f"Cell {index + 1} ran past its time limit of {client.timeout} s"
            else:
                what = (f"Your notebook passed its time limit of "
                        f"{limits.notebook_timeout_s:.0f} s while cell {index + 1} ran")
            return Status.TIMEOUT, (
                f"{what} and did not stop when interrupted, so the grader stopped it; later "
                "cells and the checks could not run. Code that loops inside a library call "
                "(a regular expression, say), ignores interrupts or blocks the notebook's "
                f"output can only be stopped this way. {Status.TIMEOUT.explanation}")
        run = _cell_run(cell, index, time.perf_counter() - started,
                        timed_out=id(cell) in client.timed_out)
        cells.append(run)
        if run.timed_out:
            status = Status.TIMEOUT
            message = (f"Cell {index + 1} ran past its time limit of {client.timeout} s and was "
                       f"interrupted. {Status.TIMEOUT.explanation}")
        elif run.error and status is Status.OK:
            status = Status.ERROR
            message = f"Cell {index + 1} raised {run.error.rstrip('.')}."
    return status, message


def _cell_run(cell, index: int, duration: float, timed_out: bool = False) -> CellRun:
    if timed_out:
        return CellRun(index=index, duration_s=round(duration, 3), timed_out=True,
                       error="the cell ran past its time limit")
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            ename = output.get("ename", "Error")
            evalue = ANSI.sub("", str(output.get("evalue", "")))[:500]
            if ename == "StdinNotImplementedError":
                evalue = "input() cannot be answered while grading; use a fixed value instead"
            traceback = _student_traceback(output.get("traceback", []))
            return CellRun(index=index, duration_s=round(duration, 3),
                           error=f"{ename}: {evalue}".rstrip(": "), traceback=traceback)
    return CellRun(index=index, duration_s=round(duration, 3))


def _student_traceback(lines: list[str]) -> str:
    """The traceback with ANSI colour stripped, capped, library frames folded away."""
    text = ANSI.sub("", "\n".join(str(line) for line in lines))
    blocks = text.split("\n\n")
    kept = [b for b in blocks if "site-packages" not in b.split("\n", 1)[0]] or blocks
    if len(kept) < len(blocks):
        kept.insert(-1, f"[{len(blocks) - len(kept)} library frame(s) hidden]")
    text = "\n\n".join(kept)
    return text if len(text) <= 4000 else "...(truncated)\n" + text[-4000:]


def checks_budget_s(assignment: Assignment, options: GradeOptions) -> float:
    """The checks' budget: the wall-clock seconds all checks of one submission may take
    together. ``checks_timeout_s`` in ``[limits]`` when set, else the sum of the timeouts
    of the checks that run (each check's ``timeout`` bounds the check as a whole)."""
    limits = options.limits or assignment.limits
    if limits.checks_timeout_s is not None:
        return float(limits.checks_timeout_s)
    return float(sum(c.timeout for c in assignment.checks(public_only=options.public_only)))


def time_bound_s(assignment: Assignment, options: GradeOptions) -> float:
    """The longest a worker is busy with one submission of ``assignment``, whatever the
    notebook does: ``notebook_timeout_s`` + :func:`checks_budget_s` + 30 s. The 30 s hold
    the hard limits' margin past the soft ones, the kill, the clean-up and the kernel's
    start. Not counted, as no notebook has a say in them: once per worker, the start of
    its zygote (prepared kernels import TensorFlow once), and a kernel that never starts
    (given up after 60 s, before any of the notebook runs)."""
    limits = options.limits or assignment.limits
    return limits.notebook_timeout_s + checks_budget_s(assignment, options) + TIME_BOUND_SLACK_S


async def _run_checks_against(km, assignment: Assignment, options: GradeOptions, io_dir: Path,
                              probe_token: tuple[str | None, str], deadline: Deadline,
                              budget: float,
                              context: fresh_inputs.GradingContext | None = None,
                              setup: KernelSetup | None = None,
                              cleanroom: CleanRoom | None = None
                              ) -> tuple[list[CheckResult], str]:
    """The checks' results, and what to tell the student if the checks ran out of time."""
    kc = BlockingKernelClient()
    kc.load_connection_info(km.get_connection_info())
    kc.start_channels()
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        """A probe ran past its time: interrupt the kernel; kill it if it does not stop."""
        try:
            asyncio.run_coroutine_threadsafe(km.interrupt_kernel(), loop).result(timeout=10)
        except Exception:  # noqa: BLE001 - the kill below does not need it
            pass
        if not _answers_within(kc, INTERRUPT_GRACE_S, deadline):
            deadline.fire("check")

    def alive() -> bool:
        if deadline.fired:
            return False
        return asyncio.run_coroutine_threadsafe(km.is_alive(), loop).result(timeout=10)

    # Answer folders are made in the io folder, which the kernel can write: the grader
    # creates, reads and removes them only relative to a descriptor it opened itself.
    student = Student(KernelTransport(kc, interrupt, *probe_token), io_dir)
    clean = None
    if context is not None and setup is not None and not options.public_only:
        # A kernel where no student code ran, for checks that run one definition alone.
        limits = options.limits or assignment.limits
        clean = CleanKernels(setup, loop, limits.memory_mb, limits.max_processes)
        context = replace(context, clean_kernel=clean)
    try:
        if cleanroom is not None:
            student.cleanroom = cleanroom
        if not options.public_only and context is not None:
            # Public checks draw their inputs from the grading seed, and run a definition
            # alone in the clean kernel, only here (see Student.grading).
            student.grading = context
        expected = (assignment.expected if not options.public_only
                    else type(assignment.expected).refusing(assignment.name))
        if not options.public_only:
            expected = expected.for_device(options.device)
            if context is not None:
                expected = expected.for_submission(context)
            if options.calibrating:
                expected = expected.calibrating()
        items = assignment.checks(public_only=options.public_only)
        return await asyncio.to_thread(_run_checks_within, items, student, expected, alive,
                                       deadline, budget)
    finally:
        student.close()
        kc.stop_channels()
        if clean is not None:
            await clean.close()


def _answers_within(kc, seconds: float, deadline: Deadline) -> bool:
    """Whether the kernel answers the probe it was running (its reply is the only one
    outstanding: the transport has read every earlier one) within ``seconds``."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0 and not deadline.fired:
        try:  # in slices: the Deadline thread may have killed the kernel meanwhile
            next_message(kc, "shell", min(left, 0.5))
        except queue.Empty:
            continue
        return True
    return False


def _run_checks_within(items: list[Check], student: Student, expected, alive,
                       deadline: Deadline, budget: float) -> tuple[list[CheckResult], str]:
    """:func:`~grader.checks.run_checks`, one check at a time, each within its own timeout
    and all within the checks' budget (and what is left of the submission's total). Each
    check's limit is soft in its probes (interrupt, grace, kill) and hard in ``deadline``."""
    ends = time.monotonic() + budget
    total_left = deadline.remaining("total")
    if total_left is not None:
        ends = min(ends, time.monotonic() + total_left - HARD_LIMIT_MARGIN_S)
    results: list[CheckResult] = []
    stopped, skipped = "", 0
    for item in items:
        left = ends - time.monotonic()
        if left < 1 and not deadline.fired:
            skipped += 1
            results.append(_not_run_check(item, f"Not run: the checks' time limit of "
                                                f"{budget:.0f} s ran out before its turn."))
            continue
        timed = replace(item, timeout=min(item.timeout, left))
        deadline.arm("check", timed.timeout + HARD_LIMIT_MARGIN_S)
        try:
            results += run_checks([timed], student, expected, alive)
        finally:
            deadline.clear("check")
        if deadline.fired and not stopped:
            stopped = (f"A check ({item.id}) ran past its time limit of {timed.timeout:.0f} s "
                       "while it ran your code, which did not stop when interrupted, so the "
                       "grader stopped your notebook; the checks after it could not run. "
                       f"{Status.TIMEOUT.explanation}")
    if skipped and not stopped:
        stopped = (f"The checks ran out of their time limit of {budget:.0f} s before {skipped} "
                   "of them ran: the functions they call answered too slowly. "
                   f"{Status.TIMEOUT.explanation}")
    return results, stopped


def _uses_clean_room(assignment: Assignment) -> bool:
    """Whether a check of ``assignment`` calls a helper that needs the clean room (its
    kernel is then started ahead; any other check still gets one on first use)."""
    from . import keras_checks

    users = (keras_checks.describe, keras_checks.holdout_accuracy, keras_checks.graded_model)
    return any(value is user for item in assignment.checks()
               for value in getattr(item.function, "__globals__", {}).values() for user in users)


def _clean_room_for(setup: KernelSetup, loop: asyncio.AbstractEventLoop) -> CleanRoom:
    """A clean room for one submission: a kernel of the same setup (so a prepared one forks
    from the same zygote) with an empty working folder. It is started ahead, while the
    notebook runs (:meth:`CleanRoom.start_ahead`), or when a check first needs it (from the
    checks' thread); it is killed with its folders when the checks are done."""
    state: dict = {}

    async def launch() -> None:
        kernel = state["kernel"] = Kernel(setup)
        await kernel.launch()

    def ahead() -> None:
        state["launch"] = asyncio.ensure_future(launch())  # called from the loop's thread

    async def launched() -> None:
        await state["launch"]

    def start() -> Student:
        if "launch" not in state:
            run_in_loop(launch(), loop, timeout=120)
        else:
            run_in_loop(launched(), loop, timeout=120)
        kernel = state["kernel"]
        watchdog = state["watchdog"] = Watchdog(kernel.process.pid, setup.memory_mb,
                                                setup.max_processes)
        watchdog.start()
        # The probe's responder first (no student code ever runs here, but the protocol is
        # the same one), then a client for the checks' thread.
        probe_token = run_in_loop(install_responder_in(kernel.km), loop, timeout=90)
        kc = state["kc"] = BlockingKernelClient()
        kc.load_connection_info(kernel.km.get_connection_info())
        kc.start_channels()
        kc.wait_for_ready(timeout=60)

        def interrupt() -> None:
            run_in_loop(kernel.km.interrupt_kernel(), loop, timeout=10)

        student = state["student"] = Student(KernelTransport(kc, interrupt, *probe_token),
                                             kernel.io_dir)
        return student

    def close() -> None:
        if "launch" in state:  # started ahead: let the launch finish (or fail) first
            try:
                run_in_loop(launched(), loop, timeout=120)
            except Exception:  # noqa: BLE001 - whatever was started is killed below
                pass
        if "student" in state:
            state["student"].close()
        if "kc" in state:
            state["kc"].stop_channels()
        if "watchdog" in state:
            state["watchdog"].stop()
        if "kernel" in state:
            state["kernel"].discard()
            try:
                run_in_loop(state["kernel"].km._async_cleanup_resources(), loop, timeout=10)
            except Exception:  # noqa: BLE001 - the process tree is gone either way
                pass

    return CleanRoom(start, close, ahead)


async def _shutdown(client: NotebookClient, km: SandboxedKernelManager) -> None:
    process = getattr(getattr(km, "provisioner", None), "process", None)
    try:
        if client.kc is not None:
            client.kc.stop_channels()
        if km.has_kernel:
            await asyncio.wait_for(km.shutdown_kernel(now=True), timeout=10)
    except Exception:  # noqa: BLE001 - the tree is killed below either way
        pass
    if process is not None:
        kill_tree(process.pid)
    try:
        await km._async_cleanup_resources()
    except Exception:  # noqa: BLE001
        pass


def _while_running(cells: list[CellRun]) -> str:
    return f" while cell {cells[-1].index + 1} ran" if cells else ""


def unscored_result(assignment: Assignment, options: GradeOptions, student_id: str,
                    status: Status, message: str, source_path: str = "") -> SubmissionResult:
    """A submission that could not be run (no single notebook, a worker lost): every check
    is reported as not run, with the reason."""
    return SubmissionResult(
        student_id=student_id, assignment=assignment.name, status=status, message=message,
        score=0.0, max_score=_max_points(assignment, options),
        checks=_not_run(assignment, options, "Not run: " + message), source_path=source_path,
        graded_at=_now(), versions=versions())


def _not_run(assignment: Assignment, options: GradeOptions, message: str) -> tuple[CheckResult, ...]:
    return tuple(_not_run_check(c, message)
                 for c in assignment.checks(public_only=options.public_only))


def _not_run_check(item: Check, message: str) -> CheckResult:
    return CheckResult(id=item.id, question=item.question, points=item.points, score=0.0,
                       passed=False, hidden=item.hidden, message=message,
                       description=item.description)


def _max_points(assignment: Assignment, options: GradeOptions) -> float:
    return round(sum(c.points for c in assignment.checks(public_only=options.public_only)), 6)


def _save_executed(notebook, options: GradeOptions, student_id: str) -> str | None:
    if options.executed_dir is None:
        return None
    options.executed_dir.mkdir(parents=True, exist_ok=True)
    path = options.executed_dir / f"{student_id}.ipynb"
    with warnings.catch_warnings():
        # Cells without ids (hand-made or older tools): nbformat adds them, and says so on
        # the instructor's terminal once per notebook; nothing there for anyone to do.
        warnings.simplefilter("ignore", MissingIDFieldWarning)
        nbformat.write(notebook, str(path))
    return str(path)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    found = {"grader": __version__, "python": sys.version.split()[0]}
    for package in ("tensorflow-cpu", "tensorflow", "keras", "nbclient", "jupyter_client",
                    "ipykernel", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found
