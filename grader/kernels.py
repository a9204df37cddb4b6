"""Kernel providers: where each submission's kernel comes from.

``fresh`` starts every kernel as a new Python process inside a new bubblewrap sandbox
(:class:`SandboxedKernelManager`, below). Every kernel then pays for
``import tensorflow`` (about 4 s of CPU) and a kernel start (about 0.7 s).

``prepared`` (the default; ``--kernel-provider``, ``GradeOptions.kernel_provider`` and
``$GRADER_KERNEL_PROVIDER`` choose) pays that once per worker process: a *zygote*
(:mod:`grader.zygote`) runs inside a per-worker bubblewrap sandbox laid out like a
submission's (same read-only system, same Python, the grader package, the data cache
at staging paths, no network), imports numpy, pandas, tensorflow, keras, IPython and
ipykernel (plus the assignment's ``heavy_modules``), and then forks one kernel per
submission. Each forked kernel still gets a fresh, isolated sandbox:

* new mount, PID, IPC, UTS and network namespaces (``unshare`` in a forked child; the
  kernel's init is PID 1 of its own PID namespace, so killing it kills every daemon
  and double fork of the submission);
* its own fresh tmpfs ``/tmp``, ``/dev/shm`` and home, its own scratch copy bound at the
  working directory, its io folder at its host path, the data cache read-only, and
  everything else read-only, the zygote's own root and ``/dev`` included (so nothing a
  submission writes can be seen by the next one); a new ``/proc``;
* no capabilities at all (bounding set emptied, ``no_new_privs``), uid and gid 1000 in a
  user namespace of its own, the seccomp filter of :mod:`grader.seccomp`, the same
  file-size, open-files and core limits, the same environment as a fresh kernel;
* a session keyring of its own (and no key system call); its init stands in an empty
  read-only folder and is not dumpable, so ``/proc/1/cwd`` and ``/proc/1/fd`` lead
  nowhere; its standard output and error are its own ``kernel.log`` (the descriptor
  travels with the request over the zygote's socket, ``SCM_RIGHTS``), and every other
  descriptor it inherited from the zygote is replaced by ``/dev/null``. The zygote's own
  output goes to ``zygote.log`` in its folder: nothing in a sandbox holds the grader's
  terminal;
* the same :class:`~grader.sandbox.Watchdog` on its process tree and the same
  :func:`~grader.sandbox.kill_tree` at the end.

What is shared, and why that is safe. A forked kernel starts as a copy-on-write copy of
the zygote's memory: the imported modules, exactly as a fresh kernel would have them
after importing them itself. Nothing a kernel does reaches the zygote or another
kernel: writes go to the kernel's private copy of each page (monkeypatching
``numpy.allclose`` or setting ``tf.__grader_leak__`` changes the kernel's copy only;
``tests/test_prepared_kernels.py`` checks it), and every writable file system is
per-kernel. The zygote never runs student code, never reads a connection file (so it
never holds another submission's key), and keeps no request after answering it.
Differences from a fresh kernel, on purpose or unavoidable:

* ``PYTHONHASHSEED``: every kernel of one zygote has the zygote's string-hash seed
  (variables named ``PYTHON*`` in the kernel environment are given to the zygote,
  which is restarted when they change). ``random`` and numpy's global generator are
  reseeded from the OS in each kernel.
* Memory: the watchdog counts resident pages, and a forked kernel's resident set
  includes the pages it inherited, as a fresh kernel that imported the same modules
  would. A notebook that never imports TensorFlow therefore shows a larger peak.
* Preloaded modules cannot be shadowed by a file in the submission (a ``numpy.py``
  beside the notebook). When the submission holds such a file or folder, that
  submission gets a fresh kernel instead, so it fails exactly as it would have.

Why forking after ``import tensorflow`` is safe here: no TensorFlow op runs in the
zygote, so no eager context, device, session or thread pool exists when it forks;
the only extra threads are OpenBLAS's, which OpenBLAS stops before ``fork`` and
restarts in the child (``pthread_atfork``); zmq and asyncio objects are created by
IPKernelApp after the fork. It is never done with a GPU context: ``--device gpu``, GPU
devices, ``--sandbox off`` or ``prepared_kernels = false`` in ``assignment.toml``
all give fresh kernels, and each result records the provider it got in
``SubmissionResult.kernel_provider``.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing.util
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.provisioning import LocalProvisioner

from . import data
from .errors import ConfigurationError, SandboxUnavailable
from .sandbox import SANDBOX_HOME, SANDBOX_UID, SANDBOX_WORK, SandboxSpec, kill_tree

PROVIDERS = ("fresh", "prepared")
HEAVY_MODULES = ("numpy", "pandas", "tensorflow", "keras", "IPython", "ipykernel.kernelapp",
                 "ipykernel.ipkernel", "ipykernel.zmqshell")
ZYGOTE_START_TIMEOUT_S = 300.0
SPAWN_TIMEOUT_S = 60.0


def default_provider() -> str:
    """``$GRADER_KERNEL_PROVIDER`` or ``prepared`` (which gives fresh kernels wherever
    forking is not safe: see :func:`provider_for`)."""
    return os.environ.get("GRADER_KERNEL_PROVIDER", "") or "prepared"


def provider_for(requested: str, mode: str, device: str, gpu_devices: tuple, assignment) -> str:
    """The provider a submission gets: ``prepared`` only where forking is safe."""
    if requested not in PROVIDERS:
        raise ConfigurationError(f"unknown kernel provider {requested!r}; "
                                 f"choose one of {', '.join(PROVIDERS)}")
    if requested == "fresh" or mode != "bubblewrap" or device == "gpu" or gpu_devices:
        return "fresh"
    if python_under_scratch():
        return "fresh"
    return "prepared" if getattr(assignment, "prepared_kernels", True) else "fresh"


def python_under_scratch() -> bool:
    """True when the Python installation lives under the temporary folder (a venv in /tmp,
    say). Each forked kernel covers the folders holding scratch and io folders with an
    empty tmpfs, which would hide such an interpreter: fresh kernels are used instead."""
    from .sandbox import python_prefixes

    roots = {os.path.realpath(tempfile.gettempdir()), "/tmp"}
    return any(os.path.realpath(prefix) == root or
               os.path.realpath(prefix).startswith(root + os.sep)
               for prefix in python_prefixes() for root in roots)


class Zygote:
    """A zygote process in its bubblewrap sandbox, and the socket to ask it for kernels."""

    def __init__(self, spec: SandboxSpec, heavy: tuple[str, ...]):
        self.owner, self.key = os.getpid(), self.key_for(spec, heavy)
        self.staging = {str(host): "/opt/grader-data/"
                        + hashlib.sha256(str(host).encode()).hexdigest()[:12]
                        for host, _ in spec.data_mounts}
        # The zygote's own empty folders, beside the io folders so that their parent exists
        # in its view (each kernel covers that parent with a fresh tmpfs).
        self.own = Path(tempfile.mkdtemp(prefix="zygote-", dir=spec.io_dir.parent))
        (self.own / "work").mkdir()
        zygote_spec = replace(spec, work_dir=self.own / "work", io_dir=self.own,
                              data_mounts=(), extra_env=_interpreter_env(spec))
        args = zygote_spec._bubblewrap_args()
        self.shared = sorted({str(spec.work_dir.parent.parent), str(spec.io_dir.parent)})
        for path in self.shared:  # where the submissions' folders are made (see spawn)
            args += ["--bind", path, path]
        for host, staged in self.staging.items():
            args += ["--ro-bind", host, staged]
        for cap in ("CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SETPCAP"):
            args += ["--cap-add", cap]
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config = {"heavy": list(heavy), "home": SANDBOX_HOME, "work": SANDBOX_WORK,
                  "fd": theirs.fileno(), "shared": self.shared, "uid": SANDBOX_UID}
        argv = ["prlimit", "--nofile=1024", "--core=0", "--", *args, "--",
                sys.executable, "-m", "grader.zygote", json.dumps(config)]
        # The zygote's own output (TensorFlow's import-time logs) goes to a log file, never to
        # the grader's terminal: no descriptor of the grader's is open in its sandbox.
        self.log_path = self.own / "zygote.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it; closed below
        try:
            self.process = subprocess.Popen(argv, env=zygote_spec.environment(),
                                            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log, start_new_session=True)
        finally:
            theirs.close()
            log.close()
        ready = self._receive(ZYGOTE_START_TIMEOUT_S)
        if not ready.get("ready"):
            self.stop()
            raise SandboxUnavailable(f"the kernel zygote did not start: {ready}")
        self.preloaded = frozenset(ready["modules"])
        self.failed = ready.get("failed", {})

    @staticmethod
    def key_for(spec: SandboxSpec, heavy: tuple[str, ...]) -> tuple:
        return (str(spec.io_dir.parent), str(spec.work_dir.parent.parent),
                tuple(sorted(str(h) for h, _ in spec.data_mounts)),
                heavy, tuple(sorted(_interpreter_env(spec).items())))

    def alive(self) -> bool:
        return self.process.poll() is None and self.channel.fileno() >= 0

    def _receive(self, timeout: float) -> dict:
        if not select.select([self.channel], [], [], timeout)[0]:
            return {"error": f"no answer from the zygote in {timeout:.0f} s", "late": True}
        message = self.channel.recv(1 << 20)
        if not message:
            return {"error": f"the zygote exited (status {self.process.poll()})"}
        return json.loads(message)

    def shadowed(self, work: Path) -> list[str]:
        """Files of the submission that would shadow a module the zygote already imported."""
        names = []
        for item in work.iterdir():
            stem = item.name.split(".")[0]
            if stem in self.preloaded and (item.is_dir() or item.suffix in (".py", ".pyc", ".so")):
                names.append(item.name)
        return names

    def spawn(self, spec: SandboxSpec, connection_file: str, env: dict[str, str],
              log_fd: int) -> psutil.Process:
        """A new kernel for one submission; its init's process, as this host sees it.
        ``log_fd``: the kernel's log file, sent to the zygote with the request (SCM_RIGHTS):
        the kernel's standard output and error. One request at a time: threads of one
        process (Dask workers, the tests' graders) share the zygote and its socket."""
        with _LOCK:
            return self._spawn(spec, connection_file, env, log_fd)

    def _spawn(self, spec: SandboxSpec, connection_file: str, env: dict[str, str],
               log_fd: int) -> psutil.Process:
        request = {"work": str(spec.work_dir), "io": str(spec.io_dir),
                   "connection_file": connection_file, "env": env,
                   "fsize": spec.max_file_mb * 2**20,
                   "mounts": [[self.staging[str(host)], inside] for host, inside in spec.data_mounts]}
        socket.send_fds(self.channel, [json.dumps(request).encode()], [log_fd])
        reply = self._receive(SPAWN_TIMEOUT_S)
        if reply.get("late"):
            self.stop()  # out of step with its answers: the next launch starts a new one
        if "pid" not in reply:
            raise RuntimeError(f"the zygote could not start a kernel: {reply.get('error')}")
        return self._host_process(int(reply["pid"]))

    def _host_process(self, inner_pid: int) -> psutil.Process:
        for proc in psutil.Process(self.process.pid).children(recursive=True):
            try:
                with open(f"/proc/{proc.pid}/status") as status:
                    nspid = next(line.split()[1:] for line in status if line.startswith("NSpid:"))
            except (OSError, StopIteration):
                continue
            if len(nspid) >= 2 and int(nspid[1]) == inner_pid:
                return proc
        raise RuntimeError(f"the zygote's kernel {inner_pid} is not among its processes")

    def stop(self) -> None:
        if self.owner != os.getpid():
            return  # a forked copy of the object: the zygote belongs to the parent
        self.channel.close()
        kill_tree(self.process.pid)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.own, ignore_errors=True)


