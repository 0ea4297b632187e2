"""classification: top-1 accuracy against the labels and top-1 agreement with the float reference.

Gates it names: ``accuracy_drop`` (reference top-1 minus artifact top-1, in percentage points) and
``top1_agreement`` (share of samples whose top-1 class equals the reference's). The eval arrays
carry labels.npy (or the eval images sit in one folder per class of the labels file).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq.data import ArrayDataset
from edgeq.errors import ConfigError, DataError
from edgeq.tasks.generic import Generic

__all__ = ["Classification", "ClassificationMetrics"]


class ClassificationMetrics:
    """Top-1 accuracy and agreement with the reference, accumulated one eval sample at a time."""

    def __init__(self, num_classes: int | None = None) -> None:
        self.num_classes = num_classes
        self.correct = 0
        self.agree = 0
        self.n = 0

    def update(self, ref_logits: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> None:
        """One eval sample: ``logits`` shaped [batch, classes] (or [classes]); ``labels`` [batch]."""
        ref = np.asarray(ref_logits).reshape(len(labels), -1)
        out = np.asarray(logits).reshape(len(labels), -1)
        if self.num_classes is not None and out.shape[1] != self.num_classes:
            raise ValueError(f"the classifier output has {out.shape[1]} classes, labels.txt lists {self.num_classes}")
        pred = out.argmax(axis=1)
        self.correct += int((pred == labels).sum())
        self.agree += int((pred == ref.argmax(axis=1)).sum())
        self.n += len(labels)

    def result(self) -> dict[str, Any]:
        """Top-1 accuracy, agreement and the number of samples."""
        return {
            "top1_accuracy": self.correct / self.n if self.n else 0.0,
            "top1_agreement": self.agree / self.n if self.n else 0.0,
            "samples": self.n,
        }


class Classification(Generic):
    """A classifier: [task].output holds the logits (or probabilities) of each class."""

    kind = "classification"
    wants_labels = True
    top1_parity = True

    def class_names(self) -> list[str] | None:
        """Eval images sit in one folder per class of the labels file."""
        return self.labels()

    def _check_image_eval(self, names: list[str] | None) -> None:
        if names is None:
            raise ConfigError("eval images of a classifier need [task].labels (class names = the image folders' names)")

    def check_labels(self, evaluation: ArrayDataset) -> None:
        """Class ids in labels.npy must name a line of the labels file."""
        names = self.labels()
        if names is None:
            return
        path = self.spec.task.labels
        assert path is not None
        if not names:
            raise DataError(f"labels file {path.name} is empty; write one class name per line")
        ids = evaluation.sample_labels()
        bad = ids[(ids < 0) | (ids >= len(names))]
        if bad.size:
            raise DataError(
                f"eval data: labels.npy holds class id {int(bad[0])}, but {path.name} lists "
                f"{len(names)} classes (ids 0..{len(names) - 1}); fix the labels or the labels file"
            )

    def task_metrics(self) -> ClassificationMetrics:
        """Top-1 accuracy and agreement (the class count checked against the labels file)."""
        names = self.labels()
        return ClassificationMetrics(len(names) if names is not None else None)
