"""Write confinement of edgeq's child processes with Linux Landlock (defence in depth).

The export and convert children load the user's model with TensorFlow, torch, tf2onnx and onnx2tf.
edgeq checks models before they load (``saved_model_ops``, ``keras_files``, weights without
pickle), but those libraries are large and a model is a program; so each child also asks the
kernel, before it loads anything, to refuse every write outside the build folder:

* the write-type file-system accesses are handled (WRITE_FILE, REMOVE_DIR, REMOVE_FILE, MAKE_CHAR,
  MAKE_DIR, MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM; REFER from ABI 2, TRUNCATE from
  ABI 3, IOCTL_DEV from ABI 5 - only those the kernel's ABI knows) and allowed beneath the given
  paths only: the build folder and /dev/null. Reading is not restricted.
* files opened before (the log the parent hands over as stdout) stay writable; the temporary
  folder (TMPDIR) is pointed inside the build folder, so that tempfile users keep working.
* a Landlock domain covers the thread that asks and the threads and processes it starts later;
  threads started before (numpy's BLAS workers, started by ``import numpy``) are not covered. So
  ``confine_child`` re-executes the child once, confined, and every thread of the new image is.
* confinement is best effort: where the kernel has no Landlock (not Linux, an old kernel, the LSM
  disabled) or a step fails, the child runs anyway and its result says why it is not confined.

Syscalls through ctypes (x86_64 and aarch64 numbers), after prctl(PR_SET_NO_NEW_PRIVS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import sys
from pathlib import Path

__all__ = ["abi_version", "confine_child", "confine_writes"]

_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}  # create_ruleset, add_rule, restrict_self
_PR_SET_NO_NEW_PRIVS = 38
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1

# LANDLOCK_ACCESS_FS_* (include/uapi/linux/landlock.h)
_WRITE_FILE = 1 << 1
_REMOVE_DIR = 1 << 4
_REMOVE_FILE = 1 << 5
_MAKE_CHAR = 1 << 6
_MAKE_DIR = 1 << 7
_MAKE_REG = 1 << 8
_MAKE_SOCK = 1 << 9
_MAKE_FIFO = 1 << 10
_MAKE_BLOCK = 1 << 11
_MAKE_SYM = 1 << 12
_REFER = 1 << 13  # ABI 2
_TRUNCATE = 1 << 14  # ABI 3
_IOCTL_DEV = 1 << 15  # ABI 5
_FILE_ONLY = _WRITE_FILE | _TRUNCATE | _IOCTL_DEV  # the write rights a rule on a file (not a folder) may hold

_REEXEC = "EDGEQ_LANDLOCK_REEXEC"  # set while a child re-executes itself confined


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]  # later fields (net, scoped) stay unset: not handled


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _Unavailable(Exception):
    """Why the process cannot be confined (the status names it)."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _numbers() -> tuple[int, int, int]:
    if not sys.platform.startswith("linux"):
        raise _Unavailable(f"not Linux ({sys.platform})")
    machine = platform.machine()
    if machine not in _SYSCALLS:
        raise _Unavailable(f"no Landlock syscall numbers known for {machine}")
    return _SYSCALLS[machine]


def _abi(libc: ctypes.CDLL, create: int) -> int:
    abi = libc.syscall(ctypes.c_long(create), None, ctypes.c_size_t(0), ctypes.c_long(_CREATE_RULESET_VERSION))
    if abi < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            raise _Unavailable("kernel without Landlock")
        if err == errno.EOPNOTSUPP:
            raise _Unavailable("Landlock is disabled in this kernel (not in its lsm= list)")
        raise _Unavailable(f"landlock_create_ruleset failed: {os.strerror(err)}")
    return int(abi)


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 if it has none (or this is not Linux)."""
    try:
        return _abi(_libc(), _numbers()[0])
    except _Unavailable:
        return 0


def _write_rights(abi: int) -> int:
    rights = (_WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE_CHAR | _MAKE_DIR | _MAKE_REG | _MAKE_SOCK
              | _MAKE_FIFO | _MAKE_BLOCK | _MAKE_SYM)
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def _fail(what: str) -> _Unavailable:
    return _Unavailable(f"{what} failed: {os.strerror(ctypes.get_errno())}")


def confine_writes(allowed: list[Path], label: str = "the allowed folders") -> str:
    """Refuse, from now on, every write of this thread (and of the threads and processes it starts)
    outside ``allowed`` (folders: anything beneath them; files: that file). Returns a status for the
    report: "landlock ABI 7: writes confined to <label>", or "not confined: <why>" (nothing changed
    then, except that no_new_privs may be set)."""
    try:
        create, add_rule, restrict_self = _numbers()
        libc = _libc()
        abi = _abi(libc, create)
        rights = _write_rights(abi)
        attr = _RulesetAttr(handled_access_fs=rights)
        ruleset = libc.syscall(ctypes.c_long(create), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                               ctypes.c_long(0))
        if ruleset < 0:
            raise _fail("landlock_create_ruleset")
        try:
            for path in allowed:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError as e:
                    raise _Unavailable(f"cannot open {str(path)!r} ({e.strerror})") from e
                try:
                    is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
                    rule = _PathBeneathAttr(allowed_access=rights if is_dir else rights & _FILE_ONLY, parent_fd=fd)
                    if libc.syscall(ctypes.c_long(add_rule), ctypes.c_long(ruleset), ctypes.c_long(_RULE_PATH_BENEATH),
                                    ctypes.byref(rule), ctypes.c_long(0)) < 0:
                        raise _fail(f"landlock_add_rule for {str(path)!r}")
                finally:
                    os.close(fd)
            if libc.prctl(ctypes.c_int(_PR_SET_NO_NEW_PRIVS), *(ctypes.c_ulong(v) for v in (1, 0, 0, 0))) != 0:
                raise _fail("prctl(PR_SET_NO_NEW_PRIVS)")
            if libc.syscall(ctypes.c_long(restrict_self), ctypes.c_long(ruleset), ctypes.c_long(0)) < 0:
                raise _fail("landlock_restrict_self")
        finally:
            os.close(ruleset)
    except _Unavailable as e:
        return f"not confined: {e}"
    return f"landlock ABI {abi}: writes confined to {label}"


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def confine_child(build_dir: str | None) -> str:
    """The first step of a child's main(): writes confined to ``build_dir`` and /dev/null, with
    TMPDIR a folder inside ``build_dir``. If the process already runs other threads (its imports
    started them), it re-executes itself, confined, so that its threads all are; the call in the
    new image confines again (one more identical layer) and returns. Returns the status."""
    if not build_dir:
        return "not confined: the job names no build folder"
    folder = Path(build_dir)
    tmp = folder / "tmp"
    try:
        tmp.mkdir(exist_ok=True)
    except OSError as e:
        return f"not confined: cannot make {str(tmp)!r} ({e.strerror})"
    os.environ["TMPDIR"] = str(tmp)
    import tempfile

    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    status = confine_writes([folder, Path(os.devnull)], "the build folder")
    if status.startswith("landlock") and _threads() > 1 and os.environ.get(_REEXEC) != "1":
        os.environ[_REEXEC] = "1"
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    os.environ.pop(_REEXEC, None)
    return status
