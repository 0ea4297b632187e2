"""The detection task: decoding YOLO-style outputs, NMS, matching, F1 and mAP against the float
model's detections, its edgeq.toml keys, and a detector built in code end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke_cli
from tiny_detector import make_detector_dir

from edgeq.config import load_model_spec
from edgeq.errors import ConfigError
from edgeq.tasks.detection import DetectionMetrics, decode, iou, nms


def _output(boxes: list[list[float]], scores: list[list[float]], channels_first: bool = True) -> np.ndarray:
    """[1, 4 + C, N] (or [1, N, 4 + C]) from N boxes (xywh) and their N x C scores."""
    rows = np.concatenate([np.array(boxes, float), np.array(scores, float)], axis=1)  # [N, 4 + C]
    return (rows.T if channels_first else rows)[None]


# 7 anchors of 2 classes: the output is [1, 6, 7] (the shorter axis holds the box and the scores)
BOXES = [[50, 50, 20, 20], [52, 50, 20, 20], [200, 200, 40, 40], [50, 50, 20, 20], [120, 40, 10, 10], [300, 300, 5, 5],
         [10, 10, 4, 4]]
SCORES = [[0.9, 0.0], [0.8, 0.1], [0.7, 0.2], [0.1, 0.6], [0.1, 0.05], [0.3, 0.0], [0.2, 0.1]]


def test_iou() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(iou(a, b), [[50 / 150, 0], [0, 0]])


@pytest.mark.parametrize("channels_first", [True, False])
def test_decode_reads_either_layout_and_converts_xywh(channels_first: bool) -> None:
    [(boxes, scores, classes)] = decode(_output(BOXES, SCORES, channels_first), "xywh", 0.25)
    assert classes.tolist() == [0, 0, 0, 1, 0] and scores.tolist() == [0.9, 0.8, 0.7, 0.6, 0.3]  # 0.1 and 0.2: below 0.25
    np.testing.assert_allclose(boxes[0], [40, 40, 60, 60])
    [(xyxy, _, _)] = decode(_output(BOXES, SCORES), "xyxy", 0.25)
    np.testing.assert_allclose(xyxy[0], BOXES[0])


def test_nms_suppresses_overlaps_of_one_class_only() -> None:
    [(boxes, scores, classes)] = decode(_output(BOXES, SCORES), "xywh", 0.25)
    keep = nms(boxes, scores, classes, 0.45)
    # box 1 overlaps box 0 (same class): suppressed; box 3 sits on box 0 but is class 1: kept
    assert keep.tolist() == [0, 2, 3, 4]


def test_agreement_and_map_against_the_float_detections() -> None:
    ref = _output(BOXES, SCORES)
    m = DetectionMetrics("xywh", 0.25, 0.45)
    m.update(ref, ref)
    r = m.result()
    assert (r["detection_agreement"], r["map50_vs_float"], r["map_vs_float"], r["detections"]) == (1.0, 1.0, 1.0, 4)
    lost = _output(BOXES, [[s[0], 0.0] for s in SCORES])  # class 1 never scores: its detection is lost
    m = DetectionMetrics("xywh", 0.25, 0.45)
    m.update(ref, lost)
    r = m.result()
    assert r["recall_vs_float"] == 0.75 and r["precision_vs_float"] == 1.0
    assert r["detection_agreement"] == pytest.approx(2 * 0.75 / 1.75)
    assert r["map50_vs_float"] == pytest.approx(0.5)  # class 0: AP 1; class 1: AP 0
    moved = _output([[b[0] + 3, *b[1:]] for b in BOXES], SCORES)  # 3 px off: IoU 0.25 (5 px box) to 0.86
    m = DetectionMetrics("xywh", 0.25, 0.45)
    m.update(ref, moved)
    r = m.result()
    assert 0 < r["map_vs_float"] < r["map50_vs_float"] < 1.0  # stricter IoU thresholds miss more


@pytest.mark.parametrize(("task", "fragment"), [
    ({"kind": "generic", "box_format": "xyxy"}, "are for kind = 'detection' only"),
    ({"kind": "detection", "box_format": "cxcy"}, "expected one of: xywh, xyxy"),
    ({"kind": "detection", "score_threshold": 1.5}, "[task].score_threshold must be between 0 and 1"),
    ({"kind": "detection", "nms_iou": 0}, "[task].nms_iou must be between 0 and 1"),
    ({"kind": "generic", "scores": "output0"}, "are for kind = 'detection' only"),
    ({"kind": "detection", "scores": "output0"}, "[task].output must then name the boxes output"),
])
def test_bad_detection_settings_are_refused(tmp_path: Path, task: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_model_spec(make_detector_dir(tmp_path, task=task))
    assert fragment in str(e.value)


def test_the_task_output_defaults_to_the_only_output(tmp_path: Path) -> None:
    t = load_model_spec(make_detector_dir(tmp_path, task={"kind": "detection"})).task
    assert (t.output, t.box_format, t.score_threshold, t.nms_iou) == ("output0", "xywh", 0.25, 0.45)


def test_labelled_boxes_are_scored_too() -> None:
    ref = _output(BOXES, SCORES)
    m = DetectionMetrics("xywh", 0.25, 0.45)
    boxes = np.array([[40, 40, 60, 60], [180, 180, 220, 220]], float)  # xyxy: two of the float detections
    m.update(ref, ref, [(boxes, np.array([0, 0]))])
    r = m.result()
    assert r["map50"] == pytest.approx(1.0) and r["map"] == pytest.approx(1.0)  # both found, extra detections rank below
    m = DetectionMetrics("xywh", 0.25, 0.45)
    m.update(ref, ref)
    assert "map50" not in m.result()  # no labels: no such metric (and no map_drop gate)


def _float_detections_as_labels(model_dir: Path) -> None:
    """boxes.npy / classes.npy of the eval folder: the float model's own detections (xywh, -1 padded)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    images = np.load(model_dir / "data" / "eval" / "image.npy")
    metrics = DetectionMetrics("xywh", 0.25, 0.45)
    found = [metrics._detections(session.run(None, {"image": x})[0])[0] for x in images]
    m = max(len(b) for b, _, _ in found)
    boxes = np.zeros((len(images), m, 4), np.float32)
    classes = np.full((len(images), m), -1, np.int64)
    for k, (b, _, c) in enumerate(found):
        boxes[k, : len(b)] = np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], axis=1)
        classes[k, : len(c)] = c
    np.save(model_dir / "data" / "eval" / "boxes.npy", boxes)
    np.save(model_dir / "data" / "eval" / "classes.npy", classes)


