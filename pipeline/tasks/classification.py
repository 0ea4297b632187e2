"""Classification: top-1 accuracy against the labels and top-1 agreement with the float reference.

Gates it names: ``accuracy_drop`` (reference top-1 minus artifact top-1, in percentage points) and
``top1_agreement`` (share of samples whose top-1 class equals the reference's).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ClassificationMetrics"]


class ClassificationMetrics:
    gates = ("accuracy_drop", "top1_agreement")

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
        return {
            "top1_accuracy": self.correct / self.n if self.n else 0.0,
            "top1_agreement": self.agree / self.n if self.n else 0.0,
            "samples": self.n,
        }
