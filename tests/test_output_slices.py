"""Gates that see every part of an output: a YOLO-style export concatenates box coordinates in pixels
(0 to about 320) and sigmoid class scores (0 to 1) in one output; one int8 scale for the whole tensor
leaves every score 0 or one step. The whole-tensor cosine passes; the slice gate must not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke_cli
from tiny_detector import C, make_detector_dir

from edgeq.gates import GATES, GateLimit, evaluate
from edgeq.tasks.metrics import LEVEL_CAP, ChannelStats, TensorMetrics

N = 16  # anchors of the synthetic outputs below
RNG_SEED = 0


def _detections(rng: np.random.Generator, samples: int) -> list[np.ndarray]:
    boxes = rng.uniform(0, 320, (samples, 1, 4, N))
    scores = 1 / (1 + np.exp(-rng.normal(-1, 2, (samples, 1, C, N))))
    return list(np.concatenate([boxes, scores], axis=2).astype(np.float32))


def _one_scale(x: np.ndarray) -> np.ndarray:
    """What an int8 output with one scale for the whole tensor gives back (asymmetric, 0..320)."""
    step = 320 / 255
    return (np.round(x / step) * step).astype(np.float32)


def test_slices_are_cut_where_the_float_ranges_differ_tenfold() -> None:
    rng = np.random.default_rng(RNG_SEED)
    m = TensorMetrics()
    for ref in _detections(rng, 20):
        m.update(ref, _one_scale(ref))
    r = m.result()
    assert r["cosine"] > 0.9999  # the whole tensor looks fine: the boxes dominate it
    boxes, scores = r["slices"]
    assert (boxes["axis"], boxes["start"], boxes["stop"], scores["start"], scores["stop"]) == (1, 0, 4, 4, 4 + C)
    assert boxes["levels"] == LEVEL_CAP + 1 and scores["float_levels"] == LEVEL_CAP + 1
    assert scores["levels"] <= 2 and scores["sqnr_db"] < 10  # 0 or one step: noise


@pytest.mark.parametrize("shape", [(1, 10), (1, 4, 6), (1, 8, 4, 4)])
def test_no_slices_where_every_index_has_a_similar_range(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(RNG_SEED)
    m = TensorMetrics()
    for _ in range(5):
        ref = rng.normal(0, 1, shape).astype(np.float32)
        m.update(ref, ref + 0.01)
    assert "slices" not in m.result()


def test_channel_stats_count_levels_up_to_the_cap() -> None:
    s = ChannelStats(axis=1, size=2)
    for k in range(3):
        ref = np.stack([np.full(50, float(k)), np.full(50, 0.5 * k)])[None]
        s.update(ref, np.zeros((1, 2, 50)))
    assert s.result(0, 1)["float_levels"] == 3 and s.result(0, 2)["float_levels"] == 4  # {0, 1, 2} | {0, .5, 1}
    assert s.result(0, 2)["levels"] == 1
    s.update(np.arange(200, dtype=np.float64).reshape(1, 2, 100), np.zeros((1, 2, 100)))
    assert s.result(0, 1)["float_levels"] == LEVEL_CAP + 1  # counted up to the cap, then no further


def _entry(slices_levels: list[int]) -> dict[str, object]:
    slices = [{"name": f"{k}:{k + 1}", "axis": 1, "start": k, "stop": k + 1, "float_range": [0.0, 300.0 if k == 0 else 0.9],
               "range": [0.0, 1.25], "float_levels": 65, "levels": n, "cosine": 0.5, "sqnr_db": 2.0}
              for k, n in enumerate(slices_levels)]
    return {"outputs": {"model": {"output0": {"cosine": 0.999, "slices": slices}}}}


def test_the_slice_gate_fails_naming_the_slice_its_ranges_and_the_cause() -> None:
    shipped = {"runtimes": {"litert": _entry([65, 2])}}
    [result] = evaluate([GateLimit("output_slice_levels", 4, "target")], "generic", {}, shipped, "tflite_int8")
    assert (result["passed"], result["value"], result["runtime"]) == (False, 2.0, "litert")
    assert "model/output0[axis 1: 1:2] (float 0..0.9) takes 2 distinct value(s)" in result["detail"]
    assert "one int8 scale serves the whole output and model/output0[axis 1: 0:1] (float 0..300) sets it" in result["detail"]


def test_the_slice_gate_does_not_apply_without_varying_slices() -> None:
    plain = {"outputs": {"model": {"logits": {"cosine": 0.999}}}}
    shipped = {"runtimes": {"litert": plain, "litert-ref": _entry([65, 30])}}
    results = evaluate([GateLimit("output_slice_levels", 4, "target")], "classification", {}, shipped, "tflite_int8")
    assert [(r["runtime"], r["passed"], "detail" in r) for r in results] == [("litert-ref", True, False)]
    assert GATES["output_slice_levels"].tasks is None  # every task


def test_a_detector_whose_scores_die_in_int8_fails_with_exit_1(tmp_path: Path) -> None:
    """Pixel boxes next to scores in one output: the scores die in int8 and the detections with them;
    the whole-tensor gates pass."""
    out = tmp_path / "dist" / "detector"
    model_dir = make_detector_dir(tmp_path, task={"kind": "detection", "output": "output0"})
    r = invoke_cli(["build", str(model_dir), "--target", "android", "--out", str(out),
                    "-r", "litert", "-r", "litert-ref", "--no-repair"])
    assert r.exit_code == 1, r.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert json.loads((out / "model.json").read_text(encoding="utf-8"))["task"]["kind"] == "detection"
    assert all(g["passed"] for g in report["gates"] if g["name"] == "output_cosine")
    agreement = [g for g in report["gates"] if g["name"] == "detection_agreement"]
    assert agreement and all(not g["passed"] and g["value"] < 0.9 for g in agreement)  # half the detections go
    failed = [g for g in report["gates"] if not g["passed"] and g["name"] != "detection_agreement"]
    assert {g["name"] for g in failed} == {"output_slice_levels"}
    assert {g["runtime"] for g in failed} == {"litert", "litert-ref"}
    assert all(g["value"] <= 2 for g in failed)
    assert "model/output0[axis 1: 4:7]" in failed[0]["detail"] and "one int8 scale" in failed[0]["detail"]
    assert "FAIL output_slice_levels on litert" in r.stdout and "model/output0[axis 1: 4:7]" in r.stdout
    assert "INT8 error appears first at model/" in r.stdout  # where to look, on the terminal
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "output0[axis 1: 4:7]" in md


def test_declared_slices_are_measured_and_named(tmp_path: Path) -> None:
    """edgeq.toml names the parts: [[outputs]] axis = 1, slices = { boxes = "0:4", scores = "4:" }."""
    out = tmp_path / "dist" / "detector"
    model_dir = make_detector_dir(tmp_path, {"axis": 1, "slices": {"boxes": "0:4", "scores": "4:"}})
    r = invoke_cli(["build", str(model_dir), "--target", "android", "--out", str(out), "-r", "litert", "--no-repair"])
    assert r.exit_code == 1, r.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    slices = report["artifacts"]["tflite_int8"]["runtimes"]["litert"]["outputs"]["model"]["output0"]["slices"]
    assert [(s["name"], s["start"], s["stop"]) for s in slices] == [("boxes", 0, 4), ("scores", 4, 4 + C)]
    [failed] = [g for g in report["gates"] if not g["passed"]]
    assert "model/output0[scores = axis 1: 4:7]" in failed["detail"] and "[boxes = axis 1: 0:4]" in failed["detail"]


@pytest.mark.parametrize(("outputs", "fragment"), [
    ({"axis": 1}, "axis and slices go together"),
    ({"slices": {"boxes": "0:4"}}, "axis and slices go together"),
    ({"axis": 0, "slices": {"boxes": "0:4"}}, "after the batch axis"),
    ({"axis": 1, "slices": {"boxes": "4:2"}}, 'must be "start:stop" with 0 <= start < stop'),
    ({"axis": 1, "slices": {"boxes": "a:b"}}, 'must be "start:stop"'),
    ({"axis": 1, "slices": {"boxes": 4}}, 'must be "start:stop"'),
])
def test_bad_declared_slices_are_refused_before_any_work(tmp_path: Path, outputs: dict[str, object], fragment: str) -> None:
    r = invoke_cli(["build", str(make_detector_dir(tmp_path, outputs)), "--target", "android", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and fragment in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("outputs", "fragment"), [
    ({"axis": 3, "slices": {"boxes": "0:4"}}, "axis 3 is not an axis of the output (shape [1, 7, 16])"),
    ({"axis": 1, "slices": {"boxes": "0:9"}}, "slice boxes = 0:9 is outside axis 1 of size 7"),
])
def test_declared_slices_that_do_not_fit_the_output_exit_2_before_conversion(tmp_path: Path, outputs: dict[str, object],
                                                                           fragment: str) -> None:
    out = tmp_path / "dist" / "detector"
    r = invoke_cli(["build", str(make_detector_dir(tmp_path, outputs)), "--target", "android", "--out", str(out),
                    "-r", "litert"])
    assert r.exit_code == 2 and fragment in r.stderr, r.stderr
    assert "[1/7] export failed" in r.stderr and "[4/7] convert" not in r.stderr  # checked on the ONNX shapes
    assert not out.exists()
