"""quantize: float ONNX -> static INT8 ONNX (QDQ) with onnxruntime.quantization.

Rules:

* Weights: int8, symmetric, per output channel (per tensor if [quantization].per_channel = false).
  Activations: int8, asymmetric, calibrated on the user's calibration data with the method from
  edgeq.toml (minmax | entropy | percentile).
* edgeq calibrates itself with onnxruntime's calibrators (``create_calibrator``), every sample of
  the calibration set counting: the set is fed in chunks of at most ``_CHUNK`` samples, one
  ``collect_data`` call each, so only one chunk's activations are held in memory at a time, and
  onnxruntime folds each chunk into its running state. The ranges are exactly those of one pass
  over every sample: minmax keeps the smallest minimum and the largest maximum; for entropy and
  percentile a first streaming pass finds each tensor's value range and the histograms are laid
  out on it before the first chunk (``_seed_histograms``), so that every chunk is counted on the
  bins one pass would use (left to grow chunk by chunk, onnxruntime's histograms depend on the
  order of the samples, and entropy then clips ranges to a fraction of what one pass gives).
  The ranges are saved to ``<graph>.calibration.json`` in the build folder and ``quantize_static``
  reads them from there (its calibration cache) instead of calibrating again. onnxruntime's
  ``CalibMaxIntermediateOutputs`` is not used: in onnxruntime 1.32 minmax drops each full batch of
  outputs instead of folding it in, and the histogram methods ignore it.
* The graph is pre-processed with ``quant_pre_process`` (shape inference, fusions) first.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.artifacts import Artifact
from edgeq.context import BuildContext
from edgeq.data import ArrayDataset
from edgeq.results import CalibrationResult, QuantizeResult

__all__ = ["STAGE", "QuantizeStage", "StreamingReader", "calibrate"]

_CHUNK = 64  # calibration samples per collect_data call: the most activations held at once


class StreamingReader:
    """An onnxruntime ``CalibrationDataReader`` over samples ``start`` to ``stop`` (default: all) of an
    ``ArrayDataset``, one sample per call."""

    def __init__(self, dataset: ArrayDataset, start: int = 0, stop: int | None = None) -> None:
        self.dataset = dataset
        self.start = start
        self.stop = len(dataset) if stop is None else min(stop, len(dataset))
        self._next = start

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next sample's feeds, or None past ``stop``."""
        if self._next >= self.stop:
            return None
        self._next += 1
        return self.dataset.sample(self._next - 1)

    def rewind(self) -> None:
        """Start again from sample ``start``."""
        self._next = self.start

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


@functools.cache
def _reader_class() -> type[StreamingReader]:
    from onnxruntime.quantization import CalibrationDataReader

    return type("EdgeqCalibrationReader", (StreamingReader, CalibrationDataReader), {})


def _reader(dataset: ArrayDataset, start: int = 0, stop: int | None = None) -> StreamingReader:
    """A ``StreamingReader`` that is also an onnxruntime ``CalibrationDataReader``."""
    return _reader_class()(dataset, start, stop)


