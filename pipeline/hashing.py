"""SHA-256 of files, read in 1 MiB blocks (bundles, manifests, verify, the source and data hashes)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

__all__ = ["sha256_file", "sha256_files", "update_from_file"]

BLOCK = 1 << 20


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
