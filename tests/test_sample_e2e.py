"""End to end: `edgeq build sample_models/digits --target android`, run as a user runs it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_models" / "digits"
EDGEQ = [sys.executable, "-m", "edgeq"]


@pytest.fixture(scope="module")
def sample_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One build of the sample, as `make demo` runs it, with --json. That two builds give the same
    bytes is tested on a smaller model (tests/test_build.py: two processes side by side)."""
    out = tmp_path_factory.mktemp("digits") / "bundle"
    proc = subprocess.run([*EDGEQ, "build", str(SAMPLE), "--target", "android", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_bundle_files_and_manifest(sample_build: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    bundle = sample_build[0]
    names = sorted(p.name for p in bundle.iterdir())
    assert names == ["attribution.png", "labels.txt", "manifest.json", "model.json", "model.tflite", "report.json", "report.md"]
    assert (bundle / "attribution.png").read_bytes()[:4] == b"\x89PNG"  # SQNR along the graph, per quantized artifact
    assert "![SQNR along the graph](attribution.png)" in (bundle / "report.md").read_text(encoding="utf-8")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["generator"] == "edgeq" and manifest["target"]["name"] == "android"
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == set(names) - {"manifest.json"}
    for path, entry in listed.items():
        data = (bundle / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["bytes"]
    assert {"onnx", "onnxruntime", "onnx2tf", "tensorflow-cpu", "ai-edge-litert"} <= set(manifest["tools"])


def test_quality_gates_of_the_sample(sample_build: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    report = json.loads((sample_build[0] / "report.json").read_text())
    assert report["passed"] is True
    ref_acc = report["reference"]["metrics"]["top1_accuracy"]
    assert ref_acc >= 0.97
    shipped = report["artifacts"]["tflite_int8"]
    acc = shipped["runtimes"]["litert"]["task"]["top1_accuracy"]
    assert (ref_acc - acc) * 100 <= 1.0
    assert report["size"]["shipped_to_float32_ratio"] <= 0.40
    breakdown = report["size"]["shipped_tflite_breakdown"]
    assert sum(breakdown.values()) == shipped["bytes"]
    assert list(shipped["inspection"]) == ["model"]
    insp = shipped["inspection"]["model"]
    assert insp["compute_ops"] > 0 and insp["non_int8_compute_ops"] == []
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(insp["ops"])
    names = {g["name"] for g in report["gates"]}
    assert names == {"accuracy_drop", "top1_agreement", "runtime_top1_agreement", "output_cosine", "int8_compute_ops",
                     "model_bytes"}


def test_json_flag_prints_the_report(sample_build: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    bundle, proc = sample_build
    printed = json.loads(proc.stdout)
    assert printed == json.loads((bundle / "report.json").read_text())


def test_validated_on_host_reference_and_two_emulated_arm64_cores(
    sample_build: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    bundle = sample_build[0]
    report = json.loads((bundle / "report.json").read_text())
    runtimes = ["litert", "litert-ref", "litert-arm64:cortex-a53", "litert-arm64:cortex-a76"]
    assert sorted(report["artifacts"]["tflite_int8"]["runtimes"]) == sorted(runtimes)
    md = (bundle / "report.md").read_text()
    for rt in runtimes:
        assert f"| INT8 .tflite (shipped) | {report['artifacts']['tflite_int8']['bytes']} | {rt} (" in md
    for rt in runtimes[2:]:
        gate = next(g for g in report["gates"] if g["name"] == "runtime_top1_agreement" and g["runtime"] == rt)
        assert gate["passed"] and gate["value"] >= 0.99
        assert report["artifacts"]["tflite_int8"]["runtimes"][rt]["describe"]["guest"]["machine"] == "aarch64"
