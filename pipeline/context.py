"""What stages share: the build context and the artifacts they hand to each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.config import SINGLE_GRAPH, ModelSpec, TargetSpec
from edgeq.data import ArrayDataset
from edgeq.gates import GateLimit

__all__ = ["Artifact", "BuildContext"]


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
        if self.path.is_dir():
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return self.path.stat().st_size


@dataclass
class BuildContext:
    """The state of one build. ``artifacts[kind][graph]`` is the artifact of that kind for a graph;
    ``graph_calibration[graph]`` is the calibration set of a graph (the ``calibrate`` stage fills it)."""

    spec: ModelSpec
    target: TargetSpec
    build_dir: Path  # intermediate files
    bundle_dir: Path  # the bundle being staged; renamed to --out at the end
    gates: list[GateLimit]
    calibration: Any  # the user's calibration data: ArrayDataset, or ParallelText for translation
    eval: Any  # the user's eval data: ArrayDataset, or ParallelText for translation
    artifacts: dict[str, dict[str, Artifact]] = field(default_factory=dict)
    graph_calibration: dict[str, ArrayDataset] = field(default_factory=dict)
    # Results a stage publishes for later ones (validation metrics, export facts, ...).
    results: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    trust_model: bool = False  # --trust-model: Keras Lambda layers and custom objects may load

    def add(self, artifact: Artifact) -> Artifact:
        self.artifacts.setdefault(artifact.key, {})[artifact.graph] = artifact
        return artifact

    def artifact(self, kind: str, graph: str | None = None) -> Artifact:
        """The artifact of ``kind`` for ``graph`` (default: the model's only graph)."""
        return self.artifacts[kind][graph if graph is not None else self.spec.single.name]