def test_a_detector_with_labels_gets_map_and_map_drop(tmp_path: Path) -> None:
    """Labels equal to the float model's detections: the float mAP is 1, the artifact's equals its mAP vs float."""
    model_dir = make_detector_dir(tmp_path, pixels=False, task={"kind": "detection"})
    _float_detections_as_labels(model_dir)
    out = tmp_path / "dist" / "detector"
    r = invoke_cli(["build", str(model_dir), "--target", "android", "--out", str(out), "-r", "litert",
                    "--gate", "map_drop=50"])
    assert r.exit_code == 0, r.stderr + r.stdout
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["reference"]["metrics"]["map50"] == pytest.approx(1.0)
    task = report["artifacts"]["tflite_int8"]["runtimes"]["litert"]["task"]
    assert task["map50"] == pytest.approx(task["map50_vs_float"], abs=1e-9)
    [gate] = [g for g in report["gates"] if g["name"] == "map_drop"]
    assert gate["value"] == pytest.approx((1.0 - task["map50"]) * 100) and gate["source"] == "command line"


@pytest.mark.parametrize(("files", "fragment"), [
    ({"boxes": np.zeros((24, 2, 4), np.float32)}, "classes.npy is missing"),
    ({"boxes": np.zeros((24, 2, 3), np.float32), "classes": np.zeros((24, 2), np.int64)}, "must be float [images"),
    ({"boxes": np.zeros((24, 2, 4), np.float32), "classes": np.zeros((24, 3), np.int64)}, "must be integer [images"),
    ({"boxes": np.full((24, 2, 4), np.nan, np.float32), "classes": np.zeros((24, 2), np.int64)}, "NaN or infinity"),
])
def test_bad_labelled_boxes_are_refused_before_any_work(tmp_path: Path, files: dict[str, np.ndarray], fragment: str) -> None:
    model_dir = make_detector_dir(tmp_path, pixels=False, task={"kind": "detection"})
    for name, arr in files.items():
        np.save(model_dir / "data" / "eval" / f"{name}.npy", arr)
    r = invoke_cli(["build", str(model_dir), "--target", "android", "--out", str(tmp_path / "o"), "-r", "litert"])
    assert r.exit_code == 2 and fragment in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_an_ssd_style_detector_with_separate_boxes_and_scores(tmp_path: Path) -> None:
    """[task] output = the boxes [1, N, 4], scores = the class scores [1, N, C]."""
    model_dir = make_detector_dir(tmp_path, pixels=False, separate=True,
                                  task={"kind": "detection", "output": "boxes_out", "scores": "scores_out"})
    out = tmp_path / "dist" / "ssd"
    r = invoke_cli(["build", str(model_dir), "--target", "android", "--out", str(out), "-r", "litert"])
    assert r.exit_code == 0, r.stderr + r.stdout
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    task = report["artifacts"]["tflite_int8"]["runtimes"]["litert"]["task"]
    assert task["float_detections"] > 0 and task["detection_agreement"] >= 0.9
    # the same network as one concatenated output finds the same float detections
    one = make_detector_dir(tmp_path / "one", pixels=False, task={"kind": "detection"})
    r = invoke_cli(["build", str(one), "--target", "android", "--out", str(tmp_path / "one-out"), "-r", "litert"])
    assert r.exit_code == 0, r.stderr
    other = json.loads((tmp_path / "one-out" / "report.json").read_text(encoding="utf-8"))
    assert other["artifacts"]["tflite_int8"]["runtimes"]["litert"]["task"]["float_detections"] == task["float_detections"]


def test_a_scores_output_the_model_lacks_exits_2(tmp_path: Path) -> None:
    model_dir = make_detector_dir(tmp_path, pixels=False, separate=True,
                                  task={"kind": "detection", "output": "boxes_out", "scores": "logits"})
    r = invoke_cli(["build", str(model_dir), "--target", "android", "--out", str(tmp_path / "o"), "-r", "litert"])
    assert r.exit_code == 2 and "[task].scores 'logits' is not an output of the model" in r.stderr, r.stderr


def test_the_detector_sample_opens_with_its_labelled_boxes() -> None:
    """sample_models/detector as edgeq reads it before any work: a detection task on a 128 px image, the
    calibration archive and the eval folder with a labelled box list for every image."""
    from edgeq.tasks import make_task

    spec = load_model_spec(Path(__file__).resolve().parents[2] / "sample_models" / "detector")
    assert spec.task.kind == "detection" and spec.inputs[0].shape == (1, 3, 128, 128)
    task = make_task(spec)
    _calibration, evaluation = task.open_data()
    truth = task.eval_labels(evaluation)
    assert truth is not None and len(truth) == len(evaluation) > 0
    assert all(len(b) == len(c) > 0 and (b[:, 2:] > b[:, :2]).all() for b, c in truth)
    assert {int(k) for _, c in truth for k in c} == {0, 1, 2}
