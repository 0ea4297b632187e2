"""Small float .tflite models written with LiteRT's flatbuffer schema (no TensorFlow): what the
inspection and precision-rung tests quantize."""

from __future__ import annotations

from typing import Any

import numpy as np


def fc_model(f16: bool = False, table_rows: int = 0) -> bytes:
    """Two FULLY_CONNECTED layers, x[1,64] -> 64 -> 16 (output y); ``f16``: w1 stored float16 behind a
    DEQUANTIZE. ``table_rows``: also an int32 input ids[4] looking up a float32 table[table_rows, 64]
    with GATHER (output e[4, 64]), as a converted embedding does."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    rng = np.random.default_rng(0)
    arrays = {"w1": rng.standard_normal((64, 64)).astype(np.float16 if f16 else np.float32),
              "b1": np.zeros(64, np.float32), "w2": rng.standard_normal((16, 64)).astype(np.float32),
              "table": rng.standard_normal((max(table_rows, 1), 64)).astype(np.float32)}
    model, sg = fb.ModelT(), fb.SubGraphT()
    model.version, model.buffers, sg.tensors = 3, [fb.BufferT()], []

    def tensor(name: str, shape: tuple[int, ...], data: np.ndarray | None = None, kind: int = fb.TensorType.FLOAT32) -> int:
        t, b = fb.TensorT(), fb.BufferT()
        t.name, t.shape, t.type, t.buffer = name.encode(), list(shape), kind, len(model.buffers)
        b.data = None if data is None else np.frombuffer(data.tobytes(), np.uint8)
        model.buffers.append(b)
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    codes = [fb.BuiltinOperator.FULLY_CONNECTED, fb.BuiltinOperator.DEQUANTIZE, fb.BuiltinOperator.GATHER]
    model.operatorCodes = []
    for code in codes:
        c = fb.OperatorCodeT()
        c.builtinCode = c.deprecatedBuiltinCode = code
        c.version = 1
        model.operatorCodes.append(c)

    def op(code: int, ins: list[int], outs: list[int]) -> Any:
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = codes.index(code), ins, outs
        if code == fb.BuiltinOperator.FULLY_CONNECTED:
            o.builtinOptionsType, o.builtinOptions = fb.BuiltinOptions.FullyConnectedOptions, fb.FullyConnectedOptionsT()
        if code == fb.BuiltinOperator.GATHER:
            o.builtinOptionsType, o.builtinOptions = fb.BuiltinOptions.GatherOptions, fb.GatherOptionsT()
        return o

    x = tensor("x", (1, 64))
    sg.operators = []
    w1 = tensor("w1", (64, 64), arrays["w1"], fb.TensorType.FLOAT16 if f16 else fb.TensorType.FLOAT32)
    if f16:
        w1_f32 = tensor("w1_dequantized", (64, 64))
        sg.operators.append(op(fb.BuiltinOperator.DEQUANTIZE, [w1], [w1_f32]))
        w1 = w1_f32
    b1, h = tensor("b1", (64,), arrays["b1"]), tensor("h", (1, 64))
    w2, y = tensor("w2", (16, 64), arrays["w2"]), tensor("y", (1, 16))
    sg.operators += [op(fb.BuiltinOperator.FULLY_CONNECTED, [x, w1, b1], [h]),
                     op(fb.BuiltinOperator.FULLY_CONNECTED, [h, w2, -1], [y])]
    inputs, outputs = [(b"x", x)], [(b"y", y)]
    if table_rows:
        ids, table, e = tensor("ids", (4,), kind=fb.TensorType.INT32), tensor("table", (table_rows, 64), arrays["table"]), \
            tensor("e", (4, 64))
        sg.operators.append(op(fb.BuiltinOperator.GATHER, [table, ids], [e]))
        inputs.append((b"ids", ids))
        outputs.append((b"e", e))
    sg.inputs, sg.outputs = [i for _, i in inputs], [o for _, o in outputs]
    model.subgraphs = [sg]
    sig = fb.SignatureDefT()
    sig.signatureKey, sig.inputs, sig.outputs = b"serving_default", [], []
    for ends, pairs in ((sig.inputs, inputs), (sig.outputs, outputs)):
        for name, index in pairs:
            m = fb.TensorMapT()
            m.name, m.tensorIndex = name, index
            ends.append(m)
    model.signatureDefs = [sig]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))

