"""quantize: float ONNX -> static INT8 ONNX (QDQ) with onnxruntime.quantization.

Rules:

* Weights: int8, symmetric, per output channel (per tensor if [quantization].per_channel = false).
  Activations: int8, asymmetric, calibrated on the user's calibration data with the method from
  edgeq.toml (minmax | entropy | percentile).
* Calibration data is streamed through a ``CalibrationDataReader`` one sample at a time; minmax
  folds the collected ranges every ``_FLUSH_EVERY`` samples so memory stays flat.
* The graph is pre-processed with ``quant_pre_process`` (shape inference, fusions) first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from edgeq.context import Artifact, BuildContext
from edgeq.data import ArrayDataset
from edgeq.stages import StageResult

__all__ = ["STAGE", "QuantizeStage", "StreamingReader"]

_FLUSH_EVERY = 64


class StreamingReader:
    """An onnxruntime ``CalibrationDataReader`` over an ``ArrayDataset``, one sample per call."""

    def __init__(self, dataset: ArrayDataset) -> None:
        self.dataset = dataset
        self._it: Iterator[dict[str, np.ndarray]] = iter(dataset)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.dataset)

    def __len__(self) -> int:
        return len(self.dataset)


class QuantizeStage:
    name = "quantize"
    requires = ("onnx_float",)
    produces = ("onnx_int8",)

    def run(self, ctx: BuildContext) -> StageResult:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        q = ctx.spec.quantization
        logging.getLogger("root").setLevel(logging.ERROR)
        reader_cls = type("EdgeqCalibrationReader", (StreamingReader, CalibrationDataReader), {})
        method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[q.method]
        extra = {
            "WeightSymmetric": True,
            "ActivationSymmetric": False,
            "CalibMaxIntermediateOutputs": _FLUSH_EVERY,
        }
        if q.method == "percentile":
            extra["CalibPercentile"] = q.percentile
        for graph in ctx.spec.graphs:
            src = ctx.artifact("onnx_float", graph.name)
            pre = ctx.build_dir / f"{graph.name}.preprocessed.onnx"
            out = ctx.build_dir / f"{graph.name}.int8.onnx"
            quant_pre_process(str(src.path), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre), str(out), reader_cls(ctx.graph_calibration[graph.name]),
                quant_format=QuantFormat.QDQ,
                per_channel=q.per_channel,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
                extra_options=extra,
            )
            ctx.add(Artifact("onnx_int8", out, "onnx", "int8", {"outputs": src.meta["outputs"]}, graph=graph.name))
        recipe = {
            "format": "QDQ",
            "weights": "int8 symmetric " + ("per-channel" if q.per_channel else "per-tensor"),
            "activations": "int8 asymmetric per-tensor",
            "calibration_method": q.method,
            "calibration_samples": {g: len(ds) for g, ds in ctx.graph_calibration.items()},
            **({"percentile": q.percentile} if q.method == "percentile" else {}),
        }
        ctx.results["quantize"] = recipe
        return StageResult(("onnx_int8",), recipe)


STAGE = QuantizeStage()
