"""detection: a YOLO-style detector, measured by its detections against the float model's.

The task output is one tensor ``[B, 4 + C, N]`` or ``[B, N, 4 + C]`` (the shorter of the last two
axes holds the 4 box values and the C class scores, as YOLOv5/v8 exports write it); boxes are
``box_format`` ``xywh`` (centre, size) or ``xyxy``, in whatever units the model uses. An image's
detections: anchors whose best class score reaches ``score_threshold``, then non-maximum suppression
per class at IoU ``nms_iou`` (vectorized numpy), at most ``MAX_DETECTIONS``.

Label-free, so any user can gate a detector: the float reference's detections are the ground truth
an artifact's are scored against. ``detection_agreement`` is the F1 of the artifact's detections
matched to the float model's at IoU 0.5 (same class); ``map50_vs_float`` / ``map_vs_float`` the
COCO-style mAP at IoU 0.5 and averaged over 0.5:0.95 with the float detections as ground truth.
With labelled boxes in the eval folder (``boxes.npy`` [images, M, 4] in the model's box format and
units, ``classes.npy`` [images, M], -1 padding), mAP@0.5 and @0.5:0.95 against them too. Gates it
names: ``detection_agreement``, and ``map_drop`` (the float model's mAP@0.5 minus the artifact's,
in points) where there are labels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.context import Column
from edgeq.data import ArrayDataset
from edgeq.errors import DataError, ModelError
from edgeq.inputs.files import regular_file
from edgeq.inputs.shown import shown
from edgeq.tasks.generic import Generic

__all__ = ["BOXES_FILE", "CLASSES_FILE", "Detection", "DetectionMetrics", "decode", "iou", "nms"]

MAX_DETECTIONS = 300
BOXES_FILE = "boxes.npy"  # labelled boxes in the eval folder (optional)
CLASSES_FILE = "classes.npy"
MAX_LABELLED = 10_000  # labelled boxes of one image, at most
IOU_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)


def decode(output: np.ndarray, box_format: str, score_threshold: float,
           anchors_first: bool = False) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image of the batch: boxes [K, 4] (xyxy), scores [K], classes [K] of the anchors that pass.
    ``anchors_first``: the output is [B, N, 4 + C] whatever its sizes (else the shorter axis holds 4 + C)."""
    out = np.asarray(output, dtype=np.float64)
    if out.ndim == 2:
        out = out[None]
    if not anchors_first and out.shape[1] < out.shape[2]:  # [B, 4 + C, N] -> [B, N, 4 + C]
        out = out.transpose(0, 2, 1)
    images = []
    for rows in out:
        scores = rows[:, 4:]
        cls = scores.argmax(axis=1)
        best = scores[np.arange(len(rows)), cls]
        keep = best >= score_threshold
        b = rows[keep, :4]
        if box_format == "xywh":
            b = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1)
        images.append((b, best[keep], cls[keep]))
    return images


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [M, 4] with every box of ``b`` [K, 4] (xyxy): [M, K]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy per-class non-maximum suppression, best score first (at most MAX_DETECTIONS)."""
    order = np.argsort(-scores, kind="stable")
    # Boxes of different classes never suppress each other: shift each class to its own region.
    span = float(np.abs(boxes).max(initial=1.0)) * 4 + 1
    shifted = boxes + (classes * span)[:, None]
    overlaps = iou(shifted[order], shifted[order])
    kept: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(int(order[i]))
        if len(kept) == MAX_DETECTIONS:
            break
        suppressed |= overlaps[i] > iou_threshold
    return np.array(kept, dtype=np.int64)


def _match(det: tuple[np.ndarray, np.ndarray, np.ndarray], truth: tuple[np.ndarray, np.ndarray, np.ndarray],
           threshold: float) -> np.ndarray:
    """For each detection (best score first), whether it matches a not yet matched truth box of its class."""
    boxes, scores, classes = det
    t_boxes, _, t_classes = truth
    order = np.argsort(-scores, kind="stable")
    hit = np.zeros(len(boxes), dtype=bool)
    if not len(boxes) or not len(t_boxes):
        return hit
    overlaps = iou(boxes, t_boxes)
    overlaps[classes[:, None] != t_classes[None, :]] = 0.0
    taken = np.zeros(len(t_boxes), dtype=bool)
    for i in order:
        candidates = np.where(~taken & (overlaps[i] >= threshold), overlaps[i], -1.0)
        j = int(candidates.argmax())
        if candidates[j] >= threshold:
            taken[j] = True
            hit[i] = True
    return hit


def _average_precision(scores: np.ndarray, hits: np.ndarray, n_truth: int) -> float:
    """COCO's 101-point interpolated AP of detections ``scores`` / ``hits`` against ``n_truth`` boxes."""
    if n_truth == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    recall = tp / n_truth
    precision = tp / np.arange(1, len(order) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    points = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, points, side="left")
    return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in idx]))


