"""validate: run the float reference and every artifact over the whole eval set; apply the gates.

Rules:

* The reference is the float ONNX model on onnxruntime. Every artifact runs on the runtime(s)
  that can run it: the INT8 ONNX on onnxruntime, the float32 .tflite on LiteRT, and the shipped
  INT8 .tflite on every runtime the target names.
* An artifact is a set of files, one per graph; a runtime runs the set (edgeq.execution.Runtime).
* The task drives the passes (edgeq.tasks): it announces the whole work to every runtime first
  (a runtime under an emulator runs it all in one background process and replays its outputs),
  then streams the eval set through the reference and every runtime in lockstep, accumulating its
  task metrics and the tensor metrics of every output of every graph (cosine, SQNR, max/mean abs
  error of dequantized outputs), and the parity of the shipped artifact across runtimes.
* Gates are evaluated on the shipped artifact (the rung the build ships, INT8 by default), once per
  validating runtime for the metrics that depend on the runtime (edgeq.gates). A runtime whose
  kernels cannot compute the rung (``RuntimeFacts.cannot_run``) does not run it; the report says why.
* ``--precision auto`` validates the rungs the target allows from the smallest file up and ships the
  first that passes every gate; ``--precision all`` validates every rung and ships the target's
  default. Each rung validated is a row of the ladder (``ladder_row``): bytes, task metric and drop,
  output SQNR, host latency against fp32, kernels, gates.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from edgeq.artifacts import Artifact
from edgeq.attribution import MAX_SAMPLES
from edgeq.cache import canonical, digest, memo
from edgeq.context import BuildContext, Evaluation, Pair
from edgeq.errors import ModelError, one_line
from edgeq.execution import DecodeJob, FeedSet, Runtime, Work
from edgeq.gates import evaluate
from edgeq.precisions import precision
from edgeq.results import CalibrationResult, ConvertResult, PrecisionResult, ValidationResult
from edgeq.runtimes import RUNTIMES, SUBSET_SEED, cannot_run, installed, open_runtime, start_all, stop_all, subsets
from edgeq.tflite_inspect import inspect_tflite

__all__ = ["LATENCY_RUNS", "SHIPPED", "STAGE", "VARIANTS", "ValidateStage", "check", "validation_pairs"]

SHIPPED = "tflite_int8"  # the INT8 .tflite as converted: what repair starts from
REFERENCE = ("onnx_float", "onnxruntime")
VARIANTS = ("onnx_int8", "tflite_float32")  # validated besides the shipped rung, on one runtime each
LATENCY_RUNS = 50  # invokes per graph for a ladder row's host latency (median)


def validation_pairs(ctx: BuildContext, variants: bool = True) -> list[Pair]:
    """(artifact, runtime) pairs: the shipped rung on every runtime of the target that can run it,
    every other variant (``variants``) on the first runtime that runs its format."""
    shipped = ctx.shipped
    pairs: list[Pair] = [(shipped, rt) for rt in ctx.target.runtimes if cannot_run(rt, ctx.precision) is None]
    for key in VARIANTS if variants else ():
        fmt = next(iter(ctx.artifacts[key].values())).format
        pairs += [(key, rt) for rt in [r for r, f in RUNTIMES.items() if f.format == fmt][:1] if (key, rt) not in pairs]
    return pairs


class ValidateStage:
    """Every artifact on its runtimes against the float reference; the gates."""

    name = "validate"
    requires: tuple[str | type, ...] = ("onnx_float", "onnx_int8", "tflite_float32", SHIPPED, CalibrationResult,
                                        ConvertResult, PrecisionResult)
    produces: tuple[str | type, ...] = (ValidationResult,)

    def run(self, ctx: BuildContext) -> ValidationResult:
        """Validate on every runtime; when an INT8 build fails a gate, repair (edgeq.repair) and validate
        the repair. ``--precision auto`` / ``all``: the ladder first, then the rung it ships."""
        ladder = _ladder(ctx) if ctx.ladder else []
        if ctx.shipped not in ctx.artifacts:
            made = ctx.result(PrecisionResult).rungs.get(ctx.precision, {})
            raise ModelError(f"the {ctx.precision} rung could not be made: {made.get('error', 'no file')}")
        result = check(ctx, validation_pairs(ctx))
        attribution = _attribution(ctx) if ctx.shipped == SHIPPED else {}  # the INT8 ONNX's error: INT8 builds
        attribution_tflite = {ctx.shipped: _attribution_tflite(ctx)}
        repaired: dict[str, Any] = {}
        if not result.passed and ctx.spec.quantization.repair and ctx.shipped == SHIPPED and not ctx.ladder:
            from edgeq.repair import repair

            def on(runtime: str, arts: dict[str, Artifact]) -> list[dict[str, Any]]:
                shipped = ctx.artifacts[SHIPPED]
                ctx.artifacts[SHIPPED] = arts
                try:
                    return [dict(g) for g in check(ctx, [(SHIPPED, runtime)]).gates]
                finally:
                    ctx.artifacts[SHIPPED] = shipped

            failed = [g["name"] for g in result.gates if not g["passed"]]
            converted = dict(ctx.artifacts[SHIPPED])
            try:
                repaired = repair(ctx, on, SHIPPED, failed)
            except Exception as e:  # the gates already failed: report why repair could not help, ship as converted
                ctx.artifacts[SHIPPED] = converted
                repaired = {"skipped": f"repair failed: {one_line(e)}"[:300]}
            repaired["gates_before"] = [dict(g) for g in result.gates]
            if repaired.get("chosen") is not None:
                result = check(ctx, validation_pairs(ctx))
                attribution_tflite["tflite_repaired"] = _attribution_tflite(ctx)
        return replace(result, attribution=attribution, attribution_tflite=attribution_tflite, repair=repaired,
                       precision=ctx.precision, ladder=tuple(ladder))


STAGE = ValidateStage()


def _ladder(ctx: BuildContext) -> list[dict[str, Any]]:
    """Validate the rungs the target allows, smallest file first, on every runtime that can run each;
    one row per rung. Sets ``ctx.precision`` to the rung to ship: for ``auto`` the first that passes
    every gate (the target's default when none does), for ``all`` the target's default."""
    made = ctx.result(PrecisionResult).rungs
    graphs = [g.name for g in ctx.spec.graphs]
    fp32_bytes = sum(ctx.artifact("tflite_float32", g).bytes for g in graphs)
    fp32_ms = _latency(ctx, "tflite_float32")
    rows: list[dict[str, Any]] = []
    sizes = []
    for alias in ctx.target.precisions:
        rung = precision(alias)
        why = [cannot_run(rt, alias) for rt in ctx.target.runtimes]
        if all(why):  # validated nowhere, it would pass on its size alone
            rows.append({"rung": alias, "name": rung.name, "error": f"no runtime of the target runs it ({why[0]})",
                         "passed": False})
        elif rung.key in ctx.artifacts:
            sizes.append((sum(ctx.artifact(rung.key, g).bytes for g in graphs), alias))
        else:
            rows.append({"rung": alias, "name": rung.name, "error": made.get(alias, {}).get("error", "not made"),
                         "passed": False})
    chosen = None
    for nbytes, alias in sorted(sizes):
        ctx.precision = alias
        try:
            result = check(ctx, validation_pairs(ctx, variants=False))
        except Exception as e:  # a runtime that refuses the rung (LiteRT's 16-bit DIV): listed, the ladder goes on
            rows.append({"rung": alias, "name": precision(alias).name, "bytes": nbytes, "error": one_line(e)[:300],
                         "passed": False})
            continue
        rows.append(_ladder_row(ctx, result, nbytes, fp32_bytes, fp32_ms))
        if result.passed and chosen is None:
            chosen = alias
            if ctx.ladder == "auto":
                break
    ctx.precision = chosen if ctx.ladder == "auto" and chosen is not None else ctx.target.precision
    for row in rows:
        row["shipped"] = row["rung"] == ctx.precision
    return rows


def _latency(ctx: BuildContext, key: str) -> float | None:
    """Host LiteRT latency of one calibration sample, summed over the artifact's graphs (median of
    ``LATENCY_RUNS`` invokes each, the target's threads); None when it cannot run. Kept in the stage cache."""
    def parts() -> tuple[Any, ...]:
        return ctx.model_key, ctx.calibration_key, _artifact_id(ctx, key), ctx.target.threads, LATENCY_RUNS

    return memo(ctx.cache, "latency", parts, lambda: _measure_latency(ctx, key))  # type: ignore[no-any-return]


def _measure_latency(ctx: BuildContext, key: str) -> float | None:
    from edgeq.tflite_io import to_tflite
    from edgeq.tflite_run import latency_ms

    sets = ctx.result(CalibrationResult).sets
    total = 0.0
    try:
        for g in (graph.name for graph in ctx.spec.graphs):
            art = ctx.artifact(key, g)
            feed = to_tflite(next(iter(sets[g])), art.meta)
            total += latency_ms(art.path.read_bytes(), art.meta["signature"], feed, ctx.target.threads, LATENCY_RUNS)
    except Exception:
        return None
    return total


def _ladder_row(ctx: BuildContext, result: ValidationResult, nbytes: int, fp32_bytes: int,
                fp32_ms: float | None) -> dict[str, Any]:
    """One rung of the ladder: bytes and ratio to fp32, the task metric and its drop on the target's
    first runtime, the lowest output SQNR over the runtimes, host latency against fp32, kernels, gates."""
    art = result.artifacts[ctx.shipped]
    ref = result.reference["metrics"]
    runtimes: dict[str, Any] = art["runtimes"]
    entries: list[dict[str, Any]] = list(runtimes.values())
    first: dict[str, Any] = entries[0].get("task", {}) if entries else {}
    metric = next((c for c in ctx.task.columns if c.key in ref and c.key in first), None)
    sqnrs = [o["sqnr_db"] for e in runtimes.values() for outs in e["outputs"].values() for o in outs.values()
             if o.get("sqnr_db") is not None]
    ms = fp32_ms if ctx.shipped == "tflite_float32" else _latency(ctx, ctx.shipped)
    return {
        "rung": ctx.precision, "name": precision(ctx.precision).name, "bytes": nbytes,
        "ratio_to_fp32": nbytes / fp32_bytes if fp32_bytes else None,
        "metric": metric.key if metric else None, "metric_title": metric.title if metric else None,
        "value": first.get(metric.key) if metric else None,
        "drop": (ref[metric.key] - first[metric.key]) if metric else None,
        "min_sqnr_db": min(sqnrs) if sqnrs else None,
        "host_latency_ms": ms, "latency_ratio_to_fp32": ms / fp32_ms if ms and fp32_ms else None,
        "kernels": {rt: e["describe"].get("kernels", "") for rt, e in runtimes.items()},
        "not_run": dict(art.get("not_run", {})),
        "gates_passed": sum(bool(g["passed"]) for g in result.gates), "gates": len(result.gates),
        "failed": [f"{g['name']}{' on ' + g['runtime'] if g.get('runtime') else ''}" for g in result.gates if not g["passed"]],
        "passed": result.passed,
    }


def _artifact_id(ctx: BuildContext, key: str) -> list[Any]:
    """What decides an artifact's outputs: every graph's file hash, meta, format and precision."""
    assert ctx.cache is not None
    return [[g, ctx.cache.file_sha256(a.path), digest(a.meta), a.format, a.precision] for g, a in ctx.artifacts[key].items()]


def _measure(ctx: BuildContext, pairs: list[Pair]) -> dict[str, Any]:
    """Run the reference and every pair over the eval set: what the task found and how each runtime ran."""
    threads = ctx.target.threads
    # each runtime's own folder, and the recorded feeds; a new one for every check (repair checks again)
    folder = next(f for k in range(1, 10_000) if not (f := ctx.build_dir / ("runtimes" if k == 1 else f"runtimes-{k}")).exists())

    def opened(key: str, rt: str) -> Runtime:
        return open_runtime(rt, ctx.artifacts[key], threads, folder / f"{key}-{rt.replace(':', '-')}")

    reference = opened(*REFERENCE)
    runners = {(key, rt): opened(key, rt) for key, rt in pairs}
    everyone = [reference, *runners.values()]
    total = len(ctx.eval)
    chosen = subsets(runners, total, ctx.subset_samples)
    subset = next((c for c in chosen.values() if c is not None), None)

    def start(feeds: dict[str, FeedSet], decode: DecodeJob | None) -> None:
        start_all(everyone, Work(feeds, decode, folder / "feeds", subset))

    try:
        found = ctx.task.evaluate(Evaluation(ctx, reference, runners, start, ctx.shipped, chosen))
    finally:
        stop_all(everyone)

    def samples(pair: Pair) -> dict[str, Any]:
        c = chosen[pair]
        return {"count": total, "of": total} if c is None else {"count": len(c), "of": total, "seed": SUBSET_SEED,
                                                               "indices": list(c)}

    return {"reference": reference.describe(), "metrics": found.reference, "parity": found.parity,
            "pairs": [{"key": key, "runtime": rt, "describe": runner.describe(), "outputs": found.tensors[(key, rt)],
                       "samples": samples((key, rt)),
                       **({"task": found.task[(key, rt)]} if (key, rt) in found.task else {})}
                      for (key, rt), runner in runners.items()]}


def check(ctx: BuildContext, pairs: list[Pair]) -> ValidationResult:
    """Run the reference and every (artifact, runtime) pair over the eval set (or reuse that measurement
    from the stage cache: same artifacts, data, runtimes and edgeq); describe and gate."""
    graphs = [g.name for g in ctx.spec.graphs]
    shipped = ctx.shipped

    def parts() -> tuple[Any, ...]:  # what decides the measurement (the gates do not)
        arts = {k: _artifact_id(ctx, k) for k in dict.fromkeys([REFERENCE[0], *(k for k, _ in pairs)])}
        target = {k: v for k, v in canonical(ctx.target).items() if k != "gates"}
        return (ctx.model_key, ctx.eval_key, target, ctx.precision, pairs, arts, installed(ctx.target.runtimes),
                ctx.subset_samples)

    measured = memo(ctx.cache, "check", parts, lambda: _measure(ctx, pairs))
    ref_entry = {"artifact": REFERENCE[0], **measured["reference"], "metrics": measured["metrics"], "samples": len(ctx.eval)}
    artifacts: dict[str, Any] = {}
    for key in dict.fromkeys((REFERENCE[0], *VARIANTS, shipped)):
        arts = ctx.artifacts[key]
        first = arts[graphs[0]]
        artifacts[key] = {
            "format": first.format, "precision": first.precision,
            "files": {g: {"file": arts[g].path.name, "bytes": arts[g].bytes} for g in graphs},
            "bytes": sum(arts[g].bytes for g in graphs), "runtimes": {},
        }
    for pair in measured["pairs"]:
        entry: dict[str, Any] = {"describe": pair["describe"], "outputs": pair["outputs"], "samples": pair["samples"]}
        if "task" in pair:
            entry["task"] = pair["task"]
        artifacts[pair["key"]]["runtimes"][pair["runtime"]] = entry
    conv = ctx.result(ConvertResult).graphs
    for key in dict.fromkeys(("tflite_float32", shipped)):
        artifacts[key]["inspection"] = {g: inspect_tflite(ctx.artifact(key, g).path) for g in graphs}
    fallback = {g: conv[g]["float_fallback"] for g in graphs if conv.get(g, {}).get("float_fallback")}
    if fallback and shipped == SHIPPED:
        artifacts[SHIPPED]["float_fallback"] = fallback
    if measured["parity"]:
        artifacts[shipped]["parity"] = measured["parity"]
    rung = precision(ctx.precision)
    artifacts[shipped].update(rung=rung.alias, rung_name=rung.name, full_integer=rung.full_integer)
    skipped = {rt: why for rt in ctx.target.runtimes if (why := cannot_run(rt, rung.alias)) is not None}
    if skipped:
        artifacts[shipped]["not_run"] = skipped

    gates = evaluate(ctx.gates, ctx.spec.task.kind, ref_entry["metrics"], artifacts[shipped], shipped)
    return ValidationResult(ref_entry, artifacts, tuple(gates), all(g["passed"] for g in gates))


def _diagnosis_parts(ctx: BuildContext, keys: tuple[str, ...]) -> tuple[Any, ...]:
    """What decides an attribution: the model, the calibration data, the artifacts compared."""
    return ctx.model_key, ctx.calibration_key, [_artifact_id(ctx, k) for k in keys]


def _attribution_tflite(ctx: BuildContext) -> dict[str, Any]:
    """Per graph, the shipped .tflite's tensors, dequantized, against the float32 .tflite's on the
    calibration set (edgeq.attribution.attribute_tflite); a diagnosis, as ``_attribution``."""
    keys = ("tflite_float32", ctx.shipped, "onnx_float")
    return memo(ctx.cache, "attribution_tflite", lambda: _diagnosis_parts(ctx, keys), lambda: _measure_attribution_tflite(ctx))  # type: ignore[no-any-return]


def _measure_attribution_tflite(ctx: BuildContext) -> dict[str, Any]:
    from edgeq.attribution import attribute_tflite, onnx_nodes
    from edgeq.tflite_io import to_tflite

    sets = ctx.result(CalibrationResult).sets
    out: dict[str, Any] = {}
    for g in (graph.name for graph in ctx.spec.graphs):
        f = ctx.artifact("tflite_float32", g)
        try:
            float_bytes = f.path.read_bytes()
            first = next(iter(sets[g]))
            try:  # the rows' ONNX nodes: a help to read them, the rows stand without it
                onnx_map: dict[str, Any] | None = onnx_nodes(ctx.artifact("onnx_float", g).path, float_bytes,
                                                             f.meta["signature"], first, to_tflite(first, f.meta))
            except Exception:
                onnx_map = None
            feeds = (to_tflite(feed, f.meta) for _, feed in zip(range(MAX_SAMPLES), sets[g], strict=False))
            out[g] = attribute_tflite(float_bytes, ctx.artifact(ctx.shipped, g).path.read_bytes(),
                                      f.meta["signature"], feeds, onnx_map)
        except Exception as e:  # a diagnosis that fails is reported, not fatal
            out[g] = {"error": one_line(e)}
    return out


def _attribution(ctx: BuildContext) -> dict[str, Any]:
    """Per graph, the INT8 ONNX model's tensors against the float model's on the calibration set,
    where the error originates first (edgeq.attribution). A diagnosis: if it cannot run, the report
    says why and the build goes on."""
    keys = ("onnx_float", "onnx_int8")
    return memo(ctx.cache, "attribution", lambda: _diagnosis_parts(ctx, keys), lambda: _measure_attribution(ctx))  # type: ignore[no-any-return]


def _measure_attribution(ctx: BuildContext) -> dict[str, Any]:
    from edgeq.attribution import attribute

    sets = ctx.result(CalibrationResult).sets
    out: dict[str, Any] = {}
    for g in (graph.name for graph in ctx.spec.graphs):
        try:
            out[g] = attribute(ctx.artifact("onnx_float", g).path, ctx.artifact("onnx_int8", g).path, iter(sets[g]))
        except Exception as e:  # a diagnosis that fails is reported, not fatal
            out[g] = {"error": one_line(e)}
    return out