class _Current:
    zygote: Zygote | None = None


_LOCK = threading.RLock()  # the zygote and its socket, between threads of one process


def zygote_for(spec: SandboxSpec, heavy: tuple[str, ...]) -> Zygote:
    """This worker's zygote for these settings, started (or restarted) when needed."""
    with _LOCK:
        return _zygote_for(spec, heavy)


def _zygote_for(spec: SandboxSpec, heavy: tuple[str, ...]) -> Zygote:
    current = _Current.zygote
    if current is not None and current.owner != os.getpid():
        current = _Current.zygote = None  # inherited through fork: the parent's, not ours
    if current is not None and (current.key != Zygote.key_for(spec, heavy)
                                or not current.alive()):
        current.stop()
        current = _Current.zygote = None
    if current is None:
        current = _Current.zygote = Zygote(spec, heavy)
        # Stopped when this process exits: atexit in the main process, and multiprocessing
        # runs these finalizers in its worker processes too (where atexit does not run).
        multiprocessing.util.Finalize(current, current.stop, exitpriority=100)
    return current


def shadowed_by(work: Path) -> list[str]:
    """The files in ``work`` that would shadow a module this process's zygote preloaded."""
    current = _Current.zygote
    if current is None or current.owner != os.getpid():
        return []
    return current.shadowed(work)


