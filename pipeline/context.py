"""What stages share: the build context and the artifacts they hand to each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.config import GateLimit, ModelSpec, TargetSpec
from edgeq.data import ArrayDataset

__all__ = ["Artifact", "BuildContext"]


@dataclass(frozen=True)
class Artifact:
    """A file a stage produced. ``meta`` carries what a runtime needs to feed it (I/O mapping)."""

    key: str  # "onnx_float", "onnx_int8", "saved_model", "tflite_float32", "tflite_int8"
    path: Path
    format: str  # "onnx", "saved_model", "tflite"
    precision: str  # "float32", "int8"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        if self.path.is_dir():
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return self.path.stat().st_size


@dataclass
class BuildContext:
    spec: ModelSpec
    target: TargetSpec
    build_dir: Path  # intermediate files
    bundle_dir: Path  # the bundle being staged; renamed to --out at the end
    gates: list[GateLimit]
    calibration: ArrayDataset
    eval: ArrayDataset
    log: Callable[[str], None] = lambda msg: None
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    # Results a stage publishes for later ones (validation metrics, export facts, ...).
    results: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def add(self, artifact: Artifact) -> Artifact:
        self.artifacts[artifact.key] = artifact
        return artifact
