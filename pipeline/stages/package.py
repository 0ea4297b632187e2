"""package: write the target's app-ready bundle into the staging folder.

Files: the shipped model (model.tflite), model.json (what an app needs to feed it), labels.txt,
report.json, report.md, and manifest.json (sha256 + bytes of every other file, of the source
model, of the calibration and eval data; target; tool versions). JSON is written with sorted keys
so that the same build gives the same bytes (report timings aside).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeq import __version__
from edgeq.context import BuildContext
from edgeq.report import build_report, render_markdown
from edgeq.stages import StageResult

__all__ = ["STAGE", "PackageStage", "TOOLS", "file_entry", "write_json"]

# Distributions whose versions decide the bytes of a bundle.
TOOLS = ("onnx", "onnxruntime", "onnxslim", "onnx2tf", "tensorflow-cpu", "tf-keras", "ai-edge-litert", "numpy", "torch")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_entry(root: Path, path: Path) -> dict[str, Any]:
    return {"path": path.relative_to(root).as_posix(), "sha256": _sha256(path), "bytes": path.stat().st_size}


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


class PackageStage:
    name = "package"
    requires = ("tflite_int8",)
    produces: tuple[str, ...] = ()

    def run(self, ctx: BuildContext) -> StageResult:
        out = ctx.bundle_dir
        spec, target = ctx.spec, ctx.target
        art = ctx.artifacts["tflite_int8"]
        shutil.copyfile(art.path, out / target.model_file)

        labels_name = None
        if spec.task.labels is not None:
            labels_name = "labels.txt"
            lines = [ln.strip() for ln in spec.task.labels.read_text(encoding="utf-8").splitlines() if ln.strip()]
            (out / labels_name).write_text("\n".join(lines) + "\n", encoding="utf-8")

        inputs = []
        for m in art.meta["inputs"]:
            s = spec.input(m["name"])
            inputs.append({
                "name": m["name"], "tensor": m["tflite_name"], "shape": m["shape"], "dtype": m["dtype"],
                "layout": _layout(s.layout, m["perm"]), "quantization": m["quantization"],
                "preprocessing": s.preprocessing,
            })
        outputs = [{"name": m["name"], "tensor": m["tflite_name"], "shape": m["shape"], "dtype": m["dtype"],
                    "quantization": m["quantization"]} for m in art.meta["outputs"]]
        model_json = {
            "name": spec.name,
            "file": target.model_file,
            "format": target.format,
            "precision": target.precision,
            "io_dtype": target.io_dtype,
            "signature": art.meta["signature"],
            "inputs": inputs,
            "outputs": outputs,
            "task": {"kind": spec.task.kind, "output": spec.task.output, "labels": labels_name},
            "runtime": {"name": "LiteRT (TFLite runtime)", "threads": target.threads,
                        "note": "dequantize int8 outputs with (q - zero_point) * scale; quantize int8 inputs with "
                                "round(x / scale) + zero_point"},
        }
        write_json(out / "model.json", model_json)

        report = build_report(ctx)
        write_json(out / "report.json", report)
        (out / "report.md").write_text(render_markdown(report), encoding="utf-8")

        files = [file_entry(out, p) for p in sorted(out.rglob("*")) if p.is_file()]
        source_files = [spec.file] + ([spec.weights] if spec.weights else [])
        manifest = {
            "generator": "edgeq",
            "edgeq_version": __version__,
            "passed": report["passed"],
            "target": {"name": target.name, "io_dtype": target.io_dtype},
            "files": files,
            "source_model": {
                "format": spec.format,
                "files": [{"name": p.name, "sha256": _sha256(p), "bytes": p.stat().st_size} for p in source_files],
            },
            "calibration_data": {"sha256": ctx.calibration.sha256(), "samples": len(ctx.calibration)},
            "eval_data": {"sha256": ctx.eval.sha256(), "samples": len(ctx.eval)},
            "tools": _tool_versions(),
        }
        write_json(out / "manifest.json", manifest)
        ctx.results["report"] = report
        return StageResult((), {"files": [f["path"] for f in files]})


STAGE = PackageStage()
