"""package: write the target's app-ready bundle into the staging folder.

Files: the shipped model (model.tflite), model.json (what an app needs to feed it), labels.txt,
report.json, report.md, and manifest.json (sha256 + bytes of every other file, of the source
model, of the calibration and eval data; target; tool versions). JSON is written with sorted keys
so that the same build gives the same bytes (report timings aside).
"""

from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeq import __version__
from edgeq.bundle.layout import ATTRIBUTION_PNG, MANIFEST, MODEL_JSON, RECIPE_JSON, REPORT_JSON, REPORT_MD, graph_file
from edgeq.context import BuildContext
from edgeq.hashing import sha256_file
from edgeq.precisions import precision
from edgeq.report import build_report, render_markdown
from edgeq.results import ConvertResult, ExportResult, PackageResult, PrecisionResult, QuantizeResult, ValidationResult

__all__ = ["STAGE", "TOOLS", "PackageStage", "file_entry", "write_json"]

# Distributions whose versions decide the bytes of a bundle.
ATTRIBUTION_LABELS = {"tflite_int8": "INT8 .tflite as converted (LiteRT)", "tflite_repaired": "repaired .tflite (LiteRT)"}
TOOLS = ("onnx", "onnxruntime", "onnxslim", "onnx2tf", "tensorflow-cpu", "tf-keras", "ai-edge-litert", "litert-quantizer",
         "numpy", "torch")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON with sorted keys (no NaN), ending in a newline."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")


def file_entry(root: Path, path: Path) -> dict[str, Any]:
    """A manifest entry: the file's path relative to ``root``, its SHA-256 and its size in bytes."""
    return {"path": path.relative_to(root).as_posix(), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def _tool_versions() -> dict[str, str]:
    out = {}
    for name in TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _layout(onnx_layout: str, perm: list[int]) -> str:
    return "".join(onnx_layout[i] for i in perm) if len(onnx_layout) == len(perm) else ""


def _graph_json(graph: Any, art: Any, file_name: str) -> dict[str, Any]:
    inputs = []
    for m in art.meta["inputs"]:
        s = graph.input(m["name"])
        inputs.append({
            "name": m["name"], "tensor": m["tflite_name"], "shape": m["shape"], "dtype": m["dtype"],
            "layout": _layout(s.layout, m["perm"]), "quantization": m["quantization"],
            "preprocessing": s.preprocessing, "onnx_shape": m["onnx_shape"], "onnx_axes": m["perm"],
        })
    # onnx_axes: for each axis of the .tflite tensor, the axis of the model's (ONNX) tensor it holds: what
    # an app needs to feed a recurrent state output back into its input, or to read a channels-last map.
    outputs = [{"name": m["name"], "tensor": m["tflite_name"], "shape": m["shape"], "dtype": m["dtype"],
                "quantization": m["quantization"], "onnx_shape": m["onnx_shape"], "onnx_axes": m["perm"]}
               for m in art.meta["outputs"]]
    return {"file": file_name, "signature": art.meta["signature"], "inputs": inputs, "outputs": outputs}


def _used(available: int, spec: Any) -> int:
    """How many calibration samples (or sentences) the build used: [data].calibration_samples caps it."""
    limit = spec.data.calibration_samples
    return available if limit is None else min(available, limit)


class PackageStage:
    """The bundle: model files, model.json, the task's files, report.json/.md, manifest.json."""

    name = "package"
    requires: tuple[str | type, ...] = (ExportResult, QuantizeResult, ConvertResult, PrecisionResult, ValidationResult)
    produces: tuple[str | type, ...] = (PackageResult,)

    def run(self, ctx: BuildContext) -> PackageResult:
        """Write every file of the bundle into ``ctx.bundle_dir``."""
        out = ctx.bundle_dir
        spec, target = ctx.spec, ctx.target
        export = ctx.result(ExportResult)
        single = len(spec.graphs) == 1
        graphs = {}
        for graph in spec.graphs:
            art = ctx.artifact(ctx.shipped, graph.name)
            name = graph_file(graph.name, target.model_file, single)
            shutil.copyfile(art.path, out / name)
            graphs[graph.name] = _graph_json(graph, art, name)
            # Inputs export froze into the graph: the values the model was built for (the app feeds none).
            graphs[graph.name]["frozen_inputs"] = export.graphs[graph.name].get("frozen_inputs", [])

        model_json: dict[str, Any] = {
            "name": spec.name,
            "format": target.format,
            "precision": ctx.precision,  # the rung shipped: edgeq precisions
            "precision_name": precision(ctx.precision).name,
            "io_dtype": target.io_dtype,
        }
        if single:
            model_json.update(next(iter(graphs.values())))
        else:
            model_json["graphs"] = graphs
        model_json["task"] = ctx.task.bundle_files(ctx, out)
        model_json["runtime"] = {
            "name": "LiteRT (TFLite runtime)", "threads": target.threads,
            "note": "dequantize int8 outputs with (q - zero_point) * scale; quantize int8 inputs with "
                    "round(x / scale) + zero_point",
        }
        repair = ctx.result(ValidationResult).repair
        if repair.get("recipe"):
            model_json["mixed_precision"] = {"recipe": RECIPE_JSON, "int16_ops": repair["cost"]["int16_ops"]}
            write_json(out / RECIPE_JSON, {**repair["recipe"], "try": repair["chosen"]})
        write_json(out / MODEL_JSON, model_json)
        validation = ctx.result(ValidationResult)
        from edgeq.plots import attribution_plot

        plotted = attribution_plot([*([("INT8 ONNX (onnxruntime)", validation.attribution)] if validation.attribution else []),
                                    *((ATTRIBUTION_LABELS.get(k, f"{ctx.precision} .tflite (LiteRT)"), v)
                                      for k, v in validation.attribution_tflite.items())],
                                   out / ATTRIBUTION_PNG)

        report = build_report(spec, target, export, ctx.result(QuantizeResult), ctx.result(ConvertResult),
                              validation, ctx.timings)
        report["rungs"] = ctx.result(PrecisionResult).facts()
        if plotted:
            report["attribution_plot"] = ATTRIBUTION_PNG
        write_json(out / REPORT_JSON, report)
        (out / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")

        files = [file_entry(out, p) for p in sorted(out.rglob("*")) if p.is_file()]
        source_files = spec.source_files
        manifest = {
            "generator": "edgeq",
            "edgeq_version": __version__,
            "passed": report["passed"],
            "target": {"name": target.name, "io_dtype": target.io_dtype},
            "files": files,
            "source_model": {
                "format": spec.format,
                "files": [{"name": p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size} for p in source_files],
            },
            "calibration_data": {"sha256": ctx.calibration.sha256(), "samples": _used(len(ctx.calibration), spec)},
            "eval_data": {"sha256": ctx.eval.sha256(), "samples": len(ctx.eval)},
            "tools": _tool_versions(),
        }
        write_json(out / MANIFEST, manifest)
        return PackageResult(report, tuple(f["path"] for f in files))


STAGE = PackageStage()
