"""Runs stages in order, checks their contracts, keeps timings and results, and says which stage failed after which.

A stage that says ``cacheable = True`` is looked up in the build's stage cache (edgeq.cache) first,
under a key chained from the build's (``ctx.cache_base``) through every stage before it and what each
of them reads besides (a stage's ``cache_inputs(ctx)``: the calibration data, the rungs asked for): on a hit its
files are copied into the build folder and its artifacts and result restored, and it does not run.
After it runs, what it wrote into the build folder, its artifacts and its result are stored. Its
result and its artifacts' ``meta`` pass through JSON either way (edgeq.cache.roundtrip), so later
stages see the same values whether the stage ran or was reused.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeq.artifacts import Artifact
from edgeq.cache import Hit, digest, roundtrip
from edgeq.context import BuildContext
from edgeq.errors import EdgeqError, StageError
from edgeq.stages import STAGES, load_stage

__all__ = ["EventHook", "run_stages"]

# on_event(stage_name, index, total, status, seconds): status is "start", "done", "failed" or "cached" (reused
# from the stage cache; seconds: what it took when it ran).
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
    chain = ctx.cache_base
    for k, name in enumerate(names, 1):
        stage = load_stage(name)
        missing = _missing(ctx, stage.requires)
        if missing:
            raise StageError(name, done, f"needs {_names(tuple(missing))} that no earlier stage produced")
        salt = stage.cache_inputs(ctx) if hasattr(stage, "cache_inputs") else ()  # what it reads besides the stages before
        chain = digest(chain, name, salt) if chain is not None else None
        cacheable = getattr(stage, "cacheable", False)
        t0 = time.perf_counter()  # a hit's restore counts as the stage's time in this build
        hit = ctx.cache.get(name, ctx.cache.key(chain)) if cacheable and ctx.cache is not None and chain else None
        if hit is not None and _restore(ctx, stage, hit):
            ctx.timings[name] = time.perf_counter() - t0
            results[name] = ctx.results.get(_result_type(stage))
            done.append(name)
            if on_event:
                on_event(name, k, len(names), "cached", hit.seconds)
            continue
        if on_event:
            on_event(name, k, len(names), "start", 0.0)
        before = _files(ctx.build_dir) if cacheable else {}
        keys_before = set(ctx.artifacts)
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
        if cacheable:
            result = _keep(ctx, stage, name, chain, before, keys_before, seconds)
        results[name] = result
        done.append(name)
        if on_event:
            on_event(name, k, len(names), "done", seconds)
    return results


def _result_type(stage: Any) -> type:
    return next(p for p in stage.produces if isinstance(p, type))


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: relative path -> (size, mtime)."""
    out = {}
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            out[p.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def _artifacts_data(ctx: BuildContext, keys: list[str]) -> list[dict[str, Any]]:
    return [{"key": a.key, "graph": a.graph, "path": a.path.relative_to(ctx.build_dir).as_posix(), "format": a.format,
             "precision": a.precision, "meta": a.meta} for key in keys for a in ctx.artifacts.get(key, {}).values()]


def _apply(ctx: BuildContext, stage: Any, data: dict[str, Any]) -> Any:
    """Put a stage's artifacts and result, as JSON gave them back, into ``ctx``; the result."""
    for a in data["artifacts"]:
        ctx.add(Artifact(a["key"], ctx.build_dir / a["path"], a["format"], a["precision"], a["meta"], graph=a["graph"]))
    result = _result_type(stage)(**data["result"])
    ctx.put(result)
    return result


def _keep(ctx: BuildContext, stage: Any, name: str, chain: str | None, before: dict[str, tuple[int, int]],
          keys_before: set[str], seconds: float) -> Any:
    """Store what ``stage`` made (when the build has a cache); its artifacts and result, through JSON."""
    new = [key for key in ctx.artifacts if key not in keys_before]  # the precision stage adds more than it names
    data = roundtrip({"artifacts": _artifacts_data(ctx, new), "result": dataclasses.asdict(ctx.result(_result_type(stage)))})
    if ctx.cache is not None and chain:
        files = [rel for rel, sig in _files(ctx.build_dir).items() if before.get(rel) != sig]
        ctx.cache.put(name, ctx.cache.key(chain), data, seconds, ctx.build_dir, files)
    return _apply(ctx, stage, data)


def _restore(ctx: BuildContext, stage: Any, hit: Hit) -> bool:
    """Copy a hit's files into the build folder and apply it; False if that fails (the stage runs)."""
    try:
        ctx.cache.restore(hit, ctx.build_dir)  # type: ignore[union-attr]
        _apply(ctx, stage, hit.data)
    except (OSError, KeyError, TypeError, ValueError) as e:
        ctx.cache.notes.append(f"cache: the {stage.name} entry could not be used ({type(e).__name__}); it runs again")  # type: ignore[union-attr]
        return False
    return True


def _fail(on_event: EventHook | None, name: str, k: int, total: int, t0: float) -> None:
    if on_event:
        on_event(name, k, total, "failed", time.perf_counter() - t0)
