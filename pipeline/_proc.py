"""Child processes that end with their parent.

edgeq runs converters and emulators in child processes. If edgeq itself is killed (SIGKILL, out
of memory), a child left running would keep writing into a staging folder that no one owns any
more. On Linux each child asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["die_with_parent", "error_line", "exit_text", "pid_alive", "run_job"]

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


def run_job(module: str, job: dict[str, Any], job_path: Path, log_path: Path,
            timeout: float | None = None) -> tuple[int, dict[str, Any] | None]:
    """Run ``python -m MODULE JOB.json``, its output appended to ``log_path``, killed if edgeq dies.

    The protocol of edgeq's child processes: the job is a JSON file; the child writes
    ``JOB.result.json`` (``{"ok": true, ...}`` or ``{"ok": false, "error": "<one line>"}``).
    Returns the exit code (negative: killed by that signal) and the result, None if none was written.
    ``timeout`` (seconds): the child is killed after that long and ``subprocess.TimeoutExpired`` raised."""
    job_path.write_text(json.dumps(job, indent=2), encoding="utf-8")
    result_path = job_path.with_suffix(".result.json")
    with open(log_path, "ab") as log:
        proc = subprocess.run(
            [sys.executable, "-m", module, str(job_path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, check=False, timeout=timeout,
            preexec_fn=die_with_parent(),  # a killed build leaves no child running
        )
    result = json.loads(result_path.read_text(encoding="utf-8")) if result_path.is_file() else None
    return proc.returncode, result


def exit_text(code: int) -> str:
    """How a child ended, for a message: "crashed (SIGSEGV)" or "exited with code 3"."""
    if code < 0:
        try:
            return f"crashed ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def error_line(e: BaseException) -> str:
    """An exception as one line for a child's result: "TypeName: first line of its message"."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
