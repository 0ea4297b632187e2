"""SHA-256 of files, read in 1 MiB blocks (bundles, manifests, verify, the source and data hashes)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MAX_TREE_FILES", "sha256_file", "sha256_files", "tree_sha256", "update_from_file"]

BLOCK = 1 << 20
MAX_TREE_FILES = 100_000  # files under one folder tree_sha256 hashes, at most


def update_from_file(h: Any, path: Path, follow: bool = True) -> None:
    """Feed the bytes of ``path`` to the hash object ``h``, a block at a time. ``follow=False``: a
    symlink is refused (OSError ELOOP) and a FIFO does not block."""
    flags = os.O_RDONLY if follow else os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    with os.fdopen(os.open(path, flags), "rb") as fh:
        for block in iter(lambda: fh.read(BLOCK), b""):
            h.update(block)


def sha256_file(path: Path, follow: bool = True) -> str:
    """The hex SHA-256 of the file's bytes (``follow`` as in update_from_file)."""
    h = hashlib.sha256()
    update_from_file(h, path, follow)
    return h.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """One SHA-256 over the files' bytes, one after the other."""
    h = hashlib.sha256()
    for p in paths:
        update_from_file(h, p)
    return h.hexdigest()


def tree_sha256(folder: Path, skip: Callable[[Path], bool] | None = None, max_files: int = MAX_TREE_FILES) -> str:
    """SHA-256 over every regular file under ``folder``: its path relative to the folder, its size and
    its SHA-256, in path order. Symlinks are neither followed nor hashed, nor are __pycache__ folders
    or the paths ``skip`` says yes to (a file or a whole folder). ValueError past ``max_files`` files."""
    entries = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not (skip and skip(here / d)))  # Python's own cache
        for name in files:
            path = here / name
            if path.is_symlink() or not path.is_file() or (skip and skip(path)):
                continue
            entries.append(path)
            if len(entries) > max_files:
                raise ValueError(f"over {max_files} files")
    h = hashlib.sha256()
    for path in sorted(entries, key=lambda p: p.relative_to(folder).as_posix()):
        rel = path.relative_to(folder).as_posix()
        h.update(f"{rel}\0{path.stat().st_size}\0{sha256_file(path, follow=False)}\n".encode())
    return h.hexdigest()
