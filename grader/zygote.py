"""The zygote: the sandbox-side half of the prepared kernel provider (see :mod:`grader.kernels`).

Run as ``python -m grader.zygote CONFIG`` inside a worker's bubblewrap sandbox, with
``CAP_SYS_ADMIN``, ``CAP_NET_ADMIN`` and ``CAP_SETPCAP`` kept. It imports the heavy
modules once, then answers requests on a Unix socket (one JSON message each: the
submission's work and io folders, environment, limits, data mounts; the kernel's log file
travels with it as a descriptor, SCM_RIGHTS). Its sandbox binds
the folders that hold the workers' scratch and io folders (bind mounts cannot be made
from another mount namespace's file descriptors), so the zygote, which runs only this
code, can reach them; each kernel covers them before any student code runs. For each
request it forks a kernel::

    zygote ── fork ──> setup child: chdir("/"), unshare(mount, PID, IPC, UTS, network
                       namespaces), a new session keyring, fresh mounts (below), chdir to
                       an empty read-only folder, then fork, report the pid, exit
                          └─ fork ──> init: PID 1 of the new PID namespace; mounts /proc,
                                      forks the kernel; output to the kernel's log, other
                                      descriptors closed, every capability dropped, seccomp,
                                      execs a small fresh Python (not dumpable) that only
                                      reaps children
                                        └─ fork ──> kernel: output to its log, inherited
                                                    descriptors replaced by /dev/null, a user
                                                    namespace where it is uid 1000, every
                                                    capability dropped, no_new_privs, seccomp,
                                                    not dumpable, rlimits, the submission's
                                                    environment, IPKernelApp

Mounts of each kernel (in its own mount namespace, nothing propagates back): the root,
``/dev`` and everything the zygote sees read-only; a fresh tmpfs on ``/tmp``,
``/dev/shm`` and the home; the submission's scratch copy bound at the working
directory; the data cache bound read-only; the folder that holds io folders covered by
an empty read-only tmpfs, with only this submission's io folder bound back at its host
path (the scratch folders' parent likewise, so no other submission's copy is seen); a new ``/proc`` for the new PID namespace with ``/proc/sys`` and friends read-only.

This module imports only the standard library at the top: it is the zygote's ``__main__``.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import random
import resource
import select
import signal
import socket
import struct
import sys

from grader import seccomp

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
PR_SET_CHILD_SUBREAPER, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 36, 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
PR_SET_DUMPABLE = 4
CLONE_NEWUSER = 0x10000000
KEYCTL_JOIN_SESSION_KEYRING = 1
LINUX_CAPABILITY_VERSION_3 = 0x20080522
# Where each kernel's init waits, and where the setup process stands while it mounts: an
# empty folder of the read-only root, never the zygote's working directory (which every
# kernel would otherwise share through /proc/1/cwd).
EMPTY = "/.grader-empty"

# The init of each kernel's PID namespace: a fresh, small Python (not a copy of the zygote,
# whose inherited pages would count against the submission's memory limit).
INIT = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: /proc/1 is not the kernel's to open
signal.signal(signal.SIGINT, signal.SIG_DFL)
kernel, code = int(sys.argv[1]), 1
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    if pid == kernel:
        code = os.waitstatus_to_exitcode(status)
        break
sys.exit(code if code >= 0 else 128 - code)
"""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    _check(_libc.mount(source.encode() if source else None, target.encode(),
                       fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {target}")


def bind(source: str, target: str, read_only: bool = False) -> None:
    mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def tmpfs(target: str, mode: str = "755") -> None:
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode}")


def drop_privileges() -> None:
    """No capability in any set, none to gain again (bounding set empty, no_new_privs)."""
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last + 1):
        _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2 words, all zero
    _check(_libc.capset(header, data), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    with open("/proc/self/status") as status:
        caps = {line.split(":")[0]: int(line.split()[1], 16) for line in status
                if line.startswith("Cap")}
    if any(caps.values()):
        raise RuntimeError(f"capabilities left after dropping them: {caps}")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        import fcntl

        flags = struct.unpack("16sh", fcntl.ioctl(sock, 0x8913, struct.pack("16sh", b"lo", 0)))[1]
        fcntl.ioctl(sock, 0x8914, struct.pack("16sh", b"lo", flags | 1))  # IFF_UP


def _inside(path: str, config: dict) -> str:
    return path.replace("~", config["home"], 1).replace("./", config["work"] + "/", 1)


def setup_namespaces(request: dict, config: dict) -> None:
    """In the setup child: new namespaces and this submission's view of the files."""
    os.chdir("/")  # out of the zygote's folder before anything else
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
                         | CLONE_NEWNET), "unshare")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # A session keyring of its own (the zygote's is never seen); the seccomp filter then
    # refuses every key system call anyway.
    if _libc.syscall(_keyctl_number(), KEYCTL_JOIN_SESSION_KEYRING, None) < 0:
        _check(-1, "join a new session keyring")
    os.makedirs(EMPTY, exist_ok=True)  # on the zygote's root, before it is made read-only
    socket.sethostname("sandbox")
    _loopback_up()
    home, work, io_dir = config["home"], config["work"], request["io"]
    tmpfs(home)
    os.makedirs(work)
    bind(request["work"], work)
    hold = f"{home}/.grader-io"
    os.mkdir(hold)
    bind(io_dir, hold)
    for staged, target in request["mounts"]:
        target = _inside(target, config)
        os.makedirs(target, exist_ok=True)
        bind(staged, target, read_only=True)
    # Hide every other submission's folders: the folders holding scratch and io folders
    # get an empty tmpfs each (under /tmp, the new /tmp does it).
    covered = [p for p in config["shared"] if not (p + "/").startswith("/tmp/")]
    for path in sorted(covered, key=len):
        tmpfs(path)
    tmpfs("/tmp", "1777")
    os.makedirs(io_dir)
    mount(hold, io_dir, None, MS_MOVE)
    os.rmdir(hold)
    for path in covered:
        mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    mount(None, "/dev", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
    if os.path.isdir("/dev/shm"):
        tmpfs("/dev/shm", "1777")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(EMPTY)


def _keyctl_number() -> int:
    import platform

    return seccomp.REFUSED["keyctl"][0 if platform.machine() == "x86_64" else 1]


def mount_proc() -> None:
    """In the namespace's init: a /proc that shows this PID namespace only."""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for sub in ("sys", "sysrq-trigger", "irq", "bus"):
        if os.path.exists(f"/proc/{sub}"):
            bind(f"/proc/{sub}", f"/proc/{sub}", read_only=True)


def enter_user_namespace(uid: int) -> None:
    """A user namespace of the kernel's own in which it is ``uid``, not root (the user it
    maps to outside is the zygote's). Files the sandbox gave it (its home, working and io
    folders) are owned by that user in its view; mounts made outside it stay locked."""
    try:
        os.setgroups([])  # no supplementary group survives (setgroups is denied inside)
    except PermissionError:  # denied in the zygote's namespace already: only its own gid
        if set(os.getgroups()) - {os.getegid()}:
            raise
    outside = os.geteuid(), os.getegid()  # inside, unmapped ids read as 65534 until mapped
    _check(_libc.unshare(CLONE_NEWUSER), "unshare user namespace")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {outside[0]} 1"),
                       ("gid_map", f"{uid} {outside[1]} 1")):
        try:
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        except OSError as error:
            raise OSError(error.errno, f"write {text!r} to /proc/self/{name}: "
                          f"{os.strerror(error.errno)}") from None


