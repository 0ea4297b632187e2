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
* Gates are evaluated on the shipped artifact (the INT8 .tflite), once per validating runtime for
  the metrics that depend on the runtime (edgeq.gates).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from edgeq.artifacts import Artifact
from edgeq.attribution import MAX_SAMPLES
from edgeq.context import BuildContext, Evaluation, Pair
from edgeq.errors import one_line
from edgeq.execution import DecodeJob, FeedSet, Runtime, Work
from edgeq.gates import evaluate
from edgeq.results import CalibrationResult, ConvertResult, ValidationResult
from edgeq.runtimes import RUNTIMES, open_runtime, start_all, stop_all
from edgeq.tflite_inspect import inspect_tflite

__all__ = ["SHIPPED", "STAGE", "VARIANTS", "ValidateStage", "check", "validation_pairs"]

SHIPPED = "tflite_int8"
REFERENCE = ("onnx_float", "onnxruntime")
VARIANTS = ("onnx_int8", "tflite_float32", SHIPPED)


def validation_pairs(ctx: BuildContext) -> list[Pair]:
    """(artifact, runtime) pairs: the shipped artifact on every runtime of the target, every other
    variant on the first runtime that runs its format."""
    pairs: list[Pair] = []
    for key in VARIANTS:
        fmt = next(iter(ctx.artifacts[key].values())).format
        names = ctx.target.runtimes if key == SHIPPED else [r for r, f in RUNTIMES.items() if f.format == fmt][:1]
        pairs += [(key, rt) for rt in names if (key, rt) not in pairs]
    return pairs


class ValidateStage:
    """Every artifact on its runtimes against the float reference; the gates."""

    name = "validate"
    requires: tuple[str | type, ...] = ("onnx_float", "onnx_int8", "tflite_float32", SHIPPED, CalibrationResult,
                                        ConvertResult)
    produces: tuple[str | type, ...] = (ValidationResult,)

    def run(self, ctx: BuildContext) -> ValidationResult:
        """Validate on every runtime; when a gate fails, repair (edgeq.repair) and validate the repair."""
        result = check(ctx, validation_pairs(ctx))
        attribution = _attribution(ctx)
        attribution_tflite = {"tflite_int8": _attribution_tflite(ctx)}
        repaired: dict[str, Any] = {}
        if not result.passed and ctx.spec.quantization.repair:
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
        return replace(result, attribution=attribution, attribution_tflite=attribution_tflite, repair=repaired)


STAGE = ValidateStage()


def check(ctx: BuildContext, pairs: list[Pair]) -> ValidationResult:
    """Run the reference and every (artifact, runtime) pair over the eval set; describe and gate."""
    threads = ctx.target.threads
    graphs = [g.name for g in ctx.spec.graphs]
    # each runtime's own folder, and the recorded feeds; a new one for every check (repair checks again)
    folder = next(f for k in range(1, 10_000) if not (f := ctx.build_dir / ("runtimes" if k == 1 else f"runtimes-{k}")).exists())

    def opened(key: str, rt: str) -> Runtime:
        return open_runtime(rt, ctx.artifacts[key], threads, folder / f"{key}-{rt.replace(':', '-')}")

    reference = opened(*REFERENCE)
    runners = {(key, rt): opened(key, rt) for key, rt in pairs}
    everyone = [reference, *runners.values()]

    def start(feeds: dict[str, FeedSet], decode: DecodeJob | None) -> None:
        start_all(everyone, Work(feeds, decode, folder / "feeds"))

    try:
        found = ctx.task.evaluate(Evaluation(ctx, reference, runners, start, SHIPPED))
    finally:
        stop_all(everyone)

    ref_entry = {"artifact": REFERENCE[0], **reference.describe(), "metrics": found.reference, "samples": len(ctx.eval)}
    artifacts: dict[str, Any] = {}
    for key in (REFERENCE[0], *VARIANTS):
        arts = ctx.artifacts[key]
        first = arts[graphs[0]]
        artifacts[key] = {
            "format": first.format, "precision": first.precision,
            "files": {g: {"file": arts[g].path.name, "bytes": arts[g].bytes} for g in graphs},
            "bytes": sum(arts[g].bytes for g in graphs), "runtimes": {},
        }
    for (key, rt_name), rt in runners.items():
        entry: dict[str, Any] = {"describe": rt.describe(), "outputs": found.tensors[(key, rt_name)]}
        if (key, rt_name) in found.task:
            entry["task"] = found.task[(key, rt_name)]
        artifacts[key]["runtimes"][rt_name] = entry
    conv = ctx.result(ConvertResult).graphs
    for key in ("tflite_float32", SHIPPED):
        artifacts[key]["inspection"] = {g: inspect_tflite(ctx.artifact(key, g).path) for g in graphs}
    fallback = {g: conv[g]["float_fallback"] for g in graphs if conv.get(g, {}).get("float_fallback")}
    if fallback:
        artifacts[SHIPPED]["float_fallback"] = fallback
    if found.parity:
        artifacts[SHIPPED]["parity"] = found.parity

    gates = evaluate(ctx.gates, ctx.spec.task.kind, ref_entry["metrics"], artifacts[SHIPPED], SHIPPED)
    return ValidationResult(ref_entry, artifacts, tuple(gates), all(g["passed"] for g in gates))


def _attribution_tflite(ctx: BuildContext) -> dict[str, Any]:
    """Per graph, the shipped .tflite's tensors, dequantized, against the float32 .tflite's on the
    calibration set (edgeq.attribution.attribute_tflite); a diagnosis, as ``_attribution``."""
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
            out[g] = attribute_tflite(float_bytes, ctx.artifact(SHIPPED, g).path.read_bytes(),
                                      f.meta["signature"], feeds, onnx_map)
        except Exception as e:  # a diagnosis that fails is reported, not fatal
            out[g] = {"error": one_line(e)}
    return out


def _attribution(ctx: BuildContext) -> dict[str, Any]:
    """Per graph, the INT8 ONNX model's tensors against the float model's on the calibration set,
    where the error originates first (edgeq.attribution). A diagnosis: if it cannot run, the report
    says why and the build goes on."""
    from edgeq.attribution import attribute

    sets = ctx.result(CalibrationResult).sets
    out: dict[str, Any] = {}
    for g in (graph.name for graph in ctx.spec.graphs):
        try:
            out[g] = attribute(ctx.artifact("onnx_float", g).path, ctx.artifact("onnx_int8", g).path, iter(sets[g]))
        except Exception as e:  # a diagnosis that fails is reported, not fatal
            out[g] = {"error": one_line(e)}
    return out
