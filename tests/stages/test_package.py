"""package stage: the app-ready bundle, model.json, the report files and the manifest."""

from __future__ import annotations

import hashlib
import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from bad_inputs import remove
from conftest import (
    CLASS_NAMES,
    DELETE,
    INPUT,
    N_CALIBRATION,
    N_EVAL,
    NUM_CLASSES,
    OUTPUT,
    ApiBuild,
    CliBuild,
    context_with_artifacts,
    make_model_dir,
    run_stage,
)

from edgeq import __version__
from edgeq.config import load_model_spec
from edgeq.data import ArrayDataset
from edgeq.report import render_markdown
from edgeq.results import PackageResult
from edgeq.stages.package import STAGE, file_entry, write_json
from edgeq.stages.validate import STAGE as VALIDATE


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_model_json_says_how_to_feed_the_model(tiny_build: CliBuild) -> None:
    mj = _json(tiny_build.out / "model.json")
    assert {k: mj[k] for k in ("name", "file", "format", "precision", "io_dtype", "signature")} == {
        "name": "tiny",
        "file": "model.tflite",
        "format": "tflite",
        "precision": "int8",
        "io_dtype": "float32",
        "signature": "serving_default",
    }
    (inp,) = mj["inputs"]
    assert (inp["name"], inp["shape"], inp["dtype"], inp["layout"], inp["quantization"]) == (
        INPUT,
        [1, 8, 8, 3],
        "float32",
        "NHWC",
        None,
    )
    assert inp["preprocessing"] == {
        "scale": 1.0,
        "mean": [0.0],
        "std": [1.0],
    }  # passed through from edgeq.toml
    assert isinstance(inp["tensor"], str) and inp["tensor"]
    (out,) = mj["outputs"]
    assert (out["name"], out["shape"], out["dtype"], out["quantization"]) == (
        OUTPUT,
        [1, NUM_CLASSES],
        "float32",
        None,
    )
    assert mj["task"] == {"kind": "classification", "output": OUTPUT, "labels": "labels.txt"}
    assert mj["runtime"]["threads"] == 1


def test_labels_txt_lists_the_class_names(tiny_build: CliBuild) -> None:
    assert (tiny_build.out / "labels.txt").read_text(encoding="utf-8") == "\n".join(CLASS_NAMES) + "\n"


def test_manifest_records_sources_data_and_tools(tiny_build: CliBuild) -> None:
    m = _json(tiny_build.out / "manifest.json")
    assert (m["generator"], m["edgeq_version"], m["passed"]) == ("edgeq", __version__, True)
    assert m["target"] == {"name": "android", "io_dtype": "float32"}
    sources = {f["name"]: f for f in m["source_model"]["files"]}
    assert m["source_model"]["format"] == "pytorch" and set(sources) == {"model.py", "weights.safetensors"}
    for name, entry in sources.items():
        data = (tiny_build.model_dir / name).read_bytes()
        assert (entry["sha256"], entry["bytes"]) == (hashlib.sha256(data).hexdigest(), len(data))
    spec = load_model_spec(tiny_build.model_dir)
    cal = ArrayDataset.open(spec.data.calibration, spec.inputs, "calibration")
    ev = ArrayDataset.open(spec.data.eval, spec.inputs, "eval", want_labels=True)
    assert m["calibration_data"] == {"sha256": cal.sha256(), "samples": N_CALIBRATION}
    assert m["eval_data"] == {"sha256": ev.sha256(), "samples": N_EVAL}
    for dist in ("onnx", "onnxruntime", "onnx2tf", "tensorflow-cpu", "ai-edge-litert", "numpy", "torch"):
        assert m["tools"][dist] == metadata.version(dist)


def test_report_files_hold_the_same_report(onnx_int8_build: ApiBuild) -> None:
    report = onnx_int8_build.outcome.report
    assert (onnx_int8_build.out / "report.md").read_text(encoding="utf-8") == render_markdown(report)
    assert _json(onnx_int8_build.out / "report.json") == report
    assert report["model"]["name"] == "tiny" and report["task"] == "classification"
    assert report["size"]["shipped_tflite_bytes"] == (onnx_int8_build.out / "model.tflite").stat().st_size


def test_json_files_have_sorted_keys_and_end_with_a_newline(tiny_build: CliBuild) -> None:
    for name in ("model.json", "report.json", "manifest.json"):
        text = (tiny_build.out / name).read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n", name


def test_write_json_refuses_non_finite_numbers(tmp_path: Path) -> None:
    write_json(tmp_path / "ok.json", {"b": 1, "a": [1.5]})
    assert (tmp_path / "ok.json").read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            write_json(tmp_path / "bad.json", {"x": bad})


def test_file_entry(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.bin").write_bytes(b"abc")
    assert file_entry(tmp_path, tmp_path / "sub" / "f.bin") == {
        "path": "sub/f.bin",
        "sha256": hashlib.sha256(b"abc").hexdigest(),
        "bytes": 3,
    }


# --- the stage alone, on the artifacts kept from the shared ONNX build ------------------------------


def _package(model_dir: Path, build: ApiBuild, work: Path) -> Any:
    ctx = context_with_artifacts(model_dir, build.keep, work)
    run_stage(VALIDATE, ctx)
    run_stage(STAGE, ctx)
    return ctx


def test_labels_are_written_one_clean_name_per_line(onnx_int8_build: ApiBuild, tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "onnx")
    (model_dir / "labels.txt").write_text("  circle \n\nsquare\r\n stripe\n dot\n\n", encoding="utf-8")
    ctx = _package(model_dir, onnx_int8_build, tmp_path / "work")
    assert (ctx.bundle_dir / "labels.txt").read_text(encoding="utf-8") == "circle\nsquare\nstripe\ndot\n"
    assert ctx.result(PackageResult).report["model"]["format"] == "onnx"


def test_generic_model_bundle_has_no_labels(onnx_int8_build: ApiBuild, tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "onnx", task={"kind": "generic", "labels": DELETE})
    remove("data/eval/labels.npy")(model_dir)
    ctx = _package(model_dir, onnx_int8_build, tmp_path / "work")
    files = sorted(p.name for p in ctx.bundle_dir.iterdir())
    assert files == ["attribution.png", "manifest.json", "model.json", "model.tflite", "report.json", "report.md"]
    mj = _json(ctx.bundle_dir / "model.json")
    assert mj["task"] == {"kind": "generic", "output": OUTPUT, "labels": None}
    assert (
        mj["io_dtype"] == "float32" and mj["inputs"][0]["dtype"] == "int8"
    )  # the artifact decides the tensors
    manifest = _json(ctx.bundle_dir / "manifest.json")
    assert [f["path"] for f in manifest["files"]] == [f for f in files if f != "manifest.json"]
    assert manifest["source_model"]["files"][0]["name"] == "model.onnx"
    md = (ctx.bundle_dir / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# edgeq report: tiny for android") and "accuracy_drop" not in md