def calibrate(model: Path, dataset: ArrayDataset, method: Any, options: dict[str, Any], work: Path,
              chunk: int = _CHUNK) -> tuple[Any, int]:
    """Activation ranges of ``model`` (a pre-processed float ONNX) over every sample of ``dataset``, fed
    ``chunk`` samples per ``collect_data`` call. ``options`` are the calibrator options quantize_static
    would pass (``percentile``, ...). Returns onnxruntime's ``TensorsData`` and the number of chunks.
    The calibrator's augmented model is written in ``work`` and removed; its session is freed."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    if len(dataset) == 0:
        raise ValueError("no calibration samples")
    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # what quantize_static calibrates by default
    augmented = work / f"{model.stem}.calibration-augmented.onnx"
    calibrator = create_calibrator(model, op_types, augmented_model_path=str(augmented),
                                   calibrate_method=method, extra_options=options)
    try:
        if method != CalibrationMethod.MinMax:
            _seed_histograms(calibrator, dataset)
        chunks = 0
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram collector prints on every call
            for start in range(0, len(dataset), chunk):
                calibrator.collect_data(_reader(dataset, start, start + chunk))
                chunks += 1
            ranges = calibrator.compute_data()
    finally:
        calibrator.infer_session = None
        calibrator.clear_collected_data()
        del calibrator
        augmented.unlink(missing_ok=True)
    if not isinstance(ranges, TensorsData):
        raise TypeError(f"onnxruntime's calibrator returned {type(ranges).__name__}, not TensorsData")
    return ranges, chunks


def _seed_histograms(calibrator: Any, dataset: ArrayDataset) -> None:
    """Lay out the histograms of an entropy or percentile calibrator on each tensor's range over the whole
    data set, before the first ``collect_data``, exactly as one ``collect_data`` over every sample would.

    One streaming pass through the calibrator's session finds each tensor's min and max (and those of its
    absolute values, which percentile's symmetric histograms span); the seeded histograms are empty. Each
    chunk's values then never pass the seeded range, so onnxruntime's merge counts them on the same bins
    (no re-binning) and keeps the seeded min/max: the result is one pass's histogram, count for count."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    session = calibrator.infer_session
    names = [o.name for o in session.get_outputs()]
    stats: dict[str, tuple[Any, Any, Any, Any]] = {}  # tensor -> min, max, min |x|, max |x|
    reader = StreamingReader(dataset)
    while (feeds := reader.get_next()) is not None:
        for name, value in zip(names, session.run(None, feeds), strict=True):
            arr = np.asarray(value).ravel()
            if name not in calibrator.tensors_to_calibrate or arr.size == 0:
                continue
            absolute = np.abs(arr)
            new = (np.nanmin(arr), np.nanmax(arr), np.nanmin(absolute), np.nanmax(absolute))
            old = stats.get(name)
            stats[name] = new if old is None else (min(old[0], new[0]), max(old[1], new[1]),
                                                   min(old[2], new[2]), max(old[3], new[3]))
    collector = HistogramCollector(method=calibrator.method, symmetric=calibrator.symmetric,
                                   num_bins=calibrator.num_bins, num_quantized_bins=calibrator.num_quantized_bins,
                                   percentile=calibrator.percentile, scenario=calibrator.scenario)
    on_absolute_values = collector.method == "percentile" and collector.symmetric  # collect_absolute_value
    for name, (lo, hi, abs_lo, abs_hi) in stats.items():
        dtype = lo.dtype
        # The ranges stay numpy values of the model's dtype, as onnxruntime passes them: the same edges.
        if on_absolute_values:
            hist, edges = np.histogram(np.empty(0, dtype), bins=collector.num_bins,
                                       range=(abs_lo, abs_hi))  # type: ignore[arg-type]
            collector.histogram_dict[name] = (np.zeros_like(hist), edges.astype(dtype), lo, hi)
        else:  # collect_value: bins over [-t, t], t the largest magnitude
            t = np.array(max(abs(lo), abs(hi)), dtype=dtype)
            hist, edges = np.histogram(np.empty(0, dtype), collector.num_bins, range=(-t, t))  # type: ignore[arg-type]
            collector.histogram_dict[name] = (np.zeros_like(hist), edges, lo, hi, t)
    calibrator.collector = collector


class QuantizeStage:
    """The quantize stage: each graph's float ONNX to a static INT8 (QDQ) ONNX, calibrated on the user's data."""

    name = "quantize"
    cacheable = True  # its outputs are kept in the stage cache (edgeq.runner)
    requires: tuple[str | type, ...] = ("onnx_float", CalibrationResult)
    produces: tuple[str | type, ...] = ("onnx_int8", QuantizeResult)

    def run(self, ctx: BuildContext) -> QuantizeResult:
        """Calibrate and quantize every graph with onnxruntime, adding each INT8 ONNX; returns the recipe used."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.calibrate import save_tensors_data
        from onnxruntime.quantization.shape_inference import quant_pre_process

        q = ctx.spec.quantization
        sets = ctx.result(CalibrationResult)
        logging.getLogger("root").setLevel(logging.ERROR)
        method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[q.method]
        extra = {"WeightSymmetric": True, "ActivationSymmetric": False}
        calib_options: dict[str, Any] = {}  # quantize_static's Calib* extra options, by calibrator name
        if q.method == "percentile":
            extra["CalibPercentile"] = q.percentile
            calib_options["percentile"] = q.percentile
        chunks: dict[str, int] = {}
        for graph in ctx.spec.graphs:
            src = ctx.artifact("onnx_float", graph.name)
            pre = ctx.build_dir / f"{graph.name}.preprocessed.onnx"
            out = ctx.build_dir / f"{graph.name}.int8.onnx"
            cache = ctx.build_dir / f"{graph.name}.calibration.json"
            quant_pre_process(str(src.path), str(pre), skip_symbolic_shape=True)
            ranges, chunks[graph.name] = calibrate(pre, sets.sets[graph.name], method, calib_options,
                                                   ctx.build_dir)
            save_tensors_data(ranges, cache)  # replaces any older file: quantize_static must read these ranges
            del ranges
            quantize_static(
                str(pre), str(out), None,
                calibration_cache_path=str(cache),
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
            "calibration_samples": sets.samples,
            "calibration_chunks": chunks,
            **({"percentile": q.percentile} if q.method == "percentile" else {}),
        }
        return QuantizeResult(recipe)


STAGE = QuantizeStage()
