"""The seccomp filter every sandboxed kernel runs under, fresh or forked from a zygote.

A classic BPF program, assembled here in pure Python (``struct``-packed ``sock_filter``
instructions, no libseccomp), that refuses the system calls no notebook needs and that
would let one submission reach another or the host:

* the kernel keyring (``add_key``, ``request_key``, ``keyctl``): a hand-over channel
  between submissions that file systems do not cover;
* other processes' memory (``ptrace``, ``process_vm_readv``/``writev``);
* namespaces and mounts (``unshare``, ``setns``, ``mount``, ``umount2``, ``pivot_root``,
  the new mount API, ``chroot``; ``clone`` with any ``CLONE_NEW*`` flag): a process with
  capabilities in a new user namespace could otherwise remount a read-only bind rw;
* the kernel's own attack surface (``bpf``, ``perf_event_open``, ``userfaultfd``,
  ``io_uring_*``, ``open_by_handle_at``, ``name_to_handle_at``) and the machine's
  (modules, ``kexec``, ``reboot``, swap, ``acct``, ``quotactl``, ``syslog``, ``iopl``).

A refused call fails with ``EPERM`` (the process is not killed: a library that probes
for a feature keeps working). ``clone3`` fails with ``ENOSYS`` instead: its flags live in
memory a filter cannot read, and ``ENOSYS`` makes the C library fall back to ``clone``,
whose flags are checked. The program knows x86_64 and aarch64; x32 calls and every
other architecture (a 32-bit ``int 0x80`` from a 64-bit process) are refused outright.

:func:`program` gives the compiled bytes (bubblewrap's ``--seccomp FD`` reads them from a
descriptor: :func:`program_fd`); :func:`install` loads the filter into the calling process
(the zygote's forked kernels), after ``no_new_privs``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
_NR, _ARCH, _ARG0_LOW = 0, 4, 16  # args[0]'s low 32 bits (both architectures are little-endian)

_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_JSET_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_SYSCALL_BIT = 0x40000000
# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
# | CLONE_NEWNET
CLONE_NAMESPACES = 0x7E020000

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2

# name -> (x86_64, aarch64)
REFUSED: dict[str, tuple[int, int]] = {
    "add_key": (248, 217), "request_key": (249, 218), "keyctl": (250, 219),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41), "chroot": (161, 51),
    "unshare": (272, 97), "setns": (308, 268),
    "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430),
    "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "open_by_handle_at": (304, 265), "name_to_handle_at": (303, 264),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "reboot": (169, 142), "swapon": (167, 224), "swapoff": (168, 225),
    "acct": (163, 89), "quotactl": (179, 60), "syslog": (103, 116), "vhangup": (153, 58),
    "lookup_dcookie": (212, 18),
}
X86_ONLY = {"iopl": 172, "ioperm": 173}
CLONE = (56, 220)
CLONE3 = 435  # the same number on both


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    if not (0 <= jt <= 255 and 0 <= jf <= 255):
        raise ValueError("a BPF jump is too long for this program's layout")
    return struct.pack("=HBBI", code, jt, jf, k)


def _arch_block(numbers: list[int], clone: int, x32: bool) -> list[bytes]:
    """The checks for one architecture; ends in allow, refuse (EPERM), refuse (ENOSYS)."""
    body: list[tuple[int, int, str | None]] = [(_BPF_LD_W_ABS, _NR, None)]
    if x32:
        body.append((_BPF_JGE_K, X32_SYSCALL_BIT, "eperm"))
    body += [(_BPF_JEQ_K, n, "eperm") for n in sorted(set(numbers))]
    body.append((_BPF_JEQ_K, CLONE3, "enosys"))
    # clone: refused when it asks for a new namespace (the flags are its first argument).
    body.append((_BPF_JEQ_K, clone, None))  # jt=0 (next), jf: skip the two flag checks
    body.append((_BPF_LD_W_ABS, _ARG0_LOW, None))
    body.append((_BPF_JSET_K, CLONE_NAMESPACES, "eperm"))
    labels = {"allow": len(body), "eperm": len(body) + 1, "enosys": len(body) + 2}
    out = []
    for index, (code, k, target) in enumerate(body):
        if code == _BPF_JEQ_K and k == clone and target is None:
            out.append(_insn(code, k, 0, 2))
        elif target is None:
            out.append(_insn(code, k))
        else:
            out.append(_insn(code, k, labels[target] - index - 1, 0))
    out += [_insn(_BPF_RET_K, _RET_ALLOW), _insn(_BPF_RET_K, _RET_ERRNO | errno.EPERM),
            _insn(_BPF_RET_K, _RET_ERRNO | errno.ENOSYS)]
    return out


def program() -> bytes:
    """The compiled filter: ``struct sock_filter`` instructions, 8 bytes each."""
    x86 = _arch_block([n[0] for n in REFUSED.values()] + list(X86_ONLY.values()), CLONE[0],
                      x32=True)
    arm = _arch_block([n[1] for n in REFUSED.values()], CLONE[1], x32=False)
    head = [_insn(_BPF_LD_W_ABS, _ARCH),
            _insn(_BPF_JEQ_K, AUDIT_ARCH_X86_64, 2, 0),  # -> x86 block
            _insn(_BPF_JEQ_K, AUDIT_ARCH_AARCH64, len(x86) + 1, 0),  # -> arm block
            _insn(_BPF_RET_K, _RET_ERRNO | errno.EPERM)]  # any other architecture
    return b"".join(head + x86 + arm)


def program_fd() -> int:
    """A descriptor (to pass to bubblewrap's ``--seccomp``) positioned at the program's
    start; the caller closes it once the sandbox has started."""
    fd = os.memfd_create("grader-seccomp", 0)  # not inheritable: pass it with pass_fds
    try:
        os.write(fd, program())
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    """Load the filter into this process (and every child it will have); sets
    ``no_new_privs`` first, which an unprivileged process needs for it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"no_new_privs: {os.strerror(code)}")
    code = program()
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"seccomp: {os.strerror(code)}")
