"""edgeq.gates: the gate table and its evaluation on validation results (no build needed)."""

from __future__ import annotations

from typing import Any

import pytest

from edgeq.config import available_targets
from edgeq.gates import GATES, GateLimit, evaluate


def _shipped() -> dict[str, Any]:
    def runtime(acc: float, agree: float, bleu: float, cosines: list[float]) -> dict[str, Any]:
        return {"task": {"top1_accuracy": acc, "top1_agreement": agree, "bleu": bleu},
                "outputs": {"encoder": {"memory": {"cosine": cosines[0]}}, "decoder": {"logits": {"cosine": cosines[1]}}}}

    return {
        "bytes": 5000,
        "runtimes": {"litert": runtime(0.9, 0.97, 40.0, [0.999, 0.995]),
                     "litert-ref": runtime(0.85, 0.9, 39.0, [0.98, 0.999])},
        "parity": {"litert-ref": {"top1_agreement": 0.95, "bleu_diff": 1.0},
                   "litert-arm64:cortex-a53": {"top1_agreement": 1.0}},
        "inspection": {"encoder": {"compute_ops": 3, "int8_compute_ops": 3},
                       "decoder": {"compute_ops": 5, "int8_compute_ops": 4}},
    }


REF = {"top1_accuracy": 0.92, "bleu": 41.5}


def _all_limits(**overrides: float) -> list[GateLimit]:
    limits = {"accuracy_drop": 1.0, "bleu_drop": 1.0, "top1_agreement": 0.98, "runtime_top1_agreement": 0.99,
              "runtime_bleu_diff": 0.5, "output_cosine": 0.99, "int8_compute_ops": 1.0, "model_bytes": 1e6,
              "output_slice_levels": 4, "detection_agreement": 0.9, "map_drop": 1.0, "arena_bytes": 262144, **overrides}
    return [GateLimit(n, limits[n], "target") for n in GATES]


def _by(results: list[dict[str, Any]]) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {(r["name"], r["runtime"]): r for r in results}


def test_the_table_is_well_formed() -> None:
    for name, g in GATES.items():
        assert g.name == name and g.comparison in ("max", "min") and g.unit and g.description
        assert g.over in ("runtimes", "parity", "artifact")
        assert (g.key is not None) == (g.over == "parity")
    # output_slice_levels applies only to outputs cut into slices; the entries here have none
    for target in available_targets():
        assert set(target.gates) <= set(GATES)


def test_classification_gates_per_runtime_parity_gates_per_other_runtime() -> None:
    results = evaluate(_all_limits(), "classification", REF, _shipped(), "tflite_int8")
    by = _by(results)
    assert [r["name"] for r in results] == [
        "accuracy_drop", "accuracy_drop", "top1_agreement", "top1_agreement",
        "runtime_top1_agreement", "runtime_top1_agreement", "runtime_bleu_diff",
        "output_cosine", "output_cosine", "int8_compute_ops", "model_bytes",
    ]
    assert by[("accuracy_drop", "litert")]["value"] == pytest.approx(2.0)
    assert by[("accuracy_drop", "litert")]["passed"] is False
    assert by[("accuracy_drop", "litert-ref")]["margin"] == pytest.approx(-6.0)
    assert by[("top1_agreement", "litert")]["value"] == 0.97
    # the a53 comparison has no BLEU difference: that gate skips it, not fails it
    assert ("runtime_bleu_diff", "litert-arm64:cortex-a53") not in by
    assert by[("runtime_top1_agreement", "litert-arm64:cortex-a53")]["passed"] is True
    assert by[("output_cosine", "litert-ref")]["value"] == 0.98  # the lowest over every output of every graph
    assert by[("int8_compute_ops", None)]["value"] == pytest.approx(7 / 8)
    assert by[("model_bytes", None)] | {"source": "target"} == {
        "name": "model_bytes", "value": 5000.0, "limit": 1e6, "comparison": "max", "unit": "bytes", "passed": True,
        "margin": 1e6 - 5000.0, "artifact": "tflite_int8", "runtime": None, "source": "target",
    }


def test_a_task_sees_only_its_own_gates() -> None:
    names = {r["name"] for r in evaluate(_all_limits(), "translation", REF, _shipped(), "tflite_int8")}
    assert "bleu_drop" in names and not names & {"accuracy_drop", "top1_agreement"}
    names = {r["name"] for r in evaluate(_all_limits(), "generic", {}, _shipped(), "tflite_int8")}
    assert names == {"runtime_top1_agreement", "runtime_bleu_diff", "output_cosine", "int8_compute_ops", "model_bytes"}


def test_only_the_gates_in_force_are_evaluated_in_their_order_with_their_source() -> None:
    limits = [GateLimit("model_bytes", 100.0, "command line"), GateLimit("output_cosine", 0.9, "edgeq.toml")]
    results = evaluate(limits, "classification", REF, _shipped(), "tflite_int8")
    assert [(r["name"], r["source"]) for r in results] == [
        ("model_bytes", "command line"), ("output_cosine", "edgeq.toml"), ("output_cosine", "edgeq.toml")]
    assert results[0]["passed"] is False and results[0]["margin"] == -4900.0


def test_a_model_without_compute_ops_passes_the_int8_gate() -> None:
    shipped = _shipped() | {"inspection": {"model": {"compute_ops": 0, "int8_compute_ops": 0}}}
    (result,) = evaluate([GateLimit("int8_compute_ops", 1.0, "target")], "generic", {}, shipped, "tflite_int8")
    assert result["value"] == 1.0 and result["passed"]


def test_map_drop_applies_only_with_labels_and_fails_a_lost_point() -> None:
    entry = {"task": {"detection_agreement": 0.95, "map50": 0.90}, "outputs": {}}
    unlabelled = {"task": {"detection_agreement": 0.95}, "outputs": {}}
    shipped = {"runtimes": {"litert": entry, "litert-ref": unlabelled}}
    results = evaluate([GateLimit("map_drop", 1.0, "target"), GateLimit("detection_agreement", 0.9, "target")],
                       "detection", {"map50": 0.92}, shipped, "tflite_int8")
    by = _by(results)
    assert by[("map_drop", "litert")]["value"] == pytest.approx(2.0) and by[("map_drop", "litert")]["passed"] is False
    assert ("map_drop", "litert-ref") not in by  # no labels there: nothing to measure, nothing to fail
    assert by[("detection_agreement", "litert")]["passed"] and by[("detection_agreement", "litert-ref")]["passed"]
    ok = evaluate([GateLimit("map_drop", 1.0, "target")], "detection", {"map50": 0.905}, shipped, "tflite_int8")
    assert ok[0]["passed"] is True  # half a point lost: within the limit
