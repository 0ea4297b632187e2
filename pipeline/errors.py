"""The error hierarchy.

Two kinds of error (see DESIGN.md):

* ``EdgeqError`` subclasses raised at once for bad input or usage. The message is one line that
  names the bad value and the fix; the CLI prints it and exits 2.
* ``StageError``: a stage failed while running on input that passed validation. The runner
  wraps the cause with the stage's name and the stages that ran before it; exits 2 as well,
  because what failed is the user's model, not a gate.

A failed gate is not an exception: the build finishes, the report says which gate failed and by
how much, and the CLI exits 1.
"""

from __future__ import annotations

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_GATE_FAILED",
    "EXIT_OK",
    "ConfigError",
    "DataError",
    "EdgeqError",
    "ModelError",
    "OutputDirError",
    "StageError",
    "one_line",
]

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2


class EdgeqError(Exception):
    """Bad input or usage. ``str(err)`` is the one line shown to the user."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(EdgeqError):
    """edgeq.toml, a target file or a command-line option is missing or wrong."""


class DataError(EdgeqError):
    """Calibration or evaluation data does not match the model or is unusable."""


class ModelError(EdgeqError):
    """The model file is missing, unreadable or not what edgeq.toml says it is."""


class OutputDirError(EdgeqError):
    """--out cannot be written without destroying something that is not an edgeq bundle."""


class StageError(EdgeqError):
    """A stage failed. Carries the stage name and the stages that completed before it."""

    def __init__(self, stage: str, after: list[str], message: str) -> None:
        self.stage = stage
        self.after = list(after)
        self.reason = message
        done = ", ".join(after) if after else "none"
        super().__init__(f"stage '{stage}' failed (after: {done}): {message}")


def one_line(e: BaseException) -> str:
    """An exception in one line for a report: its type and the first line of its message (300 characters
    at most)."""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
