"""Isolation that holds: what a hostile kernel must not reach, under both kernel providers.

A hostile notebook reads ``/proc/self/mountinfo`` and tries to make every mount it finds
writable and to write into it, writes into every host path it can guess (the course
folder, the grader package, OUT, the data cache), leaves its solution in ``/proc/1/cwd``,
prints fake progress lines into ``/proc/1/fd/1`` and ``/proc/1/fd/2``, hands a key over
through the keyring and tries the system calls the seccomp filter refuses. A follower
notebook, graded next by the SAME worker (``-j 1``, so the same zygote with prepared
kernels), must find nothing of it. The batch runs through the real CLI in a subprocess so
that the grader's own stdout and stderr can be read.

Fast tests of the pieces (the seccomp program, the data cache's manifest) come first.
"""

import ctypes
import errno
import hashlib
import json
import os
import platform
import stat
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import grader
from grader import data
from grader.errors import DataUnavailable
from grader.kernels import python_under_scratch

from conftest import REPO, TOY_COURSE, requires_bubblewrap

ARM = platform.machine() == "aarch64"
# Written out here rather than taken from grader.seccomp: a second source for its numbers.
NR = {name: numbers[1 if ARM else 0] for name, numbers in {
    "add_key": (248, 217), "request_key": (249, 218), "keyctl": (250, 219),
    "ptrace": (101, 117), "setns": (308, 268), "bpf": (321, 280), "clone": (56, 220)}.items()}
MARKER = "ISOLATION-FAKE-PROGRESS 100%"


# --- the seccomp program, loaded into a forked child of the test process ------------------

