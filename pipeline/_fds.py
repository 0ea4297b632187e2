"""Redirecting file descriptors 1 and 2, for libraries whose C++ code prints straight to them."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["redirect_output"]


@contextlib.contextmanager
def redirect_output(path: Path | str = os.devnull, *, stdout: bool = True) -> Iterator[None]:
    """Send everything written to fd 2 (and fd 1 unless ``stdout=False``) to ``path`` (appended)."""
    fds = (1, 2) if stdout else (2,)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    with open(path, "ab") as sink:
        for fd in fds:
            os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip(fds, saved, strict=False):
                os.dup2(copy, fd)
                os.close(copy)
