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
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import json
import multiprocessing.util
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

import nbformat
from jupyter_client import AsyncKernelManager
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpec
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from . import __version__, data, kernels
from .assignment import Assignment, Limits
from .checks import run_checks
from .cleanroom import CleanRoom, run_in_loop
from .errors import DataUnavailable, InvalidSubmission
from .probe import KernelTransport, Student
from .results import CellRun, CheckResult, Status, SubmissionResult, total_score
from .sandbox import SandboxSpec, Watchdog, kill_tree, resolve_mode

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MAX_SUBMISSION_FOLDER_BYTES = 50 * 2**20


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


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel starts inside the sandbox, over IPC sockets."""

    def configure(self, spec: SandboxSpec) -> None:
        kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        if spec.mode == "bubblewrap":
            # Inside a PID namespace the kernel's parent is bubblewrap's init (PID 1), which
            # ipykernel would read as "my parent died". --die-with-parent covers that case.
            kernel.append("--IPKernelApp.parent_handle=1")
        argv = spec.wrap(kernel)
        # Interrupts travel as messages: a signal would reach bubblewrap, not the kernel.
        self._kernel_spec = KernelSpec(argv=argv, display_name="Python 3 (graded)",
                                       language="python", interrupt_mode="message")
        # A kernel that died stays dead: the submission is reported as crashed, never
        # silently restarted (the restarter would also tie this manager to one event loop).
        self.autorestart = False


class CappedNotebookClient(NotebookClient):
    """nbclient with a cap on how much output a notebook may keep."""

    def __init__(self, *args, max_output_bytes: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_output_bytes = max_output_bytes
        self.output_bytes = 0
        self.truncated_cells: set[int] = set()
        self.timed_out: set[int] = set()  # id() of cells whose time limit fired

    async def _async_handle_timeout(self, timeout, cell=None):
        if cell is not None:
            self.timed_out.add(id(cell))
        return await super()._async_handle_timeout(timeout, cell)

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


@dataclass(frozen=True)
class _KernelSetup:
    """Everything a kernel's sandbox depends on except the submission itself. A kernel
    started ahead (:class:`_Spare`) is used only for a submission with the same setup."""

    mode: str
    provider: str
    datasets: tuple[tuple[str, Path], ...]
    memory_mb: int
    max_processes: int
    max_file_mb: int
    gpu_devices: tuple[str, ...]
    kernel_env: tuple[tuple[str, str], ...]
    heavy_modules: tuple[str, ...]
    scratch_root: Path | None

    @classmethod
    def of(cls, assignment: Assignment, options: GradeOptions, mode: str,
           datasets: dict[str, Path], provider: str) -> _KernelSetup:
        limits = options.limits or assignment.limits
        return cls(mode, provider, tuple(sorted(datasets.items())), limits.memory_mb,
                   limits.max_processes, limits.max_file_mb, tuple(options.gpu_devices),
                   tuple(options.kernel_env), tuple(assignment.heavy_modules),
                   options.scratch_root)


class _Kernel:
    """One sandboxed kernel and its scratch folder: used for one submission, then removed."""

    def __init__(self, setup: _KernelSetup):
        self.setup = setup
        self.was_spare = False  # started ahead, while the previous submission ran
        self.log = None
        self.scratch = Path(tempfile.mkdtemp(prefix="grader-", dir=setup.scratch_root)).resolve()
        self.work, self.io_dir, mounts = _prepare_scratch(self.scratch, setup.mode,
                                                          dict(setup.datasets))
        self.spec = SandboxSpec(mode=setup.mode, work_dir=self.work, io_dir=self.io_dir,
                                data_mounts=mounts, memory_mb=setup.memory_mb,
                                max_processes=setup.max_processes, max_file_mb=setup.max_file_mb,
                                gpu_devices=setup.gpu_devices, extra_env=dict(setup.kernel_env))
        connection = dict(transport="ipc", ip=str(self.io_dir / "kernel"),
                          connection_file=str(self.io_dir / "kernel.json"))
        if setup.provider == "prepared":
            self.km = kernels.prepared_kernel_manager(SandboxedKernelManager, self.spec,
                                                      setup.heavy_modules, **connection)
        else:
            self.km = SandboxedKernelManager(**connection)
            self.km.configure(self.spec)

    async def launch(self) -> None:
        """Start the kernel process; it boots on its own (the client waits for it later)."""
        # The kernel's own stdout/stderr (TensorFlow's C++ start-up logs) go to a file in
        # the scratch folder, not to the instructor's terminal.
        self.log = open(self.scratch / "kernel.log", "wb")  # noqa: SIM115 - closed in remove()
        # What nbclient's start_new_kernel would pass: no history file for a graded kernel.
        await self.km.start_kernel(extra_arguments=["--HistoryManager.hist_file=:memory:"],
                                   env=self.spec.environment(), cwd=str(self.work),
                                   stdout=self.log, stderr=self.log)

    @property
    def process(self):
        return getattr(getattr(self.km, "provisioner", None), "process", None)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def shadows_preloaded_modules(self) -> bool:
        """A kernel forked from the zygote cannot see a submission's ``numpy.py``; such a
        submission needs a fresh kernel (see :mod:`grader.kernels`)."""
        return getattr(self.km, "kernel_provider", "") == "prepared" and \
            bool(kernels.shadowed_by(self.work))

    def remove(self) -> None:
        """Delete the scratch and io folders (the kernel has been shut down or killed)."""
        if self.log is not None:
            self.log.close()
        io_link = self.scratch / "io"
        if io_link.is_symlink():
            shutil.rmtree(io_link.resolve(), ignore_errors=True)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def discard(self) -> None:
        """Kill a kernel that graded nothing, and remove its folders."""
        process = self.process
        if process is not None:
            kill_tree(process.pid)
            try:
                process.wait(timeout=5)  # reap it (a Popen of ours, or the zygote's child)
            except Exception:  # noqa: BLE001 - killed either way
                pass
        self.remove()


class _Spare:
    """The warm pool: at most one kernel per worker process, started while the current
    submission runs, so that the next submission finds its kernel booted.

    A spare is a kernel like any other: its own sandbox and scratch folder, launched
    before its submission is known and given that submission's files (copied into its
    working directory, which is bound into the sandbox) before any cell runs. It never
    serves two submissions. It is killed, unused, when the setup changes, and when the
    worker process exits (a multiprocessing finalizer: the batch runner's workers)."""

    kernel: _Kernel | None = None
    owner = 0  # the process the spare belongs to (a forked child inherits a stale copy)

    @classmethod
    def take(cls, setup: _KernelSetup) -> _Kernel | None:
        kernel, cls.kernel = cls._mine(), None
        if kernel is None:
            return None
        if kernel.setup != setup or not kernel.alive():
            kernel.discard()
            return None
        kernel.was_spare = True
        return kernel

    @classmethod
    async def prepare(cls, setup: _KernelSetup) -> None:
        cls.release()
        kernel = _Kernel(setup)
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
    def _mine(cls) -> _Kernel | None:
        if cls.owner != os.getpid():
            cls.kernel = None  # inherited through fork: the parent's spare, not ours
        return cls.kernel


release_spare_kernel = _Spare.release


def _kernel_for(setup: _KernelSetup, notebook_path: Path, with_folder: bool) -> _Kernel:
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
    kernel = _Kernel(setup)
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
        raw = _read_bytes(notebook_path)
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


def _read_bytes(path: Path) -> bytes:
    if path.is_symlink():
        raise InvalidSubmission("The submission is a symbolic link, not a notebook file. "
                                "Upload the .ipynb file itself.")
    if not path.is_file():
        raise InvalidSubmission("No notebook file was found for this submission.")
    return path.read_bytes()


def cache_key(raw: bytes, assignment: Assignment) -> str:
    digest = hashlib.sha256(raw)
    digest.update(f"\0{assignment.name}\0{assignment.version}\0{assignment.fingerprint}"
                  f"\0{__version__}".encode())
    return digest.hexdigest()[:32]


def _prepare_scratch(scratch: Path, mode: str, datasets: dict[str, Path]) -> tuple[Path, Path, tuple]:
    """The kernel's folders under ``scratch``: ``work`` (its working directory, where the
    submission is copied), ``home``, and ``io`` (a link to a short path for its sockets)."""
    work, io_dir, home = scratch / "work", scratch / "io", scratch / "home"
    for folder in (work, home):
        folder.mkdir()
    io_dir.symlink_to(_short_io_dir(), target_is_directory=True)
    io_dir = io_dir.resolve()
    mounts = []
    if "mnist" in datasets:
        mounts.append((datasets["mnist"].parent, "~/.keras/datasets"))
    if "housing" in datasets:
        mounts.append((datasets["housing"].parent, "./datasets/housing"))
    if mode == "off":  # no mounts without bubblewrap: copies, so the cache cannot be harmed
        for host, inside in mounts:
            target = Path(inside.replace("~", str(home), 1).replace("./", str(work) + "/", 1))
            if not target.exists():
                shutil.copytree(host, target, ignore=shutil.ignore_patterns("*.partial*"))
        mounts = []
    return work, io_dir, tuple(mounts)


# A Unix socket path holds at most 107 bytes; kernel sockets are named "<io>/kernel-<n>".
MAX_IO_DIR_CHARS = 90


def _short_io_dir() -> Path:
    """A folder for the kernel's IPC sockets and probes with a path short enough for them:
    under the grader's cache, else the system tmp (OUT may be nested deep)."""
    for parent in (data.cache_root() / "io", Path(tempfile.gettempdir())):
        if len(str(parent)) + 20 <= MAX_IO_DIR_CHARS:
            parent.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix="io-", dir=parent))
    return Path(tempfile.mkdtemp(prefix="gio-", dir="/tmp"))


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
    setup = _KernelSetup.of(assignment, options, mode, datasets, provider)
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
    watchdog = None
    checks: list[CheckResult] = []
    # Graded runs only: models are rebuilt and measured there (grader.cleanroom).
    cleanroom = None if options.public_only else _clean_room_for(setup, asyncio.get_running_loop())
    try:
        if not kernel.was_spare:
            await kernel.launch()
        watchdog = Watchdog(km.provisioner.process.pid, limits.memory_mb, limits.max_processes)
        watchdog.start()
        await client.async_start_new_kernel_client()
        timings["kernel_start"] = time.perf_counter() - t0
        if cleanroom is not None and _uses_clean_room(assignment):
            cleanroom.start_ahead()  # its kernel boots while the notebook runs
        if options.warm_kernels:  # the next submission's kernel boots while this one runs
            await _Spare.prepare(setup)
        t1 = time.perf_counter()
        status, message = await _run_cells(client, limits, cells, watchdog)
        timings["cells"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        alive = await km.is_alive() and not (watchdog and watchdog.usage.killed_for)
        if alive:
            checks = await _run_checks_against(km, assignment, options, io_dir, cleanroom)
        else:
            reason = message or "the kernel stopped"
            checks = list(_not_run(assignment, options, f"Not run: {reason}"))
        timings["checks"] = time.perf_counter() - t2
    except DeadKernelError:
        status = Status.CRASHED
    except Exception as error:  # noqa: BLE001 - a harness fault must not sink the batch
        if watchdog and watchdog.usage.killed_for:
            status = Status.MEMORY
        elif status is Status.OK:
            status, message = Status.GRADER_ERROR, f"{type(error).__name__}: {error}"
    finally:
        if cleanroom is not None:
            closing = time.perf_counter()
            await asyncio.to_thread(cleanroom.close)
            if cleanroom.started:
                cleanroom.add_time("close", time.perf_counter() - closing)
            timings.update({f"cleanroom_{k}": v for k, v in cleanroom.timings.items()})
        t3 = time.perf_counter()
        await _shutdown(client, km)
        usage = watchdog.stop() if watchdog else None
        kernel.remove()
        timings["shutdown"] = time.perf_counter() - t3
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
        except DeadKernelError:
            cells.append(CellRun(index=index, duration_s=round(time.perf_counter() - started, 3),
                                 error="The kernel died while this cell ran"))
            raise
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


async def _run_checks_against(km, assignment: Assignment, options: GradeOptions,
                              io_dir: Path, cleanroom: CleanRoom | None = None) -> list[CheckResult]:
    kc = BlockingKernelClient()
    kc.load_connection_info(km.get_connection_info())
    kc.start_channels()
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        asyncio.run_coroutine_threadsafe(km.interrupt_kernel(), loop).result(timeout=10)

    def alive() -> bool:
        return asyncio.run_coroutine_threadsafe(km.is_alive(), loop).result(timeout=10)

    try:
        transport = KernelTransport(kc, interrupt, io_dir / "_grader_probe.py")
        student = Student(transport, io_dir / "probes")
        if cleanroom is not None:
            student.cleanroom = cleanroom
        expected = (assignment.expected if not options.public_only
                    else type(assignment.expected).refusing(assignment.name))
        if not options.public_only:
            expected = expected.for_device(options.device)
            if options.calibrating:
                expected = expected.calibrating()
        items = assignment.checks(public_only=options.public_only)
        return await asyncio.to_thread(run_checks, items, student, expected, alive)
    finally:
        kc.stop_channels()


def _uses_clean_room(assignment: Assignment) -> bool:
    """Whether a check of ``assignment`` calls a helper that needs the clean room (its
    kernel is then started ahead; any other check still gets one on first use)."""
    from . import keras_checks

    users = (keras_checks.describe, keras_checks.holdout_accuracy, keras_checks.graded_model)
    return any(value is user for item in assignment.checks()
               for value in getattr(item.function, "__globals__", {}).values() for user in users)


def _clean_room_for(setup: _KernelSetup, loop: asyncio.AbstractEventLoop) -> CleanRoom:
    """A clean room for one submission: a kernel of the same setup (so a prepared one forks
    from the same zygote) with an empty working folder. It is started ahead, while the
    notebook runs (:meth:`CleanRoom.start_ahead`), or when a check first needs it (from the
    checks' thread); it is killed with its folders when the checks are done."""
    state: dict = {}

    async def launch() -> None:
        kernel = state["kernel"] = _Kernel(setup)
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
        kc = state["kc"] = BlockingKernelClient()
        kc.load_connection_info(kernel.km.get_connection_info())
        kc.start_channels()
        kc.wait_for_ready(timeout=60)

        def interrupt() -> None:
            run_in_loop(kernel.km.interrupt_kernel(), loop, timeout=10)

        transport = KernelTransport(kc, interrupt, kernel.io_dir / "_grader_probe.py")
        return Student(transport, kernel.io_dir / "probes")

    def close() -> None:
        if "launch" in state:  # started ahead: let the launch finish (or fail) first
            try:
                run_in_loop(launched(), loop, timeout=120)
            except Exception:  # noqa: BLE001 - whatever was started is killed below
                pass
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
    return tuple(
        CheckResult(id=c.id, question=c.question, points=c.points, score=0.0, passed=False,
                    hidden=c.hidden, message=message, description=c.description)
        for c in assignment.checks(public_only=options.public_only))


def _max_points(assignment: Assignment, options: GradeOptions) -> float:
    return round(sum(c.points for c in assignment.checks(public_only=options.public_only)), 6)


def _save_executed(notebook, options: GradeOptions, student_id: str) -> str | None:
    if options.executed_dir is None:
        return None
    options.executed_dir.mkdir(parents=True, exist_ok=True)
    path = options.executed_dir / f"{student_id}.ipynb"
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
