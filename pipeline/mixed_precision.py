"""Mixed int8 / int16 quantization of a float32 .tflite (litert-quantizer), with float32 I/O kept.

litert-quantizer (the renamed ai-edge-quantizer) quantizes a float .tflite op by op from a recipe:
every op gets 8-bit activations and weights (``a8w8``), the ops named in ``int16`` 16-bit
activations and 8-bit weights (``a16w8``); it inserts the QUANTIZE ops that requantize between the
two. An op is named by its output tensor (litert-quantizer's op scope). Its static recipes leave the
model's inputs and outputs int8 / int16; ``float_io`` puts a QUANTIZE after each input and a
DEQUANTIZE before each output that was float32 in the float model, so the artifact keeps the same
float32 signature as the converter's INT8 model. Calibration runs the float model on LiteRT over the
samples given.
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

__all__ = ["RANGES", "float_io", "op_scope_regex", "quantize_mixed"]

RANGES = ("minmax", "moving_average")


def op_scope_regex(tensors: Sequence[str]) -> str:
    """The litert-quantizer scope regex that selects exactly the ops writing these tensors."""
    return "^(?:" + "|".join(re.escape(t) for t in tensors) + ");"


def quantize_mixed(float_tflite: bytes, signature: str, samples: Sequence[dict[str, np.ndarray]],
                   int16: Sequence[str] = (), ranges: str = "minmax") -> bytes:
    """The float model quantized: a8w8 everywhere, a16w8 for the ops writing the tensors in ``int16``;
    float32 inputs and outputs. ``samples``: the signature's feeds (TFLite names and layout).
    ``ranges``: each tensor's range is the min / max over all samples (``minmax``, as the TFLite
    converter calibrates), or the moving average of the samples' min / max (``moving_average``,
    litert-quantizer's default: rare outliers are clipped)."""
    from litert_quantizer import Quantizer, calibrator
    from litert_quantizer.utils import qsv_utils

    if ranges not in RANGES:
        raise ValueError(f"ranges must be one of {RANGES}, got {ranges!r}")
    sink = io.StringIO()
    with redirect_output(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
            warnings.catch_warnings():  # its progress bars (fd and Python level); LiteRT's debug warning
        warnings.simplefilter("ignore")
        q = Quantizer(bytearray(float_tflite))
        q.add_static_config(".*", "*", 8, 8)
        if int16:
            q.add_static_config(op_scope_regex(int16), "*", 16, 8)
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
        quantized = bytes(q.quantize(calibration, enable_progress_report=False, enable_progress_bar=False).quantized_model)
    return float_io(quantized, float_tflite)


def float_io(quantized: bytes, float_tflite: bytes) -> bytes:
    """``quantized`` with float32 inputs and outputs wherever ``float_tflite`` has them: a QUANTIZE
    op after each such input, a DEQUANTIZE before each such output (names and signature unchanged)."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    # read_model_from_bytearray resolves buffers stored after the flatbuffer by offset, as
    # litert-quantizer writes them; the object is written back with every buffer inline
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(quantized))
    ref = flatbuffer_utils.read_model_from_bytearray(bytearray(float_tflite))

    def opcode(code: int) -> int:
        for k, oc in enumerate(model.operatorCodes):
            if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
                return k
        oc = fb.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        model.operatorCodes.append(oc)
        return len(model.operatorCodes) - 1

    for sg_index, (sg, ref_sg) in enumerate(zip(model.subgraphs, ref.subgraphs, strict=True)):
        renamed: dict[int, int] = {}

        def float_twin(index: int, sg: Any = sg) -> int:
            old = sg.tensors[index]
            new = fb.TensorT()
            new.name, new.shape, new.shapeSignature = old.name, old.shape, old.shapeSignature
            new.type, new.buffer = fb.TensorType.FLOAT32, 0
            old.name = (old.name.decode() if isinstance(old.name, bytes) else old.name) + "_quantized_io"
            sg.tensors.append(new)
            return len(sg.tensors) - 1

        def was_float(index: int, ref_sg: Any = ref_sg, sg: Any = sg) -> bool:
            name = sg.tensors[index].name
            return any(t.name == name and t.type == fb.TensorType.FLOAT32 for t in ref_sg.tensors) \
                and sg.tensors[index].type in (fb.TensorType.INT8, fb.TensorType.INT16)

        head: list[Any] = []  # QUANTIZE after each float input
        tail: list[Any] = []  # DEQUANTIZE before each float output
        for ends, code, ops in ((sg.inputs, fb.BuiltinOperator.QUANTIZE, head),
                                (sg.outputs, fb.BuiltinOperator.DEQUANTIZE, tail)):
            for pos, index in enumerate(list(ends)):
                if was_float(index):
                    new = float_twin(index)
                    op = fb.OperatorT()
                    op.opcodeIndex = opcode(code)
                    op.inputs, op.outputs = ([new], [index]) if ops is head else ([index], [new])
                    ops.append(op)
                    ends[pos] = renamed[index] = new
        sg.operators = head + list(sg.operators) + tail
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == sg_index:
                for t in [*(sig.inputs or []), *(sig.outputs or [])]:
                    t.tensorIndex = renamed.get(t.tensorIndex, t.tensorIndex)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
