"""classification: top-1 accuracy against the labels and top-1 agreement with the float reference.

Gates it names: ``accuracy_drop`` (reference top-1 minus artifact top-1, in percentage points) and
``top1_agreement`` (share of samples whose top-1 class equals the reference's). The eval arrays
carry labels.npy (or the eval images sit in one folder per class of the labels file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.cache import memo
from edgeq.context import BuildContext
from edgeq.data import ArrayDataset
from edgeq.errors import ConfigError, DataError
from edgeq.execution import Runtime
from edgeq.inputs.shown import shown
from edgeq.tasks.generic import Generic

__all__ = ["Classification", "ClassificationMetrics", "output_classes"]


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

    def calibration_sets(self, ctx: BuildContext, reference: Callable[[], Runtime]) -> dict[str, Any]:
        """The generic task's sets, once the exported model shows that its output has a score for
        every class of the labels file (and no more): checked before quantizing and converting."""
        names = self.labels()
        output = self.spec.task.output
        if names is not None and output is not None:
            path = ctx.artifact("onnx_float").path  # its count kept in the stage cache by the file's hash (onnx loads slowly)
            classes = memo(ctx.cache, "output_classes", lambda: (ctx.cache.file_sha256(path) if ctx.cache else "", output),
                           lambda: output_classes(path, output))
            if classes is not None and classes != len(names):
                raise DataError(f"the classifier output '{shown(output)}' has {classes} classes, but "
                                f"{self.spec.task.labels.name if self.spec.task.labels else 'the labels file'} lists "
                                f"{len(names)}; fix the labels file or [task].output")
        return super().calibration_sets(ctx, reference)

    def task_metrics(self) -> ClassificationMetrics:
        """Top-1 accuracy and agreement (the class count checked against the labels file)."""
        names = self.labels()
        return ClassificationMetrics(len(names) if names is not None else None)


def output_classes(onnx_path: Path, output: str) -> int | None:
    """The size of the last axis of an ONNX model's output (None where the model leaves it dynamic)."""
    import onnx

    model = onnx.load_model(str(onnx_path), load_external_data=False)
    out = next((o for o in model.graph.output if o.name == output), None)
    dims = out.type.tensor_type.shape.dim if out is not None else []
    return int(dims[-1].dim_value) if dims and dims[-1].HasField("dim_value") and dims[-1].dim_value > 0 else None