def isolate_descriptors(log_fd: int) -> None:
    """Standard input from /dev/null, standard output and error to the kernel's own log,
    and nothing else of the zygote's: every other descriptor is replaced by /dev/null
    (not closed, so that an object of the zygote's still holding its number can never
    close a descriptor the kernel opens later)."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != devnull:
            try:
                os.dup2(devnull, fd)
            except OSError:
                pass  # the descriptor of the listing itself, closed already
    os.close(devnull)


def become_kernel(request: dict, config: dict, log_fd: int) -> None:
    """In the kernel process: the submission's limits and environment, then IPKernelApp."""
    isolate_descriptors(log_fd)
    enter_user_namespace(int(config["uid"]))
    drop_privileges()
    seccomp.install()
    _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "not dumpable")
    fsize = int(request["fsize"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.chdir(config["work"])
    os.environ.clear()
    os.environ.update(request["env"])
    importlib.invalidate_caches()  # the working directory is a new folder now
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # the legacy global generator, seeded in the zygote
    from ipykernel.kernelapp import IPKernelApp

    sys.argv = [sys.argv[0], "-f", request["connection_file"]]
    IPKernelApp.launch_instance(argv=sys.argv[1:] + ["--IPKernelApp.parent_handle=1"])


def spawn(request: dict, config: dict, protocol_fd: int, log_fd: int) -> int:
    """Fork a kernel for ``request``; the pid (in the zygote's namespace) of its init.
    ``log_fd``: the kernel's log file (its and its init's standard output and error)."""
    read_end, write_end = os.pipe()
    setup = os.fork()
    if setup == 0:
        code = 1
        try:
            os.close(read_end)
            os.close(protocol_fd)
            setup_namespaces(request, config)
            init = os.fork()
            if init == 0:
                os.close(write_end)  # the zygote reads this pipe to its end
                _init_and_kernel(request, config, log_fd)
            os.write(write_end, json.dumps({"pid": init}).encode())
            code = 0
        except BaseException as error:  # noqa: BLE001 - reported to the grader, then exit
            os.write(write_end, json.dumps({"error": f"{type(error).__name__}: {error}"})
                     .encode())
        finally:
            os._exit(code)
    os.close(write_end)
    answer = b""
    while chunk := os.read(read_end, 65536):
        answer += chunk
    os.close(read_end)
    os.waitpid(setup, 0)
    reply = json.loads(answer or b'{"error": "the setup process died"}')
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return int(reply["pid"])


def _init_and_kernel(request: dict, config: dict, log_fd: int) -> None:
    try:
        os.setsid()
        mount_proc()
        kernel = os.fork()
        if kernel == 0:
            code = 0
            try:
                become_kernel(request, config, log_fd)
            except BaseException:  # noqa: BLE001 - shown on stderr, the kernel is gone
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        isolate_descriptors(log_fd)
        os.closerange(3, 65536)  # it execs next: no object of the zygote's is left to care
        drop_privileges()
        seccomp.install()
        os.execv(sys.executable, [sys.executable, "-S", "-E", "-c", INIT, str(kernel)])
    finally:
        os._exit(1)


def preload(names: list[str]) -> dict[str, str]:
    failed = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - a module that fails is left to the kernel
            failed[name] = f"{type(error).__name__}: {error}"
    return failed


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> None:
    config = json.loads(sys.argv[1])
    channel = socket.socket(fileno=int(config["fd"]))  # requests and answers; fds travel here
    failed = preload(config["heavy"])
    _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "subreaper")

    def send(message: dict) -> None:
        channel.send(json.dumps(message).encode())

    send({"ready": True, "failed": failed, "threads": len(os.listdir("/proc/self/task")),
          "modules": sorted({name.split(".")[0] for name in sys.modules})})
    while True:
        _reap()
        if not select.select([channel], [], [], 0.5)[0]:
            continue
        # SOCK_SEQPACKET: one whole request, with the kernel's log file as a descriptor.
        message, fds, _, _ = socket.recv_fds(channel, 1 << 20, 4)
        if not message:
            return
        try:
            if len(fds) != 1:
                raise RuntimeError(f"expected the kernel's log descriptor, got {len(fds)}")
            send({"pid": spawn(json.loads(message), config, channel.fileno(), fds[0])})
        except Exception as error:  # noqa: BLE001 - reported to the grader
            send({"error": f"{type(error).__name__}: {error}"})
        finally:
            for fd in fds:
                os.close(fd)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    main()
