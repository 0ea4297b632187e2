"""What the edgeq command's modules share: the stderr console and the one-line failure."""

from __future__ import annotations

import sys
import traceback

import typer
from rich.console import Console
from rich.markup import escape

from edgeq.inputs.shown import printable

__all__ = ["err", "fail"]

err = Console(stderr=True, highlight=False)


def fail(e: BaseException, debug: bool, code: int) -> None:
    """Print ``e`` as one escaped line on stderr (its traceback too with --debug) and exit with ``code``."""
    if debug:
        traceback.print_exception(e, file=sys.stderr)
    err.print(f"[red]error:[/red] {escape(printable(str(e)))}", soft_wrap=True)
    raise typer.Exit(code)
