"""validate: run the float reference and every artifact over the whole eval set; apply the gates.

Rules:

* The reference is the float ONNX model on onnxruntime. Every artifact runs on the runtime(s)
  that can run it: the INT8 ONNX on onnxruntime, the float32 .tflite on LiteRT, and the shipped
  INT8 .tflite on every runtime the target names.
* One pass over the eval set, all runtimes in lockstep, metrics accumulated per sample: memory does
  not grow with the eval set.
* Per artifact and runtime: the task metrics (classification: top-1 accuracy, top-1 agreement) and
  the tensor metrics of every output (cosine, SQNR, max/mean abs error of dequantized outputs).
* Gates are evaluated on the shipped artifact (the INT8 .tflite), once per validating runtime for
  the metrics that depend on the runtime.
"""

from __future__ import annotations

from typing import Any

from edgeq.config import GATE_DEFINITIONS
from edgeq.context import BuildContext
from edgeq.runtimes import FORMATS, create_runtime
from edgeq.stages import StageResult
from edgeq.tasks import ClassificationMetrics, TensorMetrics
from edgeq.tflite_inspect import inspect_tflite

__all__ = ["STAGE", "ValidateStage", "SHIPPED", "evaluate_gate"]

SHIPPED = "tflite_int8"


def evaluate_gate(name: str, value: float | None, limit: float) -> dict[str, Any]:
    """One gate result; ``margin`` is how far inside (>= 0) or outside (< 0) the limit the value is."""
    comparison, unit, _ = GATE_DEFINITIONS[name]
    if value is None:
        return {"name": name, "value": None, "limit": limit, "comparison": comparison, "unit": unit,
                "passed": False, "margin": None}
    passed = value <= limit if comparison == "max" else value >= limit
    margin = (limit - value) if comparison == "max" else (value - limit)
    return {"name": name, "value": value, "limit": limit, "comparison": comparison, "unit": unit,
            "passed": bool(passed), "margin": margin}


class ValidateStage:
    name = "validate"
    requires = ("onnx_float", "onnx_int8", "tflite_float32", SHIPPED)
    produces: tuple[str, ...] = ()

    def run(self, ctx: BuildContext) -> StageResult:
        threads = ctx.target.threads
        ref = create_runtime("onnxruntime", threads=threads)
        ref.load(ctx.artifacts["onnx_float"])

        pairs: list[tuple[str, str]] = []
        for key in ("onnx_int8", "tflite_float32", SHIPPED):
            art = ctx.artifacts[key]
            names = ctx.target.runtimes if key == SHIPPED else [r for r, f in FORMATS.items() if f == art.format][:1]
            pairs += [(key, rt) for rt in names if (key, rt) not in pairs]
        runtimes = {}
        for key, rt_name in pairs:
            rt = create_runtime(rt_name, threads=threads)
            rt.load(ctx.artifacts[key])
            runtimes[(key, rt_name)] = rt

        classify = ctx.spec.task.kind == "classification"
        task_out = ctx.spec.task.output
        n_classes = _count_labels(ctx)
        batch = ctx.spec.inputs[0].shape[0]
        labels = ctx.eval.sample_labels() if classify else None
        ref_task = ClassificationMetrics(n_classes) if classify else None
        task_acc = {p: ClassificationMetrics(n_classes) for p in pairs} if classify else {}
        outputs = ctx.artifacts["onnx_float"].meta["outputs"]
        tensor_acc = {p: {o: TensorMetrics() for o in outputs} for p in pairs}

        for k, feeds in enumerate(ctx.eval):
            ref_out = ref.run(feeds)
            y = labels[k * batch : (k + 1) * batch] if labels is not None else None
            if ref_task is not None:
                ref_task.update(ref_out[task_out], ref_out[task_out], y)
            for p, rt in runtimes.items():
                out = rt.run(feeds)
                for o in outputs:
                    tensor_acc[p][o].update(ref_out[o], out[o])
                if classify:
                    task_acc[p].update(ref_out[task_out], out[task_out], y)

        reference = {"artifact": "onnx_float", **ref.describe(),
                     "metrics": ref_task.result() if ref_task else {}, "samples": len(ctx.eval)}
        artifacts: dict[str, Any] = {}
        for key in ("onnx_float", "onnx_int8", "tflite_float32", SHIPPED):
            art = ctx.artifacts[key]
            artifacts[key] = {"file": art.path.name, "format": art.format, "precision": art.precision,
                              "bytes": art.bytes, "runtimes": {}}
        for (key, rt_name), rt in runtimes.items():
            entry: dict[str, Any] = {"describe": rt.describe(),
                                     "outputs": {o: tensor_acc[(key, rt_name)][o].result() for o in outputs}}
            if classify:
                entry["task"] = task_acc[(key, rt_name)].result()
            artifacts[key]["runtimes"][rt_name] = entry
        for key in ("tflite_float32", SHIPPED):
            artifacts[key]["inspection"] = inspect_tflite(ctx.artifacts[key].path)

        gates = self._gates(ctx, reference, artifacts)
        validation = {"reference": reference, "artifacts": artifacts, "gates": gates,
                      "passed": all(g["passed"] for g in gates)}
        ctx.results["validation"] = validation
        return StageResult((), {"passed": validation["passed"]})

    def _gates(self, ctx: BuildContext, reference: dict[str, Any], artifacts: dict[str, Any]) -> list[dict[str, Any]]:
        shipped = artifacts[SHIPPED]
        ref_acc = reference["metrics"].get("top1_accuracy")
        results = []
        for g in ctx.gates:
            if g.name in ("accuracy_drop", "top1_agreement"):
                if ctx.spec.task.kind != "classification":
                    continue  # classification gates do not apply to this task
                for rt_name, entry in shipped["runtimes"].items():
                    task = entry["task"]
                    value = (ref_acc - task["top1_accuracy"]) * 100.0 if g.name == "accuracy_drop" else task["top1_agreement"]
                    results.append({**evaluate_gate(g.name, value, g.limit), "artifact": SHIPPED,
                                    "runtime": rt_name, "source": g.source})
            elif g.name == "output_cosine":
                for rt_name, entry in shipped["runtimes"].items():
                    value = min(o["cosine"] for o in entry["outputs"].values())
                    results.append({**evaluate_gate(g.name, value, g.limit), "artifact": SHIPPED,
                                    "runtime": rt_name, "source": g.source})
            elif g.name == "int8_compute_ops":
                value = shipped["inspection"]["int8_compute_fraction"]
                results.append({**evaluate_gate(g.name, value, g.limit), "artifact": SHIPPED, "runtime": None,
                                "source": g.source})
            elif g.name == "model_bytes":
                results.append({**evaluate_gate(g.name, float(shipped["bytes"]), g.limit), "artifact": SHIPPED,
                                "runtime": None, "source": g.source})
        return results


STAGE = ValidateStage()


def _count_labels(ctx: BuildContext) -> int | None:
    path = ctx.spec.task.labels
    if path is None:
        return None
    return len([ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()])