class _AP:
    """Detections scored against ground-truth boxes, image by image: mAP at IoU 0.5 and over 0.5:0.95."""

    def __init__(self) -> None:
        self.per_threshold: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in IOU_THRESHOLDS]
        self.truth_classes: list[np.ndarray] = []

    def add(self, det: tuple[np.ndarray, np.ndarray, np.ndarray], truth: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        self.truth_classes.append(truth[2])
        for k, threshold in enumerate(IOU_THRESHOLDS):
            self.per_threshold[k].append((det[1], det[2], _match(det, truth, threshold)))

    def result(self) -> tuple[float, float]:
        """(mAP@0.5, mAP@0.5:0.95) over the classes present in the detections or the truth."""
        truth_classes = np.concatenate(self.truth_classes) if self.truth_classes else np.zeros(0, np.int64)
        aps = []
        for per_image in self.per_threshold:
            scores = np.concatenate([s for s, _, _ in per_image]) if per_image else np.zeros(0)
            classes = np.concatenate([c for _, c, _ in per_image]) if per_image else np.zeros(0, np.int64)
            hits = np.concatenate([h for _, _, h in per_image]) if per_image else np.zeros(0, bool)
            per_class = [_average_precision(scores[classes == c], hits[classes == c], int((truth_classes == c).sum()))
                         for c in np.unique(np.concatenate([classes, truth_classes]))]
            known = [a for a in per_class if not np.isnan(a)]
            aps.append(float(np.mean(known)) if known else (1.0 if not len(scores) else 0.0))
        return aps[0], float(np.mean(aps))


class DetectionMetrics:
    """An artifact's detections against the float reference's (and against labelled boxes when the
    eval set has them), accumulated image by image."""

    def __init__(self, box_format: str, score_threshold: float, nms_iou: float, anchors_first: bool = False) -> None:
        self.box_format, self.score_threshold, self.nms_iou = box_format, score_threshold, nms_iou
        self.anchors_first = anchors_first  # [B, N, 4 + C] for certain (else the shorter axis is the channels')
        self.matched = self.detections = self.truths = 0
        self.vs_float = _AP()
        self.vs_labels: _AP | None = None

    def _detections(self, output: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for boxes, scores, classes in decode(output, self.box_format, self.score_threshold, self.anchors_first):
            keep = nms(boxes, scores, classes, self.nms_iou)
            out.append((boxes[keep], scores[keep], classes[keep]))
        return out

    def update(self, ref: np.ndarray, out: np.ndarray, labels: Any = None) -> None:
        """One eval sample: the float model's output, the artifact's, and per image of the batch its
        labelled (boxes xyxy [M, 4], classes [M]) or None."""
        dets = self._detections(out)
        for k, (truth, det) in enumerate(zip(self._detections(ref), dets, strict=True)):
            hits = _match(det, truth, 0.5)
            self.matched += int(hits.sum())
            self.detections += len(det[0])
            self.truths += len(truth[0])
            self.vs_float.add(det, truth)
            if labels is not None:
                self.vs_labels = self.vs_labels or _AP()
                boxes, classes = labels[k]
                self.vs_labels.add(det, (boxes, np.ones(len(boxes)), classes))

    def result(self) -> dict[str, Any]:
        """F1 at IoU 0.5, mAP@0.5 and mAP@0.5:0.95 against the float detections (and the labels), counts."""
        precision = self.matched / self.detections if self.detections else 1.0
        recall = self.matched / self.truths if self.truths else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        map50, map_all = self.vs_float.result()
        out = {"detection_agreement": f1, "precision_vs_float": precision, "recall_vs_float": recall,
               "map50_vs_float": map50, "map_vs_float": map_all, "detections": self.detections,
               "float_detections": self.truths}
        if self.vs_labels is not None:
            out["map50"], out["map"] = self.vs_labels.result()
        return out


class Detection(Generic):
    """A YOLO-style detector: one output of boxes and class scores per anchor."""

    kind = "detection"
    columns = (Column("F1 vs float", "detection_agreement", 4), Column("mAP@0.5 vs float", "map50_vs_float", 4),
               Column("mAP@.5:.95 vs float", "map_vs_float", 4), Column("mAP@0.5 (labels)", "map50", 4),
               Column("mAP@.5:.95 (labels)", "map", 4), Column("detections", "detections", 0))
    summary_columns = (Column("F1 vs float", "detection_agreement", 4, reference=False),
                       Column("mAP50 vs float", "map50_vs_float", 4, reference=False), Column("mAP50", "map50", 4))
    parity_columns = (Column("F1 vs float", "detection_agreement", 4), Column("mAP@0.5 vs float", "map50_vs_float", 4),
                      Column("F1 diff", "detection_agreement_diff", 4))
    eval_files = (BOXES_FILE[:-4], CLASSES_FILE[:-4])

    def open_data(self) -> tuple[Any, Any]:
        """The generic task's data; the eval folder's labelled boxes read and checked now, if it has them."""
        calibration, evaluation = super().open_data()
        self._truth = self._read_truth(evaluation) if isinstance(evaluation, ArrayDataset) else None
        return calibration, evaluation

    def _read_truth(self, ds: ArrayDataset) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """boxes.npy [rows, M, 4] (the model's box format and units) and classes.npy [rows, M] (int, -1
        pads an image with fewer than M boxes): per eval row, its boxes as xyxy and their classes."""
        paths = [ds.folder / BOXES_FILE, ds.folder / CLASSES_FILE]
        present = [os.path.lexists(p) for p in paths]
        if not any(present):
            return None
        if not all(present):
            missing = paths[present.index(False)].name
            raise DataError(f"eval data: {missing} is missing; labelled boxes are {BOXES_FILE} and {CLASSES_FILE} together")
        rows = ds.count * (self.spec.inputs[0].shape[0] if self.spec.inputs[0].shape else 1)
        boxes, classes = (_load_array(p) for p in paths)
        if boxes.ndim != 3 or boxes.shape[2] != 4 or boxes.dtype.kind != "f" or boxes.shape[0] < rows \
                or boxes.shape[1] > MAX_LABELLED:
            raise DataError(f"eval data: {BOXES_FILE} must be float [images, max boxes <= {MAX_LABELLED}, 4] for {rows} images, "
                            f"got {boxes.dtype} {list(boxes.shape)}")
        if classes.dtype.kind not in "iu" or classes.shape != boxes.shape[:2]:
            raise DataError(f"eval data: {CLASSES_FILE} must be integer [images, max boxes] like {BOXES_FILE}, "
                            f"got {classes.dtype} {list(classes.shape)}")
        if not np.isfinite(boxes).all():
            raise DataError(f"eval data: {BOXES_FILE} holds NaN or infinity; fix the labels")
        truth = []
        for b, c in zip(np.asarray(boxes[:rows], np.float64), np.asarray(classes[:rows], np.int64), strict=True):
            keep = c >= 0
            b = b[keep]
            if self.spec.task.box_format == "xywh":
                b = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1)
            truth.append((b, c[keep]))
        return truth

    def eval_labels(self, evaluation: Any) -> Any:
        """Each eval row's labelled boxes (xyxy) and classes, or None without labels."""
        return getattr(self, "_truth", None)

    def calibration_sets(self, ctx: Any, reference: Any) -> dict[str, Any]:
        """The generic task's sets, once the exported model shows it has the scores output edgeq.toml names."""
        scores = self.spec.task.scores
        outputs = ctx.artifact("onnx_float").meta["outputs"]
        if scores is not None and scores not in outputs:
            raise ModelError(f"[task].scores '{shown(scores)}' is not an output of the model; its outputs: "
                             f"{', '.join(shown(o) for o in outputs)}")
        return super().calibration_sets(ctx, reference)

    def task_view(self, outputs: dict[str, Any]) -> Any:
        """The boxes-and-scores output; SSD-style, the boxes [B, N, 4] and scores [B, N, C] side by side."""
        t = self.spec.task
        if t.scores is None:
            return outputs[t.output]
        return np.concatenate([np.asarray(outputs[t.output]), np.asarray(outputs[t.scores])], axis=-1)

    def task_metrics(self) -> DetectionMetrics:
        """Detections decoded with the task's box format and thresholds."""
        t = self.spec.task
        return DetectionMetrics(t.box_format, t.score_threshold, t.nms_iou, anchors_first=t.scores is not None)


def _load_array(path: Path) -> np.ndarray:
    regular_file(path, "eval data:", DataError)  # no symlink out of the folder, no FIFO or device
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"eval data: {path.name} is not a readable .npy file ({e}); re-save it with np.save") from e
