"""The rungs of the precision ladder made from the float32 .tflite (litert-quantizer).

fp32 and int8 come from the converter (edgeq.stages.convert); every other rung is made here from
the float32 .tflite, with float32 inputs and outputs kept:

* ``fp16``: litert-quantizer's float casting: FULLY_CONNECTED / CONV weights stored as float16 with
  a DEQUANTIZE before the op (TFLite's float16 quantization);
* ``dynamic-int8``: ``dynamic_wi8_afp32``: int8 weights per output channel, activations quantized
  on the fly by the kernels;
* ``int16x8``: ``static_wi8_ai16`` for every op, calibrated on the calibration samples (min / max);
* ``int4``: ``dynamic_wi4b32_afp32``: 4-bit weights in blocks of 32 with a scale each; CONV_2D
  weights 4-bit with a scale per output channel (litert-quantizer has no blockwise convolution;
  DEPTHWISE_CONV_2D has no int4 kernel and stays float32), and so are a FULLY_CONNECTED's whose rows
  are not a multiple of 32 long (litert-quantizer refuses those blocks).

litert-quantizer quantizes the weights of the ops it knows (FULLY_CONNECTED, CONV, EMBEDDING_LOOKUP
...) but not a GATHER's table, which is how converted models look up embeddings: a translator's
vocabulary table would stay float32 and make a third of the int4 model. ``quantized_tables`` stores
each constant table a GATHER reads (``MIN_TABLE`` values or more) at the rung's weight type - float16,
or int8 / int4 with one scale per row - behind a DEQUANTIZE, which LiteRT computes once when the
model loads (a constant input); the lookup itself stays float32.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeq._fds import redirect_output
from edgeq.mixed_precision import op_scope_regex, opcode_index
from edgeq.precisions import INT4_BLOCK, Precision

__all__ = ["MADE_HERE", "MIN_TABLE", "make_rung", "quantized_tables"]

MADE_HERE = ("fp16", "dynamic-int8", "int16x8", "int4")
MIN_TABLE = 4096  # values of a GATHER table worth storing at the rung's weight type


def make_rung(float_tflite: bytes, signature: str, rung: Precision,
              samples: Sequence[dict[str, np.ndarray]] = ()) -> bytes:
    """The float32 .tflite at ``rung`` (one of ``MADE_HERE``); ``samples`` (the signature's feeds)
    calibrate the int16x8 rung's activations."""
    if rung.alias == "int16x8":
        from edgeq.mixed_precision import quantize_mixed

        if not samples:
            raise ValueError("int16x8 needs calibration samples")
        return quantize_mixed(float_tflite, signature, samples, activation_bits=16)
    if rung.alias not in MADE_HERE:
        raise ValueError(f"the {rung.alias} rung is not made from the float32 .tflite")
    from litert_quantizer import Quantizer, qtyping, recipe
    from litert_quantizer.algorithm_manager import AlgorithmName

    sink = io.StringIO()
    with redirect_output(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
            warnings.catch_warnings():  # its progress output; LiteRT's warnings
        warnings.simplefilter("ignore")
        q = Quantizer(bytearray(float_tflite))
        if rung.alias == "fp16":
            config = qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True)
            q.update_quantization_recipe(".*", qtyping.TFLOperationName.ALL_SUPPORTED, config,
                                         algorithm_key=AlgorithmName.FLOAT_CASTING)
            table = "float16"
        elif rung.alias == "dynamic-int8":
            q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
            table = "int8"
        else:  # litert-quantizer has no blockwise convolution: a CONV_2D's int4 weights get a scale per output channel
            q.load_quantization_recipe(recipe.dynamic_wi4b32_afp32())
            channelwise = qtyping.QuantGranularity.CHANNELWISE
            q.add_dynamic_config(".*", qtyping.TFLOperationName.CONV_2D, 4, channelwise)
            short = _short_rows(float_tflite, INT4_BLOCK)
            if short:  # rows that blocks of 32 do not divide: a scale per output channel instead
                q.add_dynamic_config(op_scope_regex(short), qtyping.TFLOperationName.FULLY_CONNECTED, 4, channelwise)
            table = "int4"
        quantized = bytes(q.quantize().quantized_model)
    return quantized_tables(quantized, table)


def _short_rows(model: bytes, block: int) -> list[str]:
    """The output tensors of the FULLY_CONNECTED ops whose weight rows ``block`` does not divide."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    fc = {k for k, oc in enumerate(m.operatorCodes)
          if max(oc.builtinCode, oc.deprecatedBuiltinCode) == fb.BuiltinOperator.FULLY_CONNECTED}
    out = []
    for sg in m.subgraphs:
        for op in sg.operators:
            if op.opcodeIndex in fc and op.inputs is not None and len(op.inputs) > 1 and op.inputs[1] >= 0:
                shape = sg.tensors[op.inputs[1]].shape
                if shape is not None and len(shape) and int(shape[-1]) % block:
                    name = sg.tensors[op.outputs[0]].name
                    out.append(name.decode() if isinstance(name, bytes) else str(name))
    return out


def quantized_tables(model: bytes, dtype: str, min_values: int = MIN_TABLE) -> bytes:
    """``model`` with each constant float32 table that a GATHER reads (``min_values`` values or more)
    stored as ``dtype`` (float16, int8 or int4: symmetric, one scale per row) behind a DEQUANTIZE."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils
    from litert_quantizer.transformations.transformation_utils import pack_data

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model))

    gather = [k for k, oc in enumerate(m.operatorCodes)
              if max(oc.builtinCode, oc.deprecatedBuiltinCode) == fb.BuiltinOperator.GATHER]
    if not gather:
        return model
    done: dict[tuple[int, int], int] = {}  # (subgraph, float table) -> its dequantized twin
    for s, sg in enumerate(m.subgraphs):
        ops: list[Any] = []
        for op in sg.operators:
            if op.opcodeIndex in gather and op.inputs is not None and len(op.inputs) and op.inputs[0] >= 0:
                table = op.inputs[0]
                if (s, table) not in done:
                    twin = _stored_as(m, sg, table, dtype, min_values, fb, pack_data)
                    if twin is not None:
                        deq = fb.OperatorT()
                        deq.opcodeIndex, deq.inputs, deq.outputs = opcode_index(m, fb.BuiltinOperator.DEQUANTIZE), [twin], [table]
                        ops.append(deq)
                        done[(s, table)] = twin
            ops.append(op)
        sg.operators = ops
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m)) if done else model


