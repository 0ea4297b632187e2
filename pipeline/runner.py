"""Runs stages in order, checks their contracts, keeps timings and results, and says which stage failed after which."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from edgeq.context import BuildContext
from edgeq.errors import EdgeqError, StageError
from edgeq.stages import STAGES, load_stage

__all__ = ["EventHook", "run_stages"]

# on_event(stage_name, index, total, status, seconds): status is "start", "done" or "failed".
EventHook = Callable[[str, int, int, str, float], None]


def _names(items: tuple[str | type, ...]) -> list[str]:
    return [i if isinstance(i, str) else i.__name__ for i in items]


def _missing(ctx: BuildContext, items: tuple[str | type, ...]) -> list[str | type]:
    return [i for i in items if (i not in ctx.artifacts if isinstance(i, str) else i not in ctx.results)]


def run_stages(ctx: BuildContext, on_event: EventHook | None = None, names: list[str] | None = None) -> dict[str, Any]:
    """Run ``names`` (default: every stage) in order on ``ctx``; each stage's result by stage name."""
    names = names or [n for n, _ in STAGES]
    done: list[str] = []
    results: dict[str, Any] = {}
    for k, name in enumerate(names, 1):
        stage = load_stage(name)
        missing = _missing(ctx, stage.requires)
        if missing:
            raise StageError(name, done, f"needs {_names(tuple(missing))} that no earlier stage produced")
        if on_event:
            on_event(name, k, len(names), "start", 0.0)
        t0 = time.perf_counter()
        try:
            result = stage.run(ctx)
        except StageError:
            raise
        except EdgeqError as e:
            _fail(on_event, name, k, len(names), t0)
            raise type(e)(f"{name}: {e}") from e
        except Exception as e:  # a library failed on this model: one typed error, cause chained
            _fail(on_event, name, k, len(names), t0)
            raise StageError(name, done, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                             " (run with --debug for the traceback)") from e
        seconds = time.perf_counter() - t0
        ctx.timings[name] = seconds
        if result is not None:
            ctx.put(result)
        unproduced = _missing(ctx, stage.produces)
        if unproduced:
            raise StageError(name, done, f"did not produce {_names(tuple(unproduced))}")
        results[name] = result
        done.append(name)
        if on_event:
            on_event(name, k, len(names), "done", seconds)
    return results


def _fail(on_event: EventHook | None, name: str, k: int, total: int, t0: float) -> None:
    if on_event:
        on_event(name, k, total, "failed", time.perf_counter() - t0)
