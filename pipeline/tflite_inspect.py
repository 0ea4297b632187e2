"""Reads a .tflite flatbuffer: which ops run in which dtype, and where the file's bytes go.

Uses LiteRT's generated flatbuffer schema (``ai_edge_litert.schema_py_generated``); no interpreter
is created, so this is cheap and safe on any file the converter wrote.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["COMPUTE_OPS", "DATA_MOVEMENT_OPS", "OPERAND_ROLES", "TYPE_CHANGE_OPS", "OperandRoles", "inspect_tflite"]


class OperandRoles(NamedTuple):
    """Where a compute op's operands sit in its input list (its own operand order, LiteRT schema)."""

    activation: int  # the input activation
    weights: int  # the weights / filter; for BATCH_MATMUL the second activation (y)
    bias: int | None  # None: the op has no bias; an index past the op's inputs, or -1 there, means omitted


# Operand roles of every compute op, as LiteRT's kernels read them. The order is not the same for
# all ops: TRANSPOSE_CONV and CONV_3D_TRANSPOSE take (output_shape int32, weights, input, bias), so
# "the first two inputs are activation and weights" is wrong for them.
OPERAND_ROLES: dict[str, OperandRoles] = {
    "CONV_2D": OperandRoles(activation=0, weights=1, bias=2),  # input, filter, bias
    "DEPTHWISE_CONV_2D": OperandRoles(activation=0, weights=1, bias=2),  # input, filter, bias
    "FULLY_CONNECTED": OperandRoles(activation=0, weights=1, bias=2),  # input, weights, bias (optional)
    "BATCH_MATMUL": OperandRoles(activation=0, weights=1, bias=None),  # x, y: both activations
    "TRANSPOSE_CONV": OperandRoles(activation=2, weights=1, bias=3),  # output_shape, weights, input, bias (optional)
    "CONV_3D": OperandRoles(activation=0, weights=1, bias=2),  # input, filter, bias (optional)
    "CONV_3D_TRANSPOSE": OperandRoles(activation=2, weights=1, bias=3),  # output_shape, filter, input, bias (optional)
}

# The ops that carry a model's multiply-accumulates: the ones a full-integer model must run in int8.
COMPUTE_OPS = tuple(OPERAND_ROLES)

# Ops that only change a tensor's type: a float32 output of theirs is not float arithmetic (QUANTIZE /
# DEQUANTIZE at float32 I/O, CAST of a boolean mask before it is quantized).
TYPE_CHANGE_OPS = ("QUANTIZE", "DEQUANTIZE", "CAST")

# Ops that only move or reshape data: in float32 they compute nothing (the converter may, for
# example, split a float32 model input before quantizing the pieces).
DATA_MOVEMENT_OPS = ("RESHAPE", "TRANSPOSE", "SPLIT", "SPLIT_V", "UNPACK", "PACK", "CONCATENATION", "SLICE",
                     "STRIDED_SLICE", "GATHER", "GATHER_ND", "SQUEEZE", "EXPAND_DIMS", "PAD", "PADV2", "TILE",
                     "BROADCAST_TO", "REVERSE_V2", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "SHAPE")

_TYPE_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2, "INT8": 1,
               "FLOAT64": 8, "UINT32": 4, "UINT16": 2, "INT4": 1}


