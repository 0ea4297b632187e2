"""Mixed int8 / int16 quantization of a float32 .tflite (litert-quantizer), with float32 I/O kept.

litert-quantizer (the renamed ai-edge-quantizer) quantizes a float .tflite op by op from a recipe:
every op gets 8-bit activations and weights (``a8w8``), the ops named in ``int16`` 16-bit
activations and 8-bit weights (``a16w8``); it inserts the QUANTIZE ops that requantize between the
two. An op is named by its output tensor (litert-quantizer's op scope). Its static recipes leave the
model's inputs and outputs int8 / int16; ``float_io`` puts a QUANTIZE after each input and a
DEQUANTIZE before each output that was float32 in the float model, so the artifact keeps the same
float32 signature as the converter's INT8 model. Calibration runs the float model on LiteRT over the
samples given.

Ranges: ``minmax`` (the min / max over the samples, as the TFLite converter calibrates),
``moving_average`` (litert-quantizer's default), or a per-tensor choice (``choose_ranges``): for each
activation the candidate with the least squared error of its 8-bit values on the calibration
samples, among its min / max, two percentiles and min / max scaled down (the MSE-optimal clip on a
grid).
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeq._fds import redirect_output

__all__ = ["RANGES", "choose_ranges", "float_io", "op_scope_regex", "opcode_index", "quantize_mixed"]

RANGES = ("minmax", "moving_average")
PERCENTILES = (99.9, 99.99)  # candidates: each side's percentile (0 always inside the range)
CLIP_RATIOS = tuple(round(0.30 + 0.05 * k, 2) for k in range(14))  # 0.30 ... 0.95 of min / max
MAX_VALUES = 1 << 17  # values kept per tensor (a seeded random subset of each sample's), for the error
MIN_GAIN = 0.02  # a clipped range is chosen only when its error is this much (relative) below min / max's
FIXED_RANGE_OPS = ("LOGISTIC", "SOFTMAX", "LOG_SOFTMAX", "TANH")  # their output's range is set by the op


def op_scope_regex(tensors: Sequence[str]) -> str:
    """The litert-quantizer scope regex that selects exactly the ops writing these tensors."""
    return "^(?:" + "|".join(re.escape(t) for t in tensors) + ");"


def _int8_error(v: np.ndarray, lo: float, hi: float) -> float:
    """Mean squared error of ``v`` quantized to asymmetric int8 over [lo, hi] (0 inside) and back."""
    if hi - lo <= 0:
        return float(np.mean(v * v))
    scale = (hi - lo) / 255.0
    zp = np.round(-128.0 - lo / scale)
    q = np.clip(np.round(v / scale) + zp, -128, 127)
    d = v - (q - zp) * scale
    return float(np.mean(d * d))


def choose_ranges(float_tflite: bytes, signature: str,
                  samples: Sequence[dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """Per float32 activation of the float model (by tensor name; fixed-range op outputs left out):
    ``{"min", "max", "method", "error", "error_minmax"}``, the 8-bit range with the least mean squared
    error on the samples' values: min / max, percentile 99.9 / 99.99, or min / max times a clip ratio
    (``MIN_GAIN`` better than min / max, else min / max)."""
    from edgeq.tflite_run import every_tensor

    samples = list(samples)
    run = every_tensor(float_tflite, signature, samples)
    interp, details, ops = next(run)
    fixed = {o for op in ops if op["op_name"] in FIXED_RANGE_OPS for o in op["outputs"]}
    active = [int(o) for op in ops for o in op["outputs"]] + [d["index"] for d in interp.get_input_details()]
    by_index = {d["index"]: d for d in details}
    tensors = [i for i in dict.fromkeys(active) if i not in fixed and by_index[i]["dtype"] == np.float32]
    rng = np.random.default_rng(0)
    per_sample = max(1, MAX_VALUES // max(1, len(samples)))
    lo: dict[int, float] = {}
    hi: dict[int, float] = {}
    kept: dict[int, list[np.ndarray]] = {i: [] for i in tensors}
    for _ in samples:
        next(run)
        for i in list(kept):
            try:
                v = np.asarray(interp.get_tensor(i), dtype=np.float64).ravel()
            except ValueError:  # "Tensor data is null": not kept by LiteRT (an unrolled loop's)
                del kept[i]
                continue
            if not v.size:
                continue
            lo[i], hi[i] = min(lo.get(i, 0.0), float(v.min())), max(hi.get(i, 0.0), float(v.max()))
            kept[i].append((v if v.size <= per_sample else v[rng.choice(v.size, per_sample, replace=False)]).astype(np.float32))
    chosen: dict[str, dict[str, Any]] = {}
    for i, parts in kept.items():
        if not parts or i not in lo:
            continue
        v = np.concatenate(parts).astype(np.float64)
        mn, mx = lo[i], hi[i]
        candidates = [("min/max", mn, mx)]
        candidates += [(f"percentile {p}", min(0.0, float(np.percentile(v, 100.0 - p))),
                        max(0.0, float(np.percentile(v, p)))) for p in PERCENTILES]
        candidates += [(f"MSE clip {r:.2f}", mn * r, mx * r) for r in CLIP_RATIOS]
        errors = [_int8_error(v, a, b) for _, a, b in candidates]
        best = int(np.argmin(errors))
        if errors[best] >= (1.0 - MIN_GAIN) * errors[0]:
            best = 0
        method, a, b = candidates[best]
        chosen[by_index[i]["name"]] = {"min": a, "max": b, "method": method, "error": errors[best],
                                       "error_minmax": errors[0]}
    return chosen


def quantize_mixed(float_tflite: bytes, signature: str, samples: Sequence[dict[str, np.ndarray]],
                   int16: Sequence[str] = (), ranges: str = "minmax",
                   tensor_ranges: dict[str, dict[str, Any]] | None = None, float_ops: Sequence[str] = (),
                   activation_bits: int = 8) -> bytes:
    """The float model quantized: a8w8 everywhere, a16w8 for the ops writing the tensors in ``int16``;
    float32 inputs and outputs. ``samples``: the signature's feeds (TFLite names and layout).
    ``ranges``: each tensor's range is the min / max over all samples (``minmax``, as the TFLite
    converter calibrates), or the moving average of the samples' min / max (``moving_average``,
    litert-quantizer's default: rare outliers are clipped). ``tensor_ranges`` (``choose_ranges``)
    replaces the calibrated range of each 8-bit tensor it names. The ops writing the tensors in
    ``float_ops`` are left in float32 (litert-quantizer's no_quantize: DEQUANTIZE before, QUANTIZE
    after). ``activation_bits`` 16: a16w8 everywhere (the int16x8 rung)."""
    from litert_quantizer import Quantizer, calibrator
    from litert_quantizer.algorithm_manager import AlgorithmName
    from litert_quantizer.utils import qsv_utils

    if ranges not in RANGES:
        raise ValueError(f"ranges must be one of {RANGES}, got {ranges!r}")
    sink = io.StringIO()
    with redirect_output(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
            warnings.catch_warnings():  # its progress bars (fd and Python level); LiteRT's debug warning
        warnings.simplefilter("ignore")
        q = Quantizer(bytearray(float_tflite))
        q.add_static_config(".*", "*", activation_bits, 8)
        if int16:
            q.add_static_config(op_scope_regex(int16), "*", 16, 8)
        if float_ops:
            q.update_quantization_recipe(op_scope_regex(float_ops), "*", algorithm_key=AlgorithmName.NO_QUANTIZE)
        update = qsv_utils.min_max_update if ranges == "minmax" else qsv_utils.moving_average_update
        calibration = None
        for mode in (calibrator.CalibrationMode.CALIBRATION_PRESERVE_ALL_TENSORS,
                     calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED):
            calib = calibrator.Calibrator(bytearray(float_tflite), num_threads=1, mode=mode, qsv_update_func=update)
            try:
                calib.calibrate({signature: list(samples)}, q._recipe_manager)  # Quantizer.calibrate, with our update
            except ValueError as e:  # "Tensor data is null" (an unrolled LSTM): read the tensors as ops write them
                if "null" not in str(e) or mode != calibrator.CalibrationMode.CALIBRATION_PRESERVE_ALL_TENSORS:
                    raise
                continue
            calibration = calib.get_model_qsvs()
            break
        if calibration is not None and tensor_ranges:
            wide = set(int16)
            for name, r in tensor_ranges.items():
                qsv = calibration.get(name)
                if qsv is not None and name not in wide and r["method"] != "min/max":
                    qsv["min"] = np.full_like(np.asarray(qsv["min"], dtype=np.float32), r["min"])
                    qsv["max"] = np.full_like(np.asarray(qsv["max"], dtype=np.float32), r["max"])
        quantized = bytes(q.quantize(calibration, enable_progress_report=False, enable_progress_bar=False).quantized_model)
    return float_io(quantized, float_tflite)


def opcode_index(model: Any, code: int) -> int:
    """The index of builtin op ``code`` in a flatbuffer model object's operator codes (added if missing)."""
    from ai_edge_litert import schema_py_generated as fb

    for k, oc in enumerate(model.operatorCodes):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
            return k
    oc = fb.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def float_io(quantized: bytes, float_tflite: bytes) -> bytes:
    """``quantized`` with float32 inputs and outputs wherever ``float_tflite`` has them: a QUANTIZE
    op after each such input, a DEQUANTIZE before each such output (names and signature unchanged)."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    # read_model_from_bytearray resolves buffers stored after the flatbuffer by offset, as
    # litert-quantizer writes them; the object is written back with every buffer inline
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(quantized))
    ref = flatbuffer_utils.read_model_from_bytearray(bytearray(float_tflite))

    for sg_index, (sg, ref_sg) in enumerate(zip(model.subgraphs, ref.subgraphs, strict=True)):
        renamed: dict[int, int] = {}

        def float_twin(index: int, name: Any, sg: Any = sg) -> int:
            old = sg.tensors[index]
            new = fb.TensorT()
            new.name, new.shape, new.shapeSignature = name, old.shape, old.shapeSignature
            new.type, new.buffer = fb.TensorType.FLOAT32, 0
            old.name = (old.name.decode() if isinstance(old.name, bytes) else old.name) + "_quantized_io"
            sg.tensors.append(new)
            return len(sg.tensors) - 1

        def was_float(index: int, ref_index: int, ref_sg: Any = ref_sg, sg: Any = sg) -> bool:
            # by position: litert-quantizer may rename an output it quantizes ("e" -> "e_quantized")
            return ref_sg.tensors[ref_index].type == fb.TensorType.FLOAT32 \
                and sg.tensors[index].type in (fb.TensorType.INT8, fb.TensorType.INT16)

        head: list[Any] = []  # QUANTIZE after each float input
        tail: list[Any] = []  # DEQUANTIZE before each float output
        for ends, ref_ends, code, ops in ((sg.inputs, ref_sg.inputs, fb.BuiltinOperator.QUANTIZE, head),
                                          (sg.outputs, ref_sg.outputs, fb.BuiltinOperator.DEQUANTIZE, tail)):
            for pos, (index, ref_index) in enumerate(zip(list(ends), list(ref_ends), strict=True)):
                if was_float(index, ref_index):
                    new = float_twin(index, ref_sg.tensors[ref_index].name)
                    op = fb.OperatorT()
                    op.opcodeIndex = opcode_index(model, code)
                    op.inputs, op.outputs = ([new], [index]) if ops is head else ([index], [new])
                    ops.append(op)
                    ends[pos] = renamed[index] = new
        sg.operators = head + list(sg.operators) + tail
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == sg_index:
                for t in [*(sig.inputs or []), *(sig.outputs or [])]:
                    t.tensorIndex = renamed.get(t.tensorIndex, t.tensorIndex)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
