"""Where a build writes its bundle, and how the finished bundle replaces --out.

Rules kept here:

* All files are written under a staging folder next to --out (same file system). The finished
  bundle replaces --out with one atomic exchange of directory entries; a failed or interrupted
  build leaves the previous bundle as it was and removes its staging folder.
* An existing --out is replaced only if it is an earlier edgeq bundle (manifest.json written by
  edgeq) or an empty folder; --keep-build only a folder an earlier --keep-build wrote, or an empty one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
from pathlib import Path

from edgeq.bundle.layout import KEEP_MARKER, MANIFEST, STAGING_PREFIX
from edgeq.errors import OutputDirError

__all__ = ["check_keep_dir", "check_out_dir", "is_edgeq_bundle", "keep_build", "make_parents", "remove_stale_staging",
           "swap_into_place"]


def is_edgeq_bundle(path: Path) -> bool:
    """Whether ``path`` holds a manifest.json written by edgeq."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("generator") == "edgeq"


def check_out_dir(out: Path) -> None:
    """OutputDirError unless --out is new, an empty folder or an edgeq bundle, inside a writable folder."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputDirError(f"--out {str(out)!r} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not is_edgeq_bundle(out):
        raise OutputDirError(
            f"--out {str(out)!r} exists and is not an edgeq bundle; choose an empty or new folder, "
            "or delete it yourself"
        )
    parent = out.parent
    while not parent.exists():  # missing parents are created once the inputs have been checked
        parent = parent.parent
    if not parent.is_dir():
        raise OutputDirError(f"--out {str(out)!r}: {str(parent)!r} is a file, not a folder; choose another --out")
    if not os.access(parent, os.W_OK):
        raise OutputDirError(f"--out {str(out)!r}: folder {str(parent)!r} is not writable; choose another --out")


def check_keep_dir(keep: Path, out: Path) -> None:
    """--keep-build replaces only a folder an earlier --keep-build wrote (it holds KEEP_MARKER) or an empty one."""
    if keep == out or out in keep.parents or keep in out.parents:
        raise OutputDirError(f"--keep-build {str(keep)!r} overlaps --out {str(out)!r}; choose a separate folder")
    if keep.is_symlink() or (keep.exists() and not keep.is_dir()):
        raise OutputDirError(f"--keep-build {str(keep)!r} exists and is not a folder; choose another folder")
    if keep.is_dir() and any(keep.iterdir()) and not (keep / KEEP_MARKER).is_file():
        raise OutputDirError(
            f"--keep-build {str(keep)!r} exists and was not written by edgeq; choose an empty or new folder"
        )


def remove_stale_staging(out: Path) -> None:
    """Staging folders of earlier builds of ``out`` whose process is gone (killed: SIGKILL, out of memory)."""
    from edgeq._proc import pid_alive

    prefix = f"{STAGING_PREFIX}{out.name}-"
    for p in out.parent.glob(f"{prefix}*"):
        pid = p.name[len(prefix):].split("-", 1)[0]
        if p.is_dir() and not p.is_symlink() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def make_parents(folder: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it created, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        f.mkdir()
    return missing


def keep_build(build_dir: Path, keep: Path) -> None:
    """Copy the build folder to ``keep`` (replacing it), marked as a --keep-build folder."""
    if keep.exists():
        shutil.rmtree(keep)
    shutil.copytree(build_dir, keep, symlinks=True)
    (keep / KEEP_MARKER).write_text("intermediate files of an edgeq build; --keep-build may replace this folder\n")


def swap_into_place(new: Path, out: Path) -> None:
    """Put ``new`` at ``out``. With an existing ``out``, exchange the two atomically, then delete the old."""
    if not out.exists():
        os.rename(new, out)
        return
    if _rename_exchange(new, out):
        shutil.rmtree(new)  # ``new`` now holds the previous bundle
        return
    # No renameat2 (not Linux, or an old kernel): two renames, a short window without --out.
    old = new.with_name(new.name + "-previous")
    os.rename(out, old)
    os.rename(new, out)
    shutil.rmtree(old)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _rename_exchange(a: Path, b: Path) -> bool:
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0
