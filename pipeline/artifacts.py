"""The files stages hand to each other: one ``Artifact`` per kind and graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SINGLE_GRAPH", "Artifact"]

SINGLE_GRAPH = "model"  # the name of the one graph of a model configured with top-level [[inputs]]


@dataclass(frozen=True)
class Artifact:
    """A file a stage produced for one graph. ``meta`` carries what a runtime needs to feed it."""

    key: str  # the kind: "onnx_float", "onnx_int8", "saved_model", "tflite_float32", "tflite_int8"
    path: Path
    format: str  # "onnx", "saved_model", "tflite"
    precision: str  # "float32", "int8"
    meta: dict[str, Any] = field(default_factory=dict)
    graph: str = SINGLE_GRAPH

    @property
    def bytes(self) -> int:
        """Size on disk: the file, or every file of a folder artifact (a SavedModel)."""
        if self.path.is_dir():
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return self.path.stat().st_size