def _enum_names(cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def _runs_in_int8(op: str, input_types: list[str | None], output_types: list[str | None]) -> bool:
    """Whether compute op ``op`` runs in int8, from its tensor types by input / output position.

    Rule (roles from ``OPERAND_ROLES``, positions as in the flatbuffer, None where the index is -1):
    the activation and the weights (for BATCH_MATMUL: both activations) are int8, the first output is
    int8, and the bias, when the op has one and it is present, is int32. A missing activation or
    weights operand means not int8.
    """
    roles = OPERAND_ROLES[op]

    def at(types: list[str | None], i: int) -> str | None:
        return types[i] if 0 <= i < len(types) else None

    bias = at(input_types, roles.bias) if roles.bias is not None else None
    return (at(input_types, roles.activation) == "int8" and at(input_types, roles.weights) == "int8"
            and at(output_types, 0) == "int8" and bias in (None, "int32"))


def _runs_in_16x8(op: str, input_types: list[str | None], output_types: list[str | None]) -> bool:
    """Whether compute op ``op`` runs LiteRT's 16x8 kernel: int16 activations, int8 weights (for
    BATCH_MATMUL both operands int16), int16 output, int64 bias where present (edgeq.repair's ops)."""
    roles = OPERAND_ROLES[op]

    def at(types: list[str | None], i: int) -> str | None:
        return types[i] if 0 <= i < len(types) else None

    weights = "int16" if op == "BATCH_MATMUL" else "int8"
    bias = at(input_types, roles.bias) if roles.bias is not None else None
    return (at(input_types, roles.activation) == "int16" and at(input_types, roles.weights) == weights
            and at(output_types, 0) == "int16" and bias in (None, "int64", "int32"))


def inspect_tflite(path: Path) -> dict[str, Any]:
    """Per-op dtypes, the int8 coverage of compute ops, and a byte breakdown of the file."""
    from ai_edge_litert import schema_py_generated as fb

    data = Path(path).read_bytes()
    model = fb.ModelT.InitFromPackedBuf(bytearray(data), 0)
    op_names = _enum_names(fb.BuiltinOperator)
    type_names = _enum_names(fb.TensorType)
    codes = [op_names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "CUSTOM") for c in model.operatorCodes]

    buffer_bytes = [len(b.data) if b.data is not None else 0 for b in model.buffers]
    categories: Counter[str] = Counter()
    quant_param_bytes = 0
    ops: list[dict[str, Any]] = []
    op_counts: Counter[str] = Counter()
    seen_buffers: set[int] = set()
    for sg in model.subgraphs:
        tensors = sg.tensors
        for t in tensors:
            q = t.quantization
            if q is not None and q.scale is not None:
                quant_param_bytes += 4 * len(q.scale) + 8 * (len(q.zeroPoint) if q.zeroPoint is not None else 0)
            if t.buffer and t.buffer not in seen_buffers and buffer_bytes[t.buffer]:
                seen_buffers.add(t.buffer)
                tname = type_names.get(t.type, str(t.type))
                kind = {"INT8": "int8 weights", "INT32": "int32 biases", "FLOAT32": "float32 weights"}.get(
                    tname, f"{tname.lower()} constants")
                categories[kind] += buffer_bytes[t.buffer]
        for op in sg.operators:
            name = codes[op.opcodeIndex]
            # tensor types by position: None where the index is -1 (an omitted optional operand)
            in_types = [type_names.get(tensors[i].type, "?").lower() if i >= 0 else None
                        for i in (op.inputs if op.inputs is not None else [])]
            out_types = [type_names.get(tensors[i].type, "?").lower() if i >= 0 else None
                         for i in (op.outputs if op.outputs is not None else [])]
            op_counts[name] += 1
            first_out = next((i for i in op.outputs if i >= 0), None) if op.outputs is not None else None
            tensor = tensors[first_out].name.decode(errors="replace") if first_out is not None and tensors[first_out].name else ""
            ops.append({"op": name,
                        "inputs": [t for t in in_types if t is not None],  # present operands only
                        "outputs": [t for t in out_types if t is not None],
                        "input_types": in_types, "output_types": out_types, "tensor": tensor,
                        "int8": name in OPERAND_ROLES and _runs_in_int8(name, in_types, out_types),
                        "int16x8": name in OPERAND_ROLES and _runs_in_16x8(name, in_types, out_types)})

    compute = [o for o in ops if o["op"] in COMPUTE_OPS]
    int8_compute = [o for o in compute if o["int8"]]
    int16_compute = [o for o in compute if o["int16x8"]]
    float_all = [o for o in ops if "float32" in o["outputs"] and o["op"] not in TYPE_CHANGE_OPS]
    float_ops = [o for o in float_all if o["op"] not in DATA_MOVEMENT_OPS]
    float_moves = sorted({o["op"] for o in float_all if o["op"] in DATA_MOVEMENT_OPS})
    total = len(data)
    buffers_total = sum(categories.values())
    breakdown = {k: categories[k] for k in sorted(categories)}
    breakdown["quantization parameters (scale float32 + zero-point int64 per channel)"] = quant_param_bytes
    breakdown["graph, tensor metadata, signatures"] = total - buffers_total - quant_param_bytes
    return {
        "bytes": total,
        "ops": dict(sorted(op_counts.items())),
        "compute_ops": len(compute),
        "int8_compute_ops": len(int8_compute),
        "int8_compute_fraction": len(int8_compute) / len(compute) if compute else 1.0,
        "int16_compute_ops": len(int16_compute),  # 16-bit activations x int8 weights (a repair's choice)
        "int16_ops": [{"op": o["op"], "tensor": o["tensor"]} for o in ops if "int16" in o["outputs"]
                      and o["op"] not in TYPE_CHANGE_OPS],
        "non_int8_compute_ops": [{k: o[k] for k in ("op", "inputs", "outputs")} for o in compute
                                 if not o["int8"] and not o["int16x8"]],
        # ops computing in float32 (a float kernel); float_ops: per op, how many and the first output tensors' names
        "float_output_ops": sorted({o["op"] for o in float_ops}),
        "float_ops": {op: {"count": sum(o["op"] == op for o in float_ops),
                           "tensors": [o["tensor"] for o in float_ops if o["op"] == op][:3]}
                      for op in sorted({o["op"] for o in float_ops})},
        "float_data_movement_ops": float_moves,  # float32 but no arithmetic (reshapes, splits, ...)
        "size_breakdown": breakdown,
    }
