"""What each stage returns: one frozen result type per stage.

The runner keeps them by type (``BuildContext.result(ExportResult)``); a stage names the result
types it reads in ``requires``, next to the artifact keys, and the runner checks both before it
runs the stage. ``facts()`` is the JSON form the report carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CalibrationResult",
    "ConvertResult",
    "ExportResult",
    "PackageResult",
    "PrecisionResult",
    "QuantizeResult",
    "StageResultType",
    "ValidationResult",
]


@dataclass(frozen=True)
class ExportResult:
    """The source model's hash and what export did to each graph (rewrites, frozen inputs, opset)."""

    source_sha256: str
    graphs: Mapping[str, Mapping[str, Any]]
    confinement: str | None = None  # the export child's write confinement (no child for ONNX models)

    def facts(self) -> dict[str, Any]:
        """The report's ``export`` section."""
        out: dict[str, Any] = {"source_sha256": self.source_sha256, "graphs": {g: dict(v) for g, v in self.graphs.items()}}
        if self.confinement is not None:
            out["confinement"] = self.confinement
        return out


@dataclass(frozen=True)
class CalibrationResult:
    """The calibration set of every graph, in the format quantize and convert stream."""

    sets: Mapping[str, Any]  # graph -> edgeq.data.ArrayDataset

    @property
    def samples(self) -> dict[str, int]:
        """Samples per graph."""
        return {g: len(ds) for g, ds in self.sets.items()}


@dataclass(frozen=True)
class QuantizeResult:
    """The quantization recipe of the INT8 ONNX model (method, ranges, per-graph samples ...)."""

    recipe: Mapping[str, Any]

    def facts(self) -> dict[str, Any]:
        """The report's ``quantization`` section."""
        return dict(self.recipe)


@dataclass(frozen=True)
class ConvertResult:
    """How the .tflite files were made and what stayed float in them."""

    converter: str
    int8_ops_set: str
    io_dtype: str
    log: str
    graphs: Mapping[str, Mapping[str, Any]]  # graph -> float_fallback, strategies
    confinement: str

    def facts(self) -> dict[str, Any]:
        """The report's ``conversion`` section."""
        return {"converter": self.converter, "int8_ops_set": self.int8_ops_set, "io_dtype": self.io_dtype,
                "log": self.log, "graphs": {g: dict(v) for g, v in self.graphs.items()}, "confinement": self.confinement}


@dataclass(frozen=True)
class PrecisionResult:
    """The rungs made from the float32 .tflite (edgeq.rungs): alias -> name, files' bytes, or why it
    could not be made; and how long each took."""

    rungs: Mapping[str, Mapping[str, Any]]

    def facts(self) -> dict[str, Any]:
        """The report's ``rungs`` section."""
        return {k: dict(v) for k, v in self.rungs.items()}


@dataclass(frozen=True)
class ValidationResult:
    """The float reference, every artifact on every runtime that ran it, and the gates."""

    reference: Mapping[str, Any]
    artifacts: Mapping[str, Any]
    gates: tuple[Mapping[str, Any], ...]
    passed: bool
    attribution: Mapping[str, Any] = field(default_factory=dict)  # graph -> the INT8 ONNX's tensors (edgeq.attribution)
    repair: Mapping[str, Any] = field(default_factory=dict)  # the tries of edgeq.repair, when a gate failed
    # artifact ("tflite_int8": as converted, "tflite_repaired") -> graph -> its tensors vs the float .tflite
    attribution_tflite: Mapping[str, Any] = field(default_factory=dict)
    precision: str = "int8"  # the rung validated and shipped
    ladder: tuple[Mapping[str, Any], ...] = ()  # --precision auto / all: one row per rung validated

    def facts(self) -> dict[str, Any]:
        """reference, artifacts, gates and passed, as the report carries them."""
        return {"reference": dict(self.reference), "artifacts": dict(self.artifacts),
                "gates": [dict(g) for g in self.gates], "passed": self.passed, "attribution": dict(self.attribution),
                "repair": dict(self.repair), "attribution_tflite": dict(self.attribution_tflite),
                "precision": self.precision, "ladder": [dict(r) for r in self.ladder]}


@dataclass(frozen=True)
class PackageResult:
    """The bundle as written: its report and the relative paths of its files."""

    report: Mapping[str, Any]
    files: tuple[str, ...] = field(default_factory=tuple)


StageResultType = (ExportResult | CalibrationResult | QuantizeResult | ConvertResult | PrecisionResult | ValidationResult
                   | PackageResult)