def _stored_as(m: Any, sg: Any, index: int, dtype: str, min_values: int, fb: Any, pack_data: Any) -> int | None:
    """A new constant tensor holding tensor ``index``'s values as ``dtype``; ``index`` becomes the
    DEQUANTIZE's float32 output (its buffer dropped). None when ``index`` is no float32 constant of
    2 axes or more with ``min_values`` values."""
    t = sg.tensors[index]
    data = m.buffers[t.buffer].data if t.buffer else None
    shape = [int(d) for d in t.shape] if t.shape is not None else []
    if t.type != fb.TensorType.FLOAT32 or data is None or len(shape) < 2 or int(np.prod(shape)) < min_values \
            or len(data) != 4 * int(np.prod(shape)):
        return None
    if sum(x.buffer == t.buffer for g in m.subgraphs for x in g.tensors) > 1:
        return None  # the buffer is another tensor's too
    w = np.frombuffer(bytes(data), np.float32).reshape(shape)
    new = fb.TensorT()
    name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
    new.name, new.shape = f"{name}_{dtype}", list(shape)
    if dtype == "float16":
        new.type, stored = fb.TensorType.FLOAT16, w.astype(np.float16).tobytes()
    else:
        bits = {"int8": 8, "int4": 4}[dtype]
        qmax = (1 << (bits - 1)) - 1
        rows = w.reshape(shape[0], -1)
        scale = np.maximum(np.abs(rows).max(axis=1), np.float32(1e-30)) / qmax
        values = np.clip(np.round(rows / scale[:, None]), -qmax - 1, qmax).astype(np.int8)
        stored = (pack_data(4, values) if bits == 4 else values).tobytes()
        new.type = fb.TensorType.INT4 if bits == 4 else fb.TensorType.INT8
        qp = fb.QuantizationParametersT()
        qp.scale, qp.zeroPoint, qp.quantizedDimension = scale.astype(np.float32).tolist(), [0] * len(scale), 0
        new.quantization = qp
    buf = fb.BufferT()
    buf.data = np.frombuffer(stored, np.uint8)
    m.buffers.append(buf)
    new.buffer = len(m.buffers) - 1
    m.buffers[t.buffer].data = None
    t.buffer = 0
    sg.tensors.append(new)
    return len(sg.tensors) - 1
