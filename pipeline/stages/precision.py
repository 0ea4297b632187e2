"""precision: the rungs of the precision ladder the build validates, made from the float32 .tflite.

Rules:

* fp32 and int8 are the converter's files (edgeq.stages.convert); fp16, dynamic-int8, int16x8 and
  int4 are made here by litert-quantizer (edgeq.rungs), per graph, with the float32 file's float32
  inputs and outputs and its signature.
* A build makes the rung it ships (``--precision``, ``[target] precision``, the target's default);
  ``--precision auto`` / ``all`` make every rung the target allows. A rung that cannot be made is an
  error when it is the one asked for (exit 2, naming the rung and the cause); in a ladder it is
  listed with its error and the others go on.
* int16x8's activations are calibrated on the calibration set (its first ``CALIBRATION_SAMPLES``).
"""

from __future__ import annotations

import time
from typing import Any

from edgeq.artifacts import Artifact
from edgeq.context import BuildContext
from edgeq.errors import ModelError, one_line
from edgeq.precisions import precision
from edgeq.results import CalibrationResult, PrecisionResult
from edgeq.stages.convert import io_mapping, onnx_output_shapes
from edgeq.tflite_io import to_tflite

__all__ = ["CALIBRATION_SAMPLES", "STAGE", "PrecisionStage"]

CALIBRATION_SAMPLES = 200  # at most, for the int16x8 rung's activation ranges


class PrecisionStage:
    """Each rung the build validates that the converter did not write, per graph."""

    name = "precision"
    cacheable = True  # its outputs are kept in the stage cache (edgeq.runner)
    requires: tuple[str | type, ...] = ("onnx_float", "tflite_float32", CalibrationResult)
    produces: tuple[str | type, ...] = (PrecisionResult,)

    def cache_inputs(self, ctx: BuildContext) -> tuple[list[str]]:
        """The rungs it makes: part of its cache key (edgeq.runner)."""
        return (ctx.rungs(),)

    def run(self, ctx: BuildContext) -> PrecisionResult:
        """Make every rung of ``ctx.rungs()`` that is made from the float32 .tflite."""
        from edgeq.rungs import MADE_HERE, make_rung

        rungs: dict[str, dict[str, Any]] = {}
        shapes: dict[str, dict[str, list[int]]] = {}  # each graph's ONNX output shapes, read once
        for alias in ctx.rungs():
            rung = precision(alias)
            if alias not in MADE_HERE:
                rungs[alias] = {"name": rung.name, "made_by": "converter"}
                continue
            t0 = time.perf_counter()
            files: dict[str, Artifact] = {}
            try:
                for graph in ctx.spec.graphs:
                    f32 = ctx.artifact("tflite_float32", graph.name)
                    feeds = []
                    if alias == "int16x8":
                        sets = ctx.result(CalibrationResult).sets[graph.name]
                        feeds = [to_tflite(feed, f32.meta) for _, feed in zip(range(CALIBRATION_SAMPLES), sets, strict=False)]
                    data = make_rung(f32.path.read_bytes(), f32.meta["signature"], rung, feeds)
                    path = ctx.build_dir / f"{graph.name}.{alias}.tflite"
                    path.write_bytes(data)
                    onnx = ctx.artifact("onnx_float", graph.name)
                    if graph.name not in shapes:
                        shapes[graph.name] = onnx_output_shapes(onnx.path)
                    meta = io_mapping(path, graph.inputs, onnx.meta["outputs"], shapes[graph.name])
                    files[graph.name] = Artifact(rung.key, path, "tflite", alias, meta, graph=graph.name)
            except Exception as e:
                if alias == ctx.precision and not ctx.ladder:
                    raise ModelError(f"the {alias} rung ({rung.name}) could not be made from the float32 .tflite: "
                                     f"{one_line(e)}; choose another --precision (see `edgeq precisions`)") from e
                rungs[alias] = {"name": rung.name, "made_by": "litert-quantizer", "error": one_line(e)[:300]}
                continue
            for art in files.values():
                ctx.add(art)
            rungs[alias] = {"name": rung.name, "made_by": "litert-quantizer",
                            "bytes": sum(a.bytes for a in files.values()), "seconds": round(time.perf_counter() - t0, 3)}
        return PrecisionResult(rungs)


STAGE = PrecisionStage()
