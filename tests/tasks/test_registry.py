"""Every registered task through a tiny build: a new task is one module, one line in the registry,
and one tiny model here (the test below fails until it has one)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import DELETE, invoke_cli, make_model_dir
from tiny_detector import make_detector_dir

from edgeq.bundle.verify import verify
from edgeq.tasks import TASKS

Built = tuple[int, Path, str]  # exit code, bundle, stderr


def _classification(request: pytest.FixtureRequest, tmp_path: Path) -> Built:
    b = request.getfixturevalue("tiny_build")  # the PyTorch TinyNet, every android runtime
    return b.exit_code, b.out, b.stderr


def _translation(request: pytest.FixtureRequest, tmp_path: Path) -> Built:
    b = request.getfixturevalue("translation_build")  # the tiny encoder-decoder, every android runtime
    return b.returncode, b.out, b.stderr


def _generic(request: pytest.FixtureRequest, tmp_path: Path) -> Built:
    """TinyNet as an ONNX file with no labels: tensors in, tensors out (host runtimes)."""
    model_dir = make_model_dir(tmp_path, "onnx", task={"kind": "generic", "labels": DELETE})
    (model_dir / "data" / "eval" / "labels.npy").unlink()
    out = tmp_path / "dist" / "generic"
    r = invoke_cli(["build", str(model_dir), "--target", "android", "--out", str(out), "-r", "litert", "-r", "litert-ref"])
    return r.exit_code, out, r.stderr


def _detection(request: pytest.FixtureRequest, tmp_path: Path) -> Built:
    """The tiny YOLO-style detector (tests/tiny_detector.py) with normalized boxes (host runtimes)."""
    model_dir = make_detector_dir(tmp_path, pixels=False, task={"kind": "detection", "output": "output0"})
    out = tmp_path / "dist" / "detector"
    r = invoke_cli(["build", str(model_dir), "--target", "android", "--out", str(out), "-r", "litert", "-r", "litert-ref"])
    return r.exit_code, out, r.stderr


TINY_BUILDS: dict[str, Callable[[pytest.FixtureRequest, Path], Built]] = {
    "classification": _classification,
    "detection": _detection,
    "generic": _generic,
    "translation": _translation,
}


def test_every_registered_task_has_a_tiny_build() -> None:
    assert set(TINY_BUILDS) == set(TASKS), "give the new task a tiny model in TINY_BUILDS"


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_every_registered_task_builds_a_verified_bundle(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    code, out, stderr = TINY_BUILDS[kind](request, tmp_path)
    assert code == 0, stderr
    report: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    model: dict[str, Any] = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert report["task"] == kind and model["task"]["kind"] == kind and report["passed"] is True
    cls = TASKS[kind]
    # The task's evaluation ran on every runtime of the shipped artifact: tensor metrics of every
    # graph, and its own metrics (the columns it declares) wherever it has any.
    shipped = report["artifacts"]["tflite_int8"]["runtimes"]
    assert set(shipped) == set(report["target"]["runtimes"])
    graphs = set(model.get("graphs") or {"model": None})
    for entry in shipped.values():
        assert set(entry["outputs"]) == graphs
        if "task" in entry:
            assert {c.key for c in cls.columns if c.key in entry["task"]}, (kind, entry["task"])
    # Where the INT8 error comes from, measured for every graph (a diagnosis that fails says so instead).
    assert set(report["attribution"]) == graphs
    assert all(isinstance(rows, list) and rows for rows in report["attribution"].values()), report["attribution"]
    tflite = report["attribution_tflite"]["tflite_int8"]  # the shipped .tflite against the float32 .tflite
    assert set(tflite) == graphs and all(isinstance(rows, list) and rows for rows in tflite.values()), tflite
    assert report["attribution_plot"] == "attribution.png" and (out / "attribution.png").read_bytes()[:4] == b"\x89PNG"
    # The report speaks the task's language, and the bundle is what the manifest says.
    md = (out / "report.md").read_text(encoding="utf-8")
    assert all(f" {c.title} " in md for c in cls.columns)
    findings, _ = verify(out)
    assert findings == []
