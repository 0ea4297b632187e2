"""Child processes that end with their parent.

edgeq runs converters and emulators in child processes. If edgeq itself is killed (SIGKILL, out
of memory), a child left running would keep writing into a staging folder that no one owns any
more. On Linux each child asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["die_with_parent", "pid_alive"]

_PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for subprocess: the child is killed when this process dies (Linux; None elsewhere)."""
    return _set_pdeathsig if sys.platform.startswith("linux") else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