def stop_zygote() -> None:
    """Stop this process's zygote, if it has one (it is restarted when needed)."""
    current, _Current.zygote = _Current.zygote, None
    if current is not None:
        current.stop()


def _interpreter_env(spec: SandboxSpec) -> dict[str, str]:
    """Variables read when the interpreter starts: the zygote must have them itself."""
    return {k: v for k, v in spec.extra_env.items() if k.startswith("PYTHON")}


class ForkedKernel:
    """A Popen-like handle on a forked kernel's init (the zygote, not we, is its parent)."""

    stdin = stdout = stderr = None

    def __init__(self, process: psutil.Process):
        self._process, self.pid, self.returncode = process, process.pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                if self._process.status() == psutil.STATUS_ZOMBIE:
                    self.returncode = -signal.SIGKILL
            except psutil.NoSuchProcess:
                self.returncode = -signal.SIGKILL  # the zygote reaped it; its status is lost
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("kernel", timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                self._process.send_signal(signum)
            except psutil.NoSuchProcess:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class PreparedProvisioner(LocalProvisioner):
    """Launches the kernel by asking the worker's zygote for a fork instead of Popen."""

    async def launch_kernel(self, cmd: list[str], **kwargs):
        km = self.parent
        zygote = zygote_for(km.spec, km.heavy_modules)
        shadowing = zygote.shadowed(km.spec.work_dir)
        if shadowing:  # would not shadow the preloaded module: a fresh kernel, exactly
            km.kernel_provider = "fresh"
            return await super().launch_kernel(cmd, **kwargs)
        log = kwargs.get("stdout")
        if log is None or not hasattr(log, "fileno"):
            raise RuntimeError("a prepared kernel needs a log file for its output")
        process = zygote.spawn(km.spec, km.connection_file, dict(kwargs.get("env") or {}),
                               log.fileno())
        self.process = ForkedKernel(process)
        self.pid = self.pgid = process.pid  # the init called setsid()
        self.cwd = kwargs.get("cwd")
        km.kernel_provider = "prepared"
        return self.connection_info


def prepared_kernel_manager(base: type, spec: SandboxSpec, heavy: tuple[str, ...], **kwargs):
    """An instance of ``base`` (a sandboxed kernel manager class) that uses the zygote."""

    class PreparedKernelManager(base):
        async def _async_pre_start_kernel(self, **kw):
            if self.provisioner is None:
                self.kernel_id = self.kernel_id or kw.pop("kernel_id", None) or _new_id()
                self.provisioner = PreparedProvisioner(kernel_id=self.kernel_id,
                                                       kernel_spec=self.kernel_spec, parent=self)
            return await super()._async_pre_start_kernel(**kw)

    km = PreparedKernelManager(**kwargs)
    km.configure(spec)
    km.spec, km.kernel_provider = spec, "prepared"
    km.heavy_modules = tuple(dict.fromkeys((*HEAVY_MODULES, *heavy)))
    return km


def _new_id() -> str:
    import uuid

    return str(uuid.uuid4())


# -- one sandboxed kernel, fresh or forked: what the executor, the clean room and the clean
# kernels start, use for one submission, and remove ----------------------------------------
class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel starts inside the sandbox, over IPC sockets."""

    def configure(self, spec: SandboxSpec) -> None:
        # -P (Python 3.11+): `-m` would look in the working directory, which holds the
        # submission's files, first: a submitted `ipykernel_launcher.py` would run before the
        # grader's probe is installed. IPython adds the folder back, after the standard
        # library, once the kernel is up, as in any notebook.
        safe_path = ["-P"] if sys.version_info >= (3, 11) else []
        kernel = [sys.executable, *safe_path, "-m", "ipykernel_launcher", "-f",
                  "{connection_file}"]
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

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        """Launch with the seccomp program on a descriptor of its own, which bubblewrap
        reads (``--seccomp FD``); the descriptor is closed here once the process started."""
        from . import seccomp
        from .sandbox import SECCOMP_FD_FIELD

        fd = seccomp.program_fd()
        try:
            kernel_cmd = [arg.replace(SECCOMP_FD_FIELD, str(fd)) for arg in kernel_cmd]
            await super()._async_launch_kernel(kernel_cmd, pass_fds=(fd,), **kw)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class KernelSetup:
    """Everything a kernel's sandbox depends on except the submission itself. A kernel
    started ahead (:class:`grader.executor._Spare`) is used only for a submission with the same setup."""

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
    def of(cls, assignment, options, mode: str,
           datasets: dict[str, Path], provider: str) -> KernelSetup:
        limits = options.limits or assignment.limits
        return cls(mode, provider, tuple(sorted(datasets.items())), limits.memory_mb,
                   limits.max_processes, limits.max_file_mb, tuple(options.gpu_devices),
                   tuple(options.kernel_env), tuple(assignment.heavy_modules),
                   options.scratch_root)


class Kernel:
    """One sandboxed kernel and its scratch folder: used for one submission, then removed."""

    def __init__(self, setup: KernelSetup):
        self.setup = setup
        self.was_spare = False  # started ahead, while the previous submission ran
        self.log = None
        self.scratch = Path(tempfile.mkdtemp(prefix="grader-", dir=setup.scratch_root)).resolve()
        self.work, self.io_dir, mounts = prepare_scratch(self.scratch, setup.mode,
                                                          dict(setup.datasets))
        self.spec = SandboxSpec(mode=setup.mode, work_dir=self.work, io_dir=self.io_dir,
                                data_mounts=mounts, memory_mb=setup.memory_mb,
                                max_processes=setup.max_processes, max_file_mb=setup.max_file_mb,
                                gpu_devices=setup.gpu_devices, extra_env=dict(setup.kernel_env))
        connection = dict(transport="ipc", ip=str(self.io_dir / "kernel"),
                          connection_file=str(self.io_dir / "kernel.json"))
        if setup.provider == "prepared":
            self.km = prepared_kernel_manager(SandboxedKernelManager, self.spec,
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
        # Its stdin is /dev/null, not a pipe of the grader's; a forked kernel gets the log's
        # descriptor through the zygote's socket (grader.kernels.Zygote.spawn).
        await self.km.start_kernel(extra_arguments=["--HistoryManager.hist_file=:memory:"],
                                   env=self.spec.environment(), cwd=str(self.work),
                                   stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

    @property
    def process(self):
        return getattr(getattr(self.km, "provisioner", None), "process", None)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def shadows_preloaded_modules(self) -> bool:
        """A kernel forked from the zygote cannot see a submission's ``numpy.py``; such a
        submission needs a fresh kernel (see :mod:`grader.kernels`)."""
        return getattr(self.km, "kernel_provider", "") == "prepared" and \
            bool(shadowed_by(self.work))

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


def prepare_scratch(scratch: Path, mode: str, datasets: dict[str, Path]) -> tuple[Path, Path, tuple]:
    """The kernel's folders under ``scratch``: ``work`` (its working directory, where the
    submission is copied), ``home``, and ``io`` (a link to a short path for its sockets)."""
    work, io_dir, home = scratch / "work", scratch / "io", scratch / "home"
    for folder in (work, home):
        folder.mkdir()
    io_dir.symlink_to(short_io_dir(), target_is_directory=True)
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


def short_io_dir() -> Path:
    """A folder for the kernel's IPC sockets and probes with a path short enough for them:
    under the grader's cache, else the system tmp (OUT may be nested deep)."""
    for parent in (data.cache_root() / "io", Path(tempfile.gettempdir())):
        if len(str(parent)) + 20 <= MAX_IO_DIR_CHARS:
            parent.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix="io-", dir=parent))
    return Path(tempfile.mkdtemp(prefix="gio-", dir="/tmp"))
