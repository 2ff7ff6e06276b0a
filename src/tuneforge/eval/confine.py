"""Kernel confinement of the code sandbox's child process: Landlock for file-system writes, seccomp for the rest.

This module runs INSIDE the sandbox child, before any candidate code: the parent sends its source text to a
``python -I`` process that must not import tuneforge (an isolated interpreter, and in development the installed
tuneforge may not be this one). So it uses the standard library only and must stay self-contained.

What ``confine(root)`` does, in this order (each step is inherited by every child process and cannot be undone):

1. drops every capability (bounding set, ambient set, then capset to zero), so a sandbox started by root is an
   ordinary process: no mount, chown-to-anyone, raw devices, module loading, reboot or clock changes;
2. sets ``no_new_privs`` (set-uid and file-capability binaries gain nothing; required by Landlock and seccomp);
3. Landlock (Linux >= 5.13, any user, no package): every file-system write right the kernel knows is handled
   and granted only beneath ``root`` (plus writing /dev/null): creating, writing, truncating, removing, renaming
   or linking files, directories, symlinks, fifos, sockets and device nodes anywhere else fails with EACCES or
   EXDEV, whichever syscall or library (open, sqlite3, shutil, a shell child) asks. Links and renames that would
   move a file from outside ``root`` into it are refused (the REFER right is never granted outside), so a hard
   link cannot turn an outside file into an inside one. With ABI >= 6 signals and abstract Unix sockets are
   scoped to the sandbox's own processes;
4. a seccomp filter for what Landlock does not mediate: chmod/chown/utime/setxattr/removexattr families and
   file_setattr (metadata of any file the user owns, inside the sandbox directory too: os.chmod, shutil.copy's
   copymode, Path.touch of an existing file and tarfile's permission restore fail with EPERM), ioctls other
   than a few terminal/descriptor ones (FS_IOC_SETFLAGS and friends change inode flags through a read-only
   descriptor), io_uring (its operations bypass seccomp), ``socket()`` of every family (no network and no
   Unix sockets such as the Docker socket; ``socketpair`` still works), path ``truncate`` on kernels whose
   Landlock predates the TRUNCATE right, and any syscall of another ABI (x32, 32-bit compat) - those kill
   the process.

Reading is not restricted: the code can still read whatever the user can (see sandbox.py).

``Unavailable`` is raised when the kernel or a container policy lacks Landlock or seccomp, or the CPU architecture
has no syscall table here; the Landlock check comes first, so usually nothing has been changed yet. The sandbox
child then refuses to run the candidate (see sandbox.py).
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform

__all__ = ["SYSCALLS", "Unavailable", "confine", "install_errno_filter", "landlock_abi"]


class Unavailable(RuntimeError):
    """The machine cannot confine the sandbox; the message says which mechanism is missing and why."""


# Per architecture: the seccomp audit token and the syscall numbers the filter names. 444-469 are shared by all
# architectures since the syscall tables were unified; the rest differ (aarch64 has no legacy chmod/chown/utime).
SYSCALLS: dict[str, dict] = {
    "x86_64": {
        "audit_arch": 0xC000003E, "x32_bit": 0x40000000, "socket": 41, "ioctl": 16, "truncate": 76,
        "capset": 126, "metadata": {
            "chmod": 90, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452, "chown": 92, "fchown": 93,
            "lchown": 94, "fchownat": 260, "utime": 132, "utimes": 235, "futimesat": 261, "utimensat": 280,
            "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198,
            "fremovexattr": 199, "setxattrat": 463, "removexattrat": 466, "file_setattr": 469,
            "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        },
    },
    "aarch64": {
        "audit_arch": 0xC00000B7, "x32_bit": None, "socket": 198, "ioctl": 29, "truncate": 45,
        "capset": 91, "metadata": {
            "fchmod": 52, "fchmodat": 53, "fchmodat2": 452, "fchownat": 54, "fchown": 55, "utimensat": 88,
            "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14, "lremovexattr": 15,
            "fremovexattr": 16, "setxattrat": 463, "removexattrat": 466, "file_setattr": 469,
            "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        },
    },
}
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446

# Landlock file-system rights, by the ABI version that introduced them.
_FS_RIGHTS = [
    (1, 1 << 1, "write_file"), (1, 1 << 4, "remove_dir"), (1, 1 << 5, "remove_file"), (1, 1 << 6, "make_char"),
    (1, 1 << 7, "make_dir"), (1, 1 << 8, "make_reg"), (1, 1 << 9, "make_sock"), (1, 1 << 10, "make_fifo"),
    (1, 1 << 11, "make_block"), (1, 1 << 12, "make_sym"), (2, 1 << 13, "refer"), (3, 1 << 14, "truncate"),
    (5, 1 << 15, "ioctl_dev"),
]
_WRITE_FILE, _TRUNCATE = 1 << 1, 1 << 14
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1

# Terminal and descriptor ioctls Python itself issues (isatty, os.set_inheritable, terminal size, FIONREAD);
# the same numbers on x86_64 and aarch64 (asm-generic/ioctls.h).
_ALLOWED_IOCTLS = (0x5401, 0x5413, 0x541B, 0x5421, 0x5450, 0x5451)

_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _PR_CAPBSET_DROP, _PR_CAP_AMBIENT = 38, 22, 24, 47
_SECCOMP_MODE_FILTER = 2
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_LD_ABS_W, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _table() -> dict:
    machine = platform.machine()
    if machine not in SYSCALLS:
        raise Unavailable(f"no seccomp syscall table for the CPU architecture {machine!r} (have: "
                          f"{', '.join(SYSCALLS)})")
    return SYSCALLS[machine]


def _err(what: str) -> str:
    code = ctypes.get_errno()
    return f"{what} failed: {errno.errorcode.get(code, code)} ({os.strerror(code)})"


def landlock_abi(libc=None) -> int:
    """The kernel's Landlock ABI version (>= 1), or Unavailable naming why there is none."""
    libc = libc or _libc()
    abi = libc.syscall(_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi >= 1:
        return int(abi)
    code = ctypes.get_errno()
    if code == errno.ENOSYS:
        reason = ("the kernel has no Landlock system calls (Linux older than 5.13, built without "
                  "CONFIG_SECURITY_LANDLOCK, or a container seccomp profile hides them)")
    elif code == errno.EOPNOTSUPP:
        reason = "Landlock is built into this kernel but not enabled at boot (add 'landlock' to the lsm= parameter)"
    elif code == errno.EPERM:
        reason = "the Landlock system calls are refused (EPERM), probably by a container's seccomp profile"
    else:
        reason = f"Landlock version query failed: {errno.errorcode.get(code, code)}"
    uname = os.uname()
    raise Unavailable(f"Landlock: {reason}; running kernel {uname.release} ({uname.machine})")


def _drop_capabilities(libc, table: dict) -> None:
    for cap in range(64):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            if ctypes.get_errno() == errno.EINVAL:
                break  # past the last capability this kernel knows
            if ctypes.get_errno() == errno.EPERM:
                break  # no CAP_SETPCAP: an unprivileged process, whose bounding set grants nothing under NNP
            raise Unavailable(_err("dropping the capability bounding set"))
    libc.prctl(_PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL; EINVAL on kernels without ambient caps
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable for caps 0-31 and 32-63: all zero
    if libc.syscall(table["capset"], header, data) != 0:
        raise Unavailable(_err("dropping capabilities (capset)"))


def _landlock(libc, root: str, abi: int) -> str:
    handled = 0
    for since, bit, _ in _FS_RIGHTS:
        if abi >= since:
            handled |= bit
    attr = _RulesetAttr(handled, 0, (_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0)
    # The struct grew over ABIs; pass only the fields this kernel knows (trailing zeros are fine, unknown
    # non-zero ones are not).
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise Unavailable(_err("Landlock: creating the ruleset"))
    try:
        rules = [(root, handled), (os.devnull, _WRITE_FILE | (_TRUNCATE if abi >= 3 else 0))]
        for path, allowed in rules:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = _PathBeneath(allowed, fd)
                if libc.syscall(_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule),
                                ctypes.c_uint32(0)) != 0:
                    raise Unavailable(_err(f"Landlock: adding the rule for {path}"))
            finally:
                os.close(fd)
        if libc.syscall(_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise Unavailable(_err("Landlock: restrict_self"))
    finally:
        os.close(ruleset)
    return f"Landlock ABI {abi}"


def _assemble(program: list[tuple]) -> list[tuple[int, int, int, int]]:
    """Resolve label names in conditional jumps; ("label", name) entries mark positions."""
    labels, out = {}, []
    for entry in program:
        if entry[0] == "label":
            labels[entry[1]] = len(out)
        else:
            out.append(entry)
    resolved = []
    for i, (code, jt, jf, k) in enumerate(out):
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        if not (0 <= jt < 256 and 0 <= jf < 256):
            raise AssertionError("seccomp jump out of range")  # a programming error in this module
        resolved.append((code, jt, jf, k))
    return resolved


def _install(libc, program: list[tuple]) -> None:
    insns = _assemble(program)
    array = (_SockFilter * len(insns))(*[_SockFilter(*insn) for insn in insns])
    prog = _SockFprog(len(insns), array)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        raise Unavailable(_err("seccomp: installing the filter"))


def _arch_check(table: dict) -> list[tuple]:
    program = [(_LD_ABS_W, 0, 0, 4), (_JEQ, 1, 0, table["audit_arch"]), (_RET, 0, 0, _RET_KILL_PROCESS),
               (_LD_ABS_W, 0, 0, 0)]
    if table["x32_bit"]:
        program += [(_JGE, 0, 1, table["x32_bit"]), (_RET, 0, 0, _RET_KILL_PROCESS)]
    return program


def _seccomp(libc, table: dict, abi: int) -> str:
    denied = sorted(table["metadata"].values()) + ([table["truncate"]] if abi < 3 else [])
    program = _arch_check(table)
    program += [(_JEQ, "eperm", 0, nr) for nr in denied]
    program += [(_JEQ, "eacces", 0, table["socket"]), (_JEQ, "ioctl", 0, table["ioctl"]), (_RET, 0, 0, _RET_ALLOW)]
    program += [("label", "ioctl"), (_LD_ABS_W, 0, 0, 16 + 8)]  # args[1], low 32 bits: the ioctl command
    program += [(_JEQ, "allow", 0, cmd) for cmd in _ALLOWED_IOCTLS]
    program += [(_RET, 0, 0, _RET_ERRNO | errno.ENOTTY), ("label", "allow"), (_RET, 0, 0, _RET_ALLOW),
                ("label", "eperm"), (_RET, 0, 0, _RET_ERRNO | errno.EPERM),
                ("label", "eacces"), (_RET, 0, 0, _RET_ERRNO | errno.EACCES)]
    _install(libc, program)
    return "seccomp (no chmod/chown/utime/xattr changes, no sockets, no io_uring, no inode-flag ioctls)"


def install_errno_filter(numbers: list[int], errnum: int) -> None:
    """Make the given syscalls fail with errnum in this process and its children (as a container policy would)."""
    libc, table = _libc(), _table()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise Unavailable(_err("prctl(PR_SET_NO_NEW_PRIVS)"))
    program = _arch_check(table) + [(_JEQ, "deny", 0, nr) for nr in numbers]
    program += [(_RET, 0, 0, _RET_ALLOW), ("label", "deny"), (_RET, 0, 0, _RET_ERRNO | errnum)]
    _install(libc, program)


def confine(root: str) -> str:
    """Confine this process (and all it starts) as described above; returns what was applied."""
    libc, table = _libc(), _table()
    abi = landlock_abi(libc)  # checked first: nothing is changed when the mechanism is missing
    _drop_capabilities(libc, table)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise Unavailable(_err("prctl(PR_SET_NO_NEW_PRIVS)"))
    applied = [_landlock(libc, root, abi), _seccomp(libc, table, abi), "no capabilities"]
    return " + ".join(applied)
