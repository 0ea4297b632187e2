"""calibrate: the calibration set of every graph, in the format quantize and convert stream.

The task makes the sets (edgeq.tasks): a one-graph model is calibrated on the user's arrays as they
are (nothing is copied, token ids checked against the vocabulary); a translation model on sets
edgeq makes from the user's sentences with the float encoder. ``reference()`` loads the float ONNX
model on onnxruntime for a task that needs it.
"""

from __future__ import annotations

from edgeq.context import BuildContext
from edgeq.execution import Runtime
from edgeq.results import CalibrationResult
from edgeq.runtimes import open_runtime

__all__ = ["STAGE", "CalibrateStage"]


class CalibrateStage:
    """The task's calibration set of every graph."""

    name = "calibrate"
    requires: tuple[str | type, ...] = ("onnx_float",)
    produces: tuple[str | type, ...] = (CalibrationResult,)

    def cache_inputs(self, ctx: BuildContext) -> tuple[str | None]:
        """The calibration data's hash: part of the cache key of every stage after this one (edgeq.runner)."""
        return (ctx.calibration_key,)

    def run(self, ctx: BuildContext) -> CalibrationResult:
        """Ask the task for the sets."""

        def reference() -> Runtime:
            return open_runtime("onnxruntime", ctx.artifacts["onnx_float"], ctx.target.threads, ctx.build_dir / "reference")

        return CalibrationResult(ctx.task.calibration_sets(ctx, reference))


STAGE = CalibrateStage()
