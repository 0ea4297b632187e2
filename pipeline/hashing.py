"""SHA-256 of a file, read in 1 MiB blocks (bundles, manifests, verify)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["sha256_file"]


def sha256_file(path: Path, follow: bool = True) -> str:
    """``follow=False``: a symlink is refused (OSError ELOOP) and a FIFO does not block."""
    flags = os.O_RDONLY if follow else os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    h = hashlib.sha256()
    with os.fdopen(os.open(path, flags), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