def _in_filtered_child(body) -> dict:
    """Run ``body()`` in a forked child under the filter; its dict comes back as JSON."""
    from grader import seccomp

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            seccomp.install()
            os.write(write_end, json.dumps(body()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(answer)


def _errno_of(call) -> int:
    ctypes.set_errno(0)
    return 0 if call() >= 0 else ctypes.get_errno()


def test_seccomp_refuses_the_calls_no_notebook_needs_with_eperm():
    def body():
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
        return {
            "unshare": _errno_of(lambda: libc.unshare(0x10000000)),  # CLONE_NEWUSER
            "add_key": _errno_of(lambda: syscall(NR["add_key"], b"user", b"k", b"v", 1, -3)),
            "request_key": _errno_of(lambda: syscall(NR["request_key"], b"user", b"k", None, 0)),
            "keyctl": _errno_of(lambda: syscall(NR["keyctl"], 0, -3, 0)),
            "ptrace": _errno_of(lambda: syscall(NR["ptrace"], 0, 0, 0, 0)),  # TRACEME
            "mount": _errno_of(lambda: libc.mount(None, b"/", None, 32 | 4096, None)),
            "setns": _errno_of(lambda: syscall(NR["setns"], 0, 0)),
            "bpf": _errno_of(lambda: syscall(NR["bpf"], 0, None, 0)),
            "clone_newuser": _errno_of(lambda: syscall(NR["clone"], 0x10000000 | 17, 0, 0, 0, 0)),
        }

    refused = _in_filtered_child(body)
    assert refused == {name: errno.EPERM for name in refused}, refused


def test_seccomp_leaves_threads_processes_and_files_working():
    def body():
        seen = []
        thread = threading.Thread(target=seen.append, args=("thread",))  # clone3 -> clone
        thread.start()
        thread.join()
        echo = subprocess.run(["echo", "child"], capture_output=True, text=True).stdout.strip()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        return {"thread": seen, "echo": echo, "fork": os.waitstatus_to_exitcode(
            os.waitpid(pid, 0)[1])}

    assert _in_filtered_child(body) == {"thread": ["thread"], "echo": "child", "fork": 7}


def test_seccomp_program_refuses_other_architectures_and_x32():
    from grader import seccomp

    code = seccomp.program()
    insns = [code[i:i + 8] for i in range(0, len(code), 8)]
    assert len(code) % 8 == 0 and len(insns) < 4096
    # The architecture is checked first, and an unknown one is refused, not allowed.
    import struct

    first = [struct.unpack("=HBBI", i) for i in insns[:4]]
    assert first[0] == (0x20, 0, 0, 4)  # load seccomp_data.arch
    assert {first[1][3], first[2][3]} == {seccomp.AUDIT_ARCH_X86_64, seccomp.AUDIT_ARCH_AARCH64}
    assert first[3] == (0x06, 0, 0, 0x00050000 | errno.EPERM)
    assert (0x35, seccomp.X32_SYSCALL_BIT) in {struct.unpack("=HBBI", i)[::3] for i in insns}


# --- the data cache: verified against its manifest, rebuilt when it does not match --------

@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_manifest_records_every_built_file(fresh_cache):
    npz = data.mnist_npz()
    assert data.read_manifest() == {"mnist-public/mnist.npz": data.sha256_of(npz)}
    assert data.untrusted_files() == []


def test_tampered_cache_is_found_and_rebuilt(fresh_cache, tmp_path):
    npz = data.mnist_npz()
    recorded = data.read_manifest()["mnist-public/mnist.npz"]
    with np.load(npz) as original:
        x_train = original["x_train"].copy()
    # From outside the grader: the file is changed, one is planted beside it, and a link
    # to a file elsewhere (never to be followed, neither read nor deleted through).
    np.savez_compressed(npz, x_train=np.zeros((4000, 28, 28), np.uint8), y_train=np.zeros(4000),
                        x_test=np.zeros((1000, 28, 28), np.uint8), y_test=np.zeros(1000))
    (npz.parent / "planted.py").write_text("print('planted')\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("not the cache's")
    (npz.parent / "link.npz").symlink_to(outside)
    assert set(data.untrusted_files()) == {npz, npz.parent / "planted.py", npz.parent / "link.npz"}

    removed = data.verify_cache(("mnist",))

    assert set(removed) == {npz, npz.parent / "planted.py", npz.parent / "link.npz"}
    assert sorted(p.name for p in npz.parent.iterdir()) == ["mnist.npz"]
    assert outside.read_text() == "not the cache's"
    with np.load(npz) as rebuilt:
        assert np.array_equal(rebuilt["x_train"], x_train)
    manifest = data.read_manifest()
    assert manifest["mnist-public/mnist.npz"] == data.sha256_of(npz)
    assert recorded  # the first digest existed; the new one matches the rebuilt file
    assert data.untrusted_files() == []


def test_a_cache_without_manifest_is_not_trusted(fresh_cache):
    npz = data.mnist_npz()
    (data.data_root() / data.MANIFEST).unlink()
    npz.write_bytes(b"garbage")  # it exists: existence alone used to be enough
    assert data.verify_cache(("mnist",)) == [npz]
    with np.load(npz) as rebuilt:
        assert rebuilt["x_train"].shape == (4000, 28, 28)


def test_tampered_housing_is_rebuilt_from_the_data_dir_or_refused(fresh_cache, tmp_path,
                                                                  monkeypatch):
    source = REPO.parent / "shared" / "data" / "housing.csv"
    if not source.is_file():
        pytest.skip(f"needs the real housing.csv at {source}")
    monkeypatch.delenv("GRADER_DATA", raising=False)
    cached = data.housing_csv(source.parent)
    cached.write_text("longitude,latitude\n0,0\n")
    assert data.verify_cache(("housing",), source.parent) == [cached]
    assert data.sha256_of(cached) == data.HOUSING_SHA256
    cached.write_text("changed again\n")
    with pytest.raises(DataUnavailable, match="housing.csv is not available"):
        data.verify_cache(("housing",), tmp_path / "nowhere")
    assert not cached.exists()  # the bad copy is gone, never mounted again


# --- hostile notebooks through the real CLI, both providers --------------------------------

TOY_ANSWER = ("import numpy as np\n\ndef square(x):\n    return np.asarray(x) * np.asarray(x)\n\n"
              "data = np.arange(10.0)\nmean_of_squares = square(data).mean()\n")

HOSTILE = r'''
import ctypes, errno, json, os, platform
libc = ctypes.CDLL(None, use_errno=True)
ARM = platform.machine() == "aarch64"
NR = dict(add_key=217 if ARM else 248, request_key=218 if ARM else 249,
          keyctl=219 if ARM else 250, ptrace=117 if ARM else 101)
report = {"uid": os.getuid(), "gid": os.getgid(), "remounted": [], "created": [],
          "opened_for_write": []}
ALLOWED = ("/tmp", "/dev/shm", "/home/student", "/home/student/work", IO_DIR)

def err(result):
    return 0 if result >= 0 else ctypes.get_errno()

def own(folder):
    """A folder that is this kernel's alone: its private /tmp, or its own working folder
    (under bubblewrap, /proc/1 is the sandbox's init, which stands in it)."""
    try:
        seen = os.stat(folder)
    except OSError:
        return False
    mine = os.stat(os.getcwd())
    return (seen.st_dev, seen.st_ino) == (mine.st_dev, mine.st_ino) or \
        os.path.realpath(folder).startswith("/tmp/")

def try_create(folder):
    if own(folder):
        return
    path = os.path.join(folder, "isolation-pwned")
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        report["created"].append(path)
    except OSError:
        pass
    try:
        names = sorted(os.listdir(folder))[:5]
    except OSError:
        names = []
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not os.path.islink(path) and name != "isolation-pwned":
            try:  # opened, never written: nothing is harmed where this succeeds
                os.close(os.open(path, os.O_WRONLY))
                report["opened_for_write"].append(path)
            except OSError:
                pass

mounts = []
for line in open("/proc/self/mountinfo"):
    point = line.split()[4].replace("\\040", " ")
    if point.startswith("/proc") or point in ALLOWED or (FRESH and point == "/dev"):
        continue
    mounts.append(point)
report["mounts"] = mounts
for point in mounts:
    if err(libc.mount(None, point.encode(), None, 32 | 4096, None)) == 0:  # REMOUNT|BIND, rw
        report["remounted"].append(point)
    try_create(point)
for guess in GUESSES:
    try_create(guess)

# The solution left where every kernel of this zygote would find it.
try:
    with open("/proc/1/cwd/solution.py", "w") as f:
        f.write(ANSWER)
    report["left_solution"] = True
except OSError as error:
    report["left_solution"] = error.errno
# Fake progress into the terminal of whoever holds the init's stdout and stderr.
for fd in (1, 2):
    try:
        with open(f"/proc/1/fd/{fd}", "w") as f:
            f.write("\n" + MARKER + "\n")
    except OSError as error:
        pass
# The keyring hand-over, and the calls the filter refuses.
report["add_key_session"] = err(libc.syscall(NR["add_key"], b"user", b"isolation-leak",
                                             b"secret", 6, -3))
report["add_key_user"] = err(libc.syscall(NR["add_key"], b"user", b"isolation-leak",
                                          b"secret", 6, -4))
report["keyctl"] = err(libc.syscall(NR["keyctl"], 0, -3, 0))
report["unshare"] = err(libc.unshare(0x10000000))
report["ptrace"] = err(libc.syscall(NR["ptrace"], 0, 0, 0, 0))
print("ISOLATION-HOSTILE " + json.dumps(report))
'''

FOLLOWER = r'''
import ctypes, hashlib, json, os, platform
import numpy as np
libc = ctypes.CDLL(None, use_errno=True)
ARM = platform.machine() == "aarch64"
seen = {}
try:
    exec(open("/proc/1/cwd/solution.py").read())
    seen["solution"] = True
except OSError as error:
    seen["solution"] = error.errno
for name, keyring in (("session", -3), ("user", -4)):
    found = libc.syscall(219 if ARM else 250, 10, keyring, b"user", b"isolation-leak", 0)
    seen["keyctl_search_" + name] = found if found < 0 else "found"
found = libc.syscall(218 if ARM else 249, b"user", b"isolation-leak", None, 0)
seen["request_key"] = found if found < 0 else "found"
mnist = os.path.expanduser("~/.keras/datasets/mnist.npz")
seen["mnist_sha256"] = hashlib.sha256(open(mnist, "rb").read()).hexdigest()
try:
    with np.load(mnist) as f:
        seen["mnist_shape"] = list(f["x_train"].shape)
except Exception as error:
    seen["mnist_shape"] = repr(error)
seen["pwned"] = [os.path.join(p, "isolation-pwned") for p in ("/", "/usr", "/home/student")
                 if os.path.exists(os.path.join(p, "isolation-pwned"))]
print("ISOLATION-FOLLOWER " + json.dumps(seen))
'''


def _course_with_mnist(root: Path) -> Path:
    course = root / "course"
    shutil.copytree(TOY_COURSE, course)
    toml = course / "assignments" / "toy" / "assignment.toml"
    text = toml.read_text()
    toml.write_text(text.replace('version = "1"\n', 'version = "1"\ndatasets = ["mnist"]\n', 1))
    return course


def _report(executed: Path, tag: str) -> dict:
    """The notebook's JSON report line; empty when the notebook did not get that far (each
    test then fails on the claim it checks)."""
    if not executed.is_file():
        return {}
    for cell in nbformat.read(executed, as_version=4).cells:
        for output in cell.get("outputs", []):
            for line in str(output.get("text", "")).splitlines():
                if line.startswith(tag + " "):
                    return json.loads(line[len(tag) + 1:])
    return {}


@pytest.fixture(scope="module", params=["fresh", "prepared"])
def hostile_batch(request, tmp_path_factory):
    provider = request.param
    if provider == "prepared" and python_under_scratch():
        pytest.skip("Python lives under the temporary folder: prepared kernels fall back")
    root = tmp_path_factory.mktemp(f"isolation-{provider}")
    course, out, cache = _course_with_mnist(root), root / "out", root / "cache"
    submissions = root / "submissions"
    submissions.mkdir()
    env = {**os.environ, "GRADER_CACHE": str(cache), "PYTHONPATH": str(REPO),
           "GRADER_KERNEL_PROVIDER": provider}
    # The cache exists before the run, and is then tampered with from outside.
    subprocess.run([sys.executable, "-m", "grader.cli", "data"], env=env, check=True,
                   capture_output=True, timeout=300)
    npz = cache / "data" / "mnist-public" / "mnist.npz"
    npz.write_bytes(npz.read_bytes()[:-100] + b"\0" * 100)
    package = Path(grader.__file__).resolve().parent
    guesses = [str(course), str(course / "reference" / "toy"), str(package), str(out),
               str(cache), str(cache / "data"), str(npz.parent), "/opt/grader/grader",
               "/opt/grader-site", "/proc/1/cwd", "/proc/1/root", "/", "/usr",
               str(Path(sys.prefix).resolve())]
    # The io folder (its IPC sockets) is the kernel's to write; its path is known inside.
    io_dir = ("next((l.split()[4] for l in open('/proc/self/mountinfo') "
              "if '/io-' in l.split()[4]), '')")
    hostile = (f"IO_DIR = {io_dir}\nFRESH = {provider == 'fresh'}\nGUESSES = {guesses!r}\n"
               f"ANSWER = {TOY_ANSWER!r}\nMARKER = {MARKER!r}\n" + HOSTILE)
    for name, source in (("a_hostile", hostile), ("b_follower", FOLLOWER)):
        nb = new_notebook(cells=[new_code_cell(source)])
        (submissions / f"{name}.ipynb").write_text(nbformat.writes(nb))
    hostile_report: dict = {}
    try:
        run = subprocess.run(
            [sys.executable, "-m", "grader.cli", "--course", str(course), "run", str(submissions),
             "-a", "toy", "-o", str(out), "-j", "1", "--sandbox", "required", "--no-reports",
             "--kernel-provider", provider],
            env=env, capture_output=True, text=True, timeout=900)
        pwned = []
        for top in (course, out, cache, package):
            pwned += list(top.rglob("isolation-pwned"))
        for top in (Path("/usr"), Path(sys.prefix).resolve(), course / "reference" / "toy"):
            if (top / "isolation-pwned").exists():
                pwned.append(top / "isolation-pwned")
        results = {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*.json")} \
            if (out / "results").is_dir() else {}
        hostile_report = _report(out / "executed" / "a_hostile.ipynb", "ISOLATION-HOSTILE")
        yield {"run": run, "out": out, "cache": cache, "pwned": pwned, "npz": npz,
               "provider": provider, "results": results, "hostile": hostile_report,
               "follower": _report(out / "executed" / "b_follower.ipynb", "ISOLATION-FOLLOWER")}
    finally:
        # Where an attack succeeded (an unfixed grader), its files go: the ones the kernel
        # created at paths that are the same inside and out (/etc/..., the Python prefix).
        for created in hostile_report.get("created", []):
            if os.path.basename(created) == "isolation-pwned" and \
                    not created.startswith(("/tmp/", "/home/student", "/proc/")):
                Path(created).unlink(missing_ok=True)
        for top in (course, out, cache, package):
            for path in top.rglob("isolation-pwned"):
                path.unlink()
        for top in (Path("/usr"), Path(sys.prefix).resolve()):
            (top / "isolation-pwned").unlink(missing_ok=True)


@pytest.mark.slow
@requires_bubblewrap
def test_the_batch_ran_both_notebooks_on_one_worker(hostile_batch):
    run = hostile_batch["run"]
    assert run.returncode == 0, run.stderr[-3000:]
    results = hostile_batch["results"]
    assert {r["kernel_provider"] for r in results.values()} == {hostile_batch["provider"]}


@pytest.mark.slow
@requires_bubblewrap
def test_no_mount_can_be_made_writable_or_written(hostile_batch):
    hostile = hostile_batch["hostile"]
    assert hostile["mounts"], "the notebook found no mount to attack"
    assert hostile["remounted"] == []
    assert hostile["created"] == []
    assert hostile["opened_for_write"] == []
    assert hostile_batch["pwned"] == []  # as the host sees it: course, package, OUT, cache


@pytest.mark.slow
@requires_bubblewrap
def test_the_kernel_runs_as_an_unprivileged_user(hostile_batch):
    assert hostile_batch["hostile"]["uid"] != 0 and hostile_batch["hostile"]["gid"] != 0


@pytest.mark.slow
@requires_bubblewrap
def test_seccomp_refusals_inside_the_kernel(hostile_batch):
    hostile = hostile_batch["hostile"]
    refused = {k: hostile[k] for k in ("add_key_session", "add_key_user", "keyctl", "unshare",
                                       "ptrace")}
    assert refused == {k: errno.EPERM for k in refused}


@pytest.mark.slow
@requires_bubblewrap
def test_nothing_is_left_in_proc_1_cwd_for_the_next_kernel(hostile_batch):
    follower = hostile_batch["follower"]
    assert follower["solution"] is not True
    assert hostile_batch["results"]["b_follower"]["score"] == 0
    if hostile_batch["provider"] == "prepared":  # the init's folder is not the kernel's to open
        assert hostile_batch["hostile"]["left_solution"] in (errno.EACCES, errno.EPERM,
                                                             errno.EROFS, errno.ENOENT)


@pytest.mark.slow
@requires_bubblewrap
def test_no_key_is_handed_over_to_the_next_kernel(hostile_batch):
    follower = hostile_batch["follower"]
    for name in ("keyctl_search_session", "keyctl_search_user", "request_key"):
        assert follower[name] != "found", follower


@pytest.mark.slow
@requires_bubblewrap
def test_proc_1_fd_never_reaches_the_graders_terminal(hostile_batch):
    run = hostile_batch["run"]
    assert MARKER not in run.stdout and MARKER not in run.stderr
    # Nor does the zygote's own start-up output (TensorFlow's C++ log lines).
    for line in ("cpu_feature_guard", "oneDNN custom operations"):
        assert line not in run.stderr, run.stderr[-2000:]


@pytest.mark.slow
@requires_bubblewrap
def test_the_tampered_cache_was_rebuilt_before_any_kernel_saw_it(hostile_batch):
    follower = hostile_batch["follower"]
    npz = hostile_batch["npz"]
    digest = hashlib.sha256(npz.read_bytes()).hexdigest()
    assert follower["mnist_sha256"] == digest
    assert follower["mnist_shape"] == [4000, 28, 28]
    manifest = json.loads((hostile_batch["cache"] / "data" / "manifest.json").read_text())
    assert manifest["files"]["mnist-public/mnist.npz"] == digest
    assert "did not match its manifest; removed and rebuilt: mnist.npz" in hostile_batch["run"].stderr


# --- no descriptor of the grader's in any sandboxed process --------------------------------

def _identity(path: str):
    info = os.stat(path)
    return None if stat.S_ISCHR(info.st_mode) else (info.st_dev, info.st_ino)


@pytest.mark.slow
@requires_bubblewrap
@pytest.mark.parametrize("provider", ["fresh", "prepared"])
def test_no_descriptor_of_the_graders_is_open_in_the_sandbox(provider, tmp_path):
    """Every descriptor of every process of the kernel's sandbox (and of the zygote's), as
    the host sees them, against every descriptor this process holds (its stdout, stderr,
    log files, sockets, pipes), except the kernel's own log file."""
    import asyncio
    import time

    import psutil

    from grader import kernels
    from grader.kernels import Kernel as _Kernel, KernelSetup as _KernelSetup

    if provider == "prepared" and python_under_scratch():
        pytest.skip("Python lives under the temporary folder: prepared kernels fall back")
    setup = _KernelSetup(mode="bubblewrap", provider=provider, datasets=(), memory_mb=1024,
                         max_processes=64, max_file_mb=16, gpu_devices=(), kernel_env=(),
                         heavy_modules=(), scratch_root=tmp_path)
    kernel = _Kernel(setup)
    try:
        asyncio.run(kernel.launch())
        deadline = time.monotonic() + 120  # until the kernel listens: its set-up is done
        while not any(p.name.startswith("kernel-") for p in kernel.io_dir.iterdir()):
            assert kernel.alive() and time.monotonic() < deadline, "the kernel did not start"
            time.sleep(0.2)
        log = _identity(kernel.log.name)
        ours = {}
        for fd in os.listdir("/proc/self/fd"):
            try:
                ours[_identity(f"/proc/self/fd/{fd}")] = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                pass
        ours.pop(None, None)
        ours.pop(log, None)
        # Every anonymous inode (eventfd, epoll, ...) is one and the same inode: not ours.
        ours = {k: v for k, v in ours.items() if not v.startswith("anon_inode:")}
        roots = [kernel.process.pid]
        if provider == "prepared":
            roots.append(kernels._Current.zygote.process.pid)
        held = {}
        for root in roots:
            tree = psutil.Process(root)
            for proc in [tree, *tree.children(recursive=True)]:
                for fd in os.listdir(f"/proc/{proc.pid}/fd"):
                    try:
                        found = _identity(f"/proc/{proc.pid}/fd/{fd}")
                    except OSError:
                        continue
                    if found in ours:
                        held[(proc.pid, " ".join(proc.cmdline())[:60], int(fd))] = ours[found]
        assert held == {}
    finally:
        kernel.discard()
        # The manager's control socket: left open, its zmq context would block the exit.
        asyncio.run(kernel.km._async_cleanup_resources())
