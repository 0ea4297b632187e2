"""validate stage: the float reference against every artifact, and the gates."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bad_inputs import remove
from conftest import (
    DELETE,
    N_EVAL,
    NUM_CLASSES,
    OUTPUT,
    ApiBuild,
    context_with_artifacts,
    invoke_cli,
    make_model_dir,
    run_stage,
)

from edgeq.config import load_target
from edgeq.gates import GATES, GateLimit, evaluate_gate
from edgeq.results import ValidationResult
from edgeq.stages.validate import STAGE


@pytest.mark.parametrize(
    ("name", "value", "limit", "passed", "margin"),
    [
        ("accuracy_drop", 0.5, 1.0, True, 0.5),  # max gate: value <= limit
        ("accuracy_drop", 1.0, 1.0, True, 0.0),
        ("accuracy_drop", 1.5, 1.0, False, -0.5),
        ("model_bytes", 4000.0, 100.0, False, -3900.0),
        ("top1_agreement", 0.99, 0.98, True, 0.01),  # min gate: value >= limit
        ("top1_agreement", 0.98, 0.98, True, 0.0),
        ("top1_agreement", 0.90, 0.98, False, -0.08),
        ("int8_compute_ops", 0.5, 1.0, False, -0.5),
        ("output_cosine", 0.995, 0.99, True, 0.005),
    ],
)
def test_evaluate_gate(name: str, value: float, limit: float, passed: bool, margin: float) -> None:
    g = evaluate_gate(name, value, limit)
    assert g["passed"] is passed
    assert g["margin"] == pytest.approx(margin)
    assert (g["name"], g["value"], g["limit"]) == (name, value, limit)
    assert g["comparison"] == (
        "min" if name in ("top1_agreement", "int8_compute_ops", "output_cosine") else "max"
    )
    assert g["unit"] == {"accuracy_drop": "points", "model_bytes": "bytes", "output_cosine": "cosine"}.get(
        name, "fraction"
    )


def test_gate_without_a_value_fails_without_margin() -> None:
    g = evaluate_gate("top1_agreement", None, 0.98)
    assert g["passed"] is False and g["margin"] is None and g["value"] is None


# --- the shared PyTorch build's report -------------------------------------------------------------


def test_reference_is_the_float_onnx_on_onnxruntime(tiny_report: dict[str, Any]) -> None:
    ref = tiny_report["reference"]
    assert (ref["artifact"], ref["runtime"], ref["provider"], ref["threads"]) == (
        "onnx_float",
        "onnxruntime",
        "CPUExecutionProvider",
        1,
    )
    assert ref["samples"] == N_EVAL
    # the eval labels are the float model's own top-1
    assert ref["metrics"] == {"top1_accuracy": 1.0, "top1_agreement": 1.0, "samples": N_EVAL}


def test_every_artifact_runs_on_its_runtime(tiny_report: dict[str, Any]) -> None:
    arts = tiny_report["artifacts"]
    assert list(arts) == ["onnx_float", "onnx_int8", "tflite_float32", "tflite_int8"]
    assert {k: list(a["runtimes"]) for k, a in arts.items()} == {
        "onnx_float": [],
        "onnx_int8": ["onnxruntime"],
        "tflite_float32": ["litert"],
        # report.json sorts keys: litert, the arm64 profiles, litert-ref
        "tflite_int8": ["litert", "litert-arm64:cortex-a53", "litert-arm64:cortex-a76", "litert-ref"],
    }
    for key, art in arts.items():
        assert art["files"] == {"model": {"file": f"model.{key.split('_')[1]}.{art['format']}",
                                          "bytes": art["bytes"]}}, key
        assert art["bytes"] > 0
    for key in ("onnx_int8", "tflite_float32", "tflite_int8"):
        entry = next(iter(arts[key]["runtimes"].values()))
        assert list(entry["outputs"]) == ["model"]
        out = entry["outputs"]["model"][OUTPUT]
        assert out["elements"] == N_EVAL * 4
        assert entry["task"]["samples"] == N_EVAL
        assert entry["task"]["top1_agreement"] == 1.0, key
    f32 = arts["tflite_float32"]["runtimes"]["litert"]["outputs"]["model"][OUTPUT]
    assert f32["cosine"] > 0.99999 and (f32["sqnr_db"] is None or f32["sqnr_db"] > 60)
    i8 = arts["tflite_int8"]["runtimes"]["litert"]["outputs"]["model"][OUTPUT]
    assert 0.99 < i8["cosine"] <= 1.0 + 1e-9
    assert i8["identical"] is False and f32["identical"] is (f32["sqnr_db"] is None)
    assert 20 < i8["sqnr_db"] < f32["sqnr_db"]
    assert arts["tflite_int8"]["runtimes"]["litert"]["describe"]["kernels"].startswith("XNNPACK")


def test_target_gates_all_pass_on_the_shipped_artifact(tiny_report: dict[str, Any]) -> None:
    # per-runtime gates appear once per runtime; these checks read the first runtime's (host LiteRT)
    gates: dict[str, Any] = {}
    for g in tiny_report["gates"]:
        gates.setdefault(g["name"], g)
    # bleu_drop and runtime_bleu_diff are translation gates: the target names them, a classifier skips them;
    # output_slice_levels applies to outputs cut into slices (TinyNet's logits are not)
    assert "bleu_drop" in load_target("android").gates
    skipped = (*(n for n, g in GATES.items() if g.tasks and "classification" not in g.tasks), "runtime_bleu_diff",
               "output_slice_levels")
    assert list(gates) == [n for n in GATES if n in load_target("android").gates and n not in skipped]
    assert gates["runtime_top1_agreement"]["runtime"] == "litert-ref"
    assert all(
        g["passed"] and g["source"] == "target" and g["artifact"] == "tflite_int8" for g in gates.values()
    )
    assert (gates["accuracy_drop"]["value"], gates["accuracy_drop"]["runtime"]) == (0.0, "litert")
    assert gates["top1_agreement"]["value"] == 1.0
    assert gates["int8_compute_ops"]["value"] == 1.0 and gates["int8_compute_ops"]["runtime"] is None
    assert gates["model_bytes"]["value"] == tiny_report["artifacts"]["tflite_int8"]["bytes"]
    shipped = tiny_report["artifacts"]["tflite_int8"]["runtimes"]["litert"]
    assert gates["output_cosine"]["value"] == min(o["cosine"] for o in shipped["outputs"]["model"].values())
    assert gates["output_cosine"]["runtime"] == "litert"
    assert tiny_report["passed"] is True


# --- the stage alone, on the artifacts kept from the shared ONNX build ------------------------------


def test_gate_limits_in_force_decide_pass_and_margin(onnx_int8_build: ApiBuild, tmp_path: Path) -> None:
    ctx = context_with_artifacts(onnx_int8_build.model_dir, onnx_int8_build.keep, tmp_path)
    ctx.gates = [
        GateLimit("accuracy_drop", -1.0, "edgeq.toml"),
        GateLimit("top1_agreement", 1.5, "command line"),
    ]
    result = run_stage(STAGE, ctx)
    assert result is ctx.result(ValidationResult) and result.passed is False
    v = result.facts()
    assert v["passed"] is False
    by_name = {g["name"]: g for g in v["gates"]}
    assert set(by_name) == {"accuracy_drop", "top1_agreement"}  # only the gates in force are evaluated
    assert by_name["accuracy_drop"]["margin"] == pytest.approx(-1.0)
    assert by_name["top1_agreement"]["margin"] == pytest.approx(-0.5)
    assert by_name["top1_agreement"]["source"] == "command line"


def test_generic_task_skips_the_classification_gates(onnx_int8_build: ApiBuild, tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "onnx", task={"kind": "generic", "labels": DELETE})
    remove("data/eval/labels.npy")(model_dir)
    ctx = context_with_artifacts(model_dir, onnx_int8_build.keep, tmp_path / "work")
    run_stage(STAGE, ctx)
    v = ctx.result(ValidationResult).facts()
    in_force = [n for n in GATES if n in load_target("android").gates]
    names = list(dict.fromkeys(g["name"] for g in v["gates"]))
    assert names == [
        n for n in in_force
        if n not in ("accuracy_drop", "top1_agreement", "bleu_drop", "detection_agreement", "map_drop", "runtime_top1_agreement",
                     "runtime_bleu_diff", "output_slice_levels")
    ]
    assert v["passed"] is True
    assert v["reference"]["metrics"] == {}
    entry = v["artifacts"]["tflite_int8"]["runtimes"]["litert"]
    assert "task" not in entry
    assert entry["outputs"]["model"][OUTPUT]["cosine"] > 0.99


def test_labels_file_with_fewer_classes_than_the_model(onnx_int8_build: ApiBuild, tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, "onnx")
    (model_dir / "labels.txt").write_text("a\nb\nc\n")
    labels = model_dir / "data" / "eval" / "labels.npy"
    np.save(labels, np.zeros_like(np.load(labels)))  # every id names a class of the file
    ctx = context_with_artifacts(model_dir, onnx_int8_build.keep, tmp_path / "work")
    with pytest.raises(ValueError, match=r"the classifier output has 4 classes, labels\.txt lists 3"):
        run_stage(STAGE, ctx)


def test_a_labels_file_that_does_not_fit_the_model_stops_the_build_after_export(tmp_path: Path) -> None:
    """Checked once the exported model shows its output: before quantizing, converting and the emulators."""
    model_dir = make_model_dir(tmp_path, "onnx")
    (model_dir / "labels.txt").write_text("a\nb\nc\n")
    labels = model_dir / "data" / "eval" / "labels.npy"
    np.save(labels, np.zeros_like(np.load(labels)))
    out = tmp_path / "out"
    r = invoke_cli(["build", str(model_dir), "--target", "android", "--out", str(out), "-r", "litert"])
    assert r.exit_code == 2 and "the classifier output 'logits' has 4 classes, but labels.txt lists 3" in r.stderr, r.stderr
    assert "[2/7] calibrate failed" in r.stderr and "[3/7]" not in r.stderr and not out.exists()


def test_tensor_metrics_are_finite_numbers(onnx_int8_build: ApiBuild) -> None:
    for art in onnx_int8_build.outcome.report["artifacts"].values():
        for entry in art["runtimes"].values():
            assert list(entry["outputs"]) == ["model"]
            for out in entry["outputs"]["model"].values():
                assert isinstance(out["identical"], bool)
                numbers = [v for k, v in out.items() if k != "identical"]
                assert all(v is None or (not isinstance(v, bool) and math.isfinite(v)) for v in numbers)


OTHERS = ["litert-arm64:cortex-a53", "litert-arm64:cortex-a76", "litert-ref"]


def test_shipped_model_parity_across_runtimes(tiny_report: dict[str, Any]) -> None:
    """Every other runtime - reference kernels on the host, the arm64 LiteRT on each emulated
    core - is compared with host LiteRT in quantization steps, and gated."""
    shipped = tiny_report["artifacts"]["tflite_int8"]
    assert shipped["runtimes"]["litert-ref"]["describe"]["kernels"] == "reference kernels (BUILTIN_REF)"
    parity = shipped["parity"]
    assert list(parity) == OTHERS
    for rt in OTHERS:
        entry = parity[rt]
        assert entry["vs"] == "litert" and 0.0 <= entry["top1_agreement"] <= 1.0
        m = entry["outputs"]["model"][OUTPUT]
        assert m["step"] > 0 and m["elements"] == N_EVAL * NUM_CLASSES
        assert m["max_steps"] == pytest.approx(m["max_abs_diff"] / m["step"])
        assert len(m["divergences"]) == min(10, m["elements_over_one_step"])
    gates = {g["runtime"]: g for g in tiny_report["gates"] if g["name"] == "runtime_top1_agreement"}
    assert sorted(gates) == OTHERS
    for rt, g in gates.items():
        assert g["value"] == parity[rt]["top1_agreement"] and g["passed"]


@pytest.mark.parametrize(("profile", "dot"), [("cortex-a53", False), ("cortex-a76", True)])
def test_emulated_runtimes_name_their_profile_and_report_cost_not_latency(
    tiny_report: dict[str, Any], profile: str, dot: bool
) -> None:
    entry = tiny_report["artifacts"]["tflite_int8"]["runtimes"][f"litert-arm64:{profile}"]
    d = entry["describe"]
    assert (d["runtime"], d["profile"], d["qemu_cpu"], d["emulated"], d["host"]) == (
        "litert-arm64", profile, profile, True, False)
    assert d["guest"]["machine"] == "aarch64" and d["guest"]["dot_product"] is dot
    assert d["validation_seconds"]["wall"] > 0
    # the task metrics are those of every runtime; no speed of any kind for an emulated one
    assert set(entry["task"]) == {"top1_accuracy", "top1_agreement", "samples"}
    assert not any("latency" in k or "per_second" in k for k in json.dumps(d).split('"'))
    for name in ("accuracy_drop", "top1_agreement", "output_cosine"):
        assert any(g["name"] == name and g["runtime"] == f"litert-arm64:{profile}" for g in tiny_report["gates"])
