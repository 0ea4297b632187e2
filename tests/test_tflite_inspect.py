"""edgeq.tflite_inspect: on the .tflite files of the shared builds, and on one-operator files built here."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ApiBuild, CliBuild

from edgeq.tflite_inspect import COMPUTE_OPS, inspect_tflite


def test_shipped_int8_model_runs_every_compute_op_in_int8(tiny_build: CliBuild) -> None:
    path = tiny_build.out / "model.tflite"
    info = inspect_tflite(path)
    assert info["bytes"] == path.stat().st_size
    assert info["int8_compute_fraction"] == 1.0
    assert info["non_int8_compute_ops"] == []
    assert info["ops"]["CONV_2D"] == 2 and info["ops"]["FULLY_CONNECTED"] == 1
    assert info["compute_ops"] == info["int8_compute_ops"] == 3
    # float32 I/O: the model quantizes on entry and dequantizes on exit, nothing else is float
    assert info["ops"].get("QUANTIZE") == 1 and info["ops"].get("DEQUANTIZE") == 1
    assert info["float_output_ops"] == []


def test_size_breakdown_adds_up_to_the_file(tiny_build: CliBuild, onnx_int8_build: ApiBuild) -> None:
    for path in (
        tiny_build.out / "model.tflite",
        onnx_int8_build.keep / "model.float32.tflite",
        onnx_int8_build.keep / "model.int8.tflite",
    ):
        parts = inspect_tflite(path)["size_breakdown"]
        assert sum(parts.values()) == path.stat().st_size, path.name
        assert all(v >= 0 for v in parts.values()), parts


def test_int8_breakdown_has_int8_weights_and_int32_biases(tiny_build: CliBuild) -> None:
    parts = inspect_tflite(tiny_build.out / "model.tflite")["size_breakdown"]
    assert parts["int8 weights"] > 0 and parts["int32 biases"] > 0
    assert "float32 weights" not in parts


def test_float32_model_has_no_int8_compute(onnx_int8_build: ApiBuild) -> None:
    info = inspect_tflite(onnx_int8_build.keep / "model.float32.tflite")
    assert info["int8_compute_ops"] == 0 and info["int8_compute_fraction"] == 0.0
    assert len(info["non_int8_compute_ops"]) == info["compute_ops"] == 3
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(info["float_output_ops"])
    # onnx2tf pads before the strided conv: a float32 PAD, data movement rather than arithmetic
    assert info["ops"]["PAD"] == 1 and info["float_data_movement_ops"] == ["PAD"]
    assert "PAD" not in info["float_output_ops"]
    assert info["size_breakdown"]["float32 weights"] > 0


def test_int8_io_model_has_no_quantize_at_the_edges(onnx_int8_build: ApiBuild) -> None:
    info = inspect_tflite(onnx_int8_build.keep / "model.int8.tflite")
    assert info["int8_compute_fraction"] == 1.0
    assert "QUANTIZE" not in info["ops"] and "DEQUANTIZE" not in info["ops"]


def test_report_inspection_matches(tiny_build: CliBuild, tiny_report: dict) -> None:
    assert tiny_report["artifacts"]["tflite_int8"]["inspection"] == {
        "model": inspect_tflite(Path(tiny_build.out / "model.tflite"))
    }
    assert set(COMPUTE_OPS) >= {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL"}


# --- Operand roles: one-operator .tflite files built in the test with LiteRT's schema object API ---

_ROLES_INT8 = {  # op -> input types of its all-int8 form, by the op's own operand order
    "CONV_2D": ["int8", "int8", "int32"],  # input, filter, bias
    "DEPTHWISE_CONV_2D": ["int8", "int8", "int32"],
    "FULLY_CONNECTED": ["int8", "int8", "int32"],  # input, weights, bias
    "CONV_3D": ["int8", "int8", "int32"],  # input, filter, bias
    "TRANSPOSE_CONV": ["int32", "int8", "int8", "int32"],  # output_shape, weights, input, bias
    "CONV_3D_TRANSPOSE": ["int32", "int8", "int8", "int32"],  # output_shape, filter, input, bias
    "BATCH_MATMUL": ["int8", "int8"],  # x, y
}
_ACTIVATION = {"TRANSPOSE_CONV": 2, "CONV_3D_TRANSPOSE": 2}  # input index of the activation (else 0)
_WEIGHTS = 1  # the weights (BATCH_MATMUL: the second activation) are input 1 in every compute op


def _write_tflite(path: Path, ops: list[tuple[str, list[str | None], list[str]]]) -> Path:
    """A .tflite with one subgraph running ``ops`` in order: (op name, input types, output types).
    Each type gets a fresh tensor; an input type None is written as index -1 (omitted optional operand).
    No data or options: inspect_tflite reads only the graph."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    tensor_type = {"int8": fb.TensorType.INT8, "int32": fb.TensorType.INT32, "float32": fb.TensorType.FLOAT32}
    model = fb.ModelT()
    model.version = 3
    model.buffers = [fb.BufferT()]  # buffer 0: the empty sentinel every tensor here points at
    model.operatorCodes = []
    sg = fb.SubGraphT()
    sg.tensors, sg.operators = [], []

    def tensor(dtype: str) -> int:
        t = fb.TensorT()
        t.name = f"t{len(sg.tensors)}".encode()
        t.type = tensor_type[dtype]
        t.shape = [1]
        t.buffer = 0
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    for name, in_types, out_types in ops:
        code = getattr(fb.BuiltinOperator, name)
        opcode = fb.OperatorCodeT()
        opcode.builtinCode = code
        opcode.deprecatedBuiltinCode = min(code, fb.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
        opcode.version = 1
        model.operatorCodes.append(opcode)
        op = fb.OperatorT()
        op.opcodeIndex = len(model.operatorCodes) - 1
        op.inputs = [tensor(t) if t is not None else -1 for t in in_types]
        op.outputs = [tensor(t) for t in out_types]
        sg.operators.append(op)
    sg.inputs, sg.outputs = [], [sg.operators[-1].outputs[0]]
    model.subgraphs = [sg]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())
    return path


def _with(types: list[str | None], index: int, dtype: str) -> list[str | None]:
    out = list(types)
    out[index] = dtype
    return out


_INT8_CASES = [pytest.param(op, ins, id=f"{op}-int8") for op, ins in _ROLES_INT8.items()] + [
    # the optional bias left out, as index -1 or by a shorter input list
    pytest.param("TRANSPOSE_CONV", ["int32", "int8", "int8", None], id="TRANSPOSE_CONV-bias-index--1"),
    pytest.param("TRANSPOSE_CONV", ["int32", "int8", "int8"], id="TRANSPOSE_CONV-3-inputs"),
    pytest.param("CONV_3D_TRANSPOSE", ["int32", "int8", "int8", None], id="CONV_3D_TRANSPOSE-bias-index--1"),
    pytest.param("CONV_3D_TRANSPOSE", ["int32", "int8", "int8"], id="CONV_3D_TRANSPOSE-3-inputs"),
    pytest.param("FULLY_CONNECTED", ["int8", "int8", None], id="FULLY_CONNECTED-bias-index--1"),
    pytest.param("FULLY_CONNECTED", ["int8", "int8"], id="FULLY_CONNECTED-2-inputs"),
    pytest.param("CONV_3D", ["int8", "int8", None], id="CONV_3D-bias-index--1"),
]

_FLOAT_CASES = []
for _op, _ins in _ROLES_INT8.items():
    _FLOAT_CASES += [
        pytest.param(_op, _with(_ins, _WEIGHTS, "float32"), "int8", id=f"{_op}-float32-weights"),
        pytest.param(_op, _with(_ins, _ACTIVATION.get(_op, 0), "float32"), "int8", id=f"{_op}-float32-activation"),
        pytest.param(_op, _ins, "float32", id=f"{_op}-float32-output"),
    ]
    if len(_ins) > 2:  # ops with a bias: a float32 bias is a float kernel's bias
        _FLOAT_CASES.append(pytest.param(_op, _with(_ins, len(_ins) - 1, "float32"), "int8", id=f"{_op}-float32-bias"))


def test_operand_role_cases_cover_every_compute_op() -> None:
    assert set(_ROLES_INT8) == set(COMPUTE_OPS)
    assert "CONV_3D_TRANSPOSE" in COMPUTE_OPS


@pytest.mark.parametrize(("op", "inputs"), _INT8_CASES)
def test_int8_compute_op_counts_as_int8(tmp_path: Path, op: str, inputs: list[str | None]) -> None:
    info = inspect_tflite(_write_tflite(tmp_path / "m.tflite", [(op, inputs, ["int8"])]))
    assert info["ops"] == {op: 1}
    assert info["compute_ops"] == info["int8_compute_ops"] == 1
    assert info["int8_compute_fraction"] == 1.0
    assert info["non_int8_compute_ops"] == []
    assert info["float_output_ops"] == []


@pytest.mark.parametrize(("op", "inputs", "output"), _FLOAT_CASES)
def test_compute_op_with_a_float32_operand_is_not_int8(tmp_path: Path, op: str, inputs: list[str | None],
                                                      output: str) -> None:
    info = inspect_tflite(_write_tflite(tmp_path / "m.tflite", [(op, inputs, [output])]))
    assert info["compute_ops"] == 1 and info["int8_compute_ops"] == 0
    assert info["int8_compute_fraction"] == 0.0
    assert info["non_int8_compute_ops"] == [{"op": op, "inputs": inputs, "outputs": [output]}]


def test_omitted_operand_is_left_out_of_the_listed_inputs(tmp_path: Path) -> None:
    # weights float32, bias omitted (-1): not int8, and the listed dtypes are the present operands'
    info = inspect_tflite(_write_tflite(tmp_path / "m.tflite",
                                        [("TRANSPOSE_CONV", ["int32", "float32", "int8", None], ["int8"])]))
    assert info["int8_compute_ops"] == 0
    assert info["non_int8_compute_ops"] == [
        {"op": "TRANSPOSE_CONV", "inputs": ["int32", "float32", "int8"], "outputs": ["int8"]}]


def test_transpose_conv_among_int8_convs_keeps_the_fraction_at_one(tmp_path: Path) -> None:
    # the shape of the OCR detector's failure: every op int8, transposed convs among them
    info = inspect_tflite(_write_tflite(tmp_path / "m.tflite", [
        ("CONV_2D", ["int8", "int8", "int32"], ["int8"]),
        ("TRANSPOSE_CONV", ["int32", "int8", "int8", "int32"], ["int8"]),
        ("DEPTHWISE_CONV_2D", ["int8", "int8", "int32"], ["int8"]),
        ("TRANSPOSE_CONV", ["int32", "int8", "int8", None], ["int8"]),
    ]))
    assert info["compute_ops"] == info["int8_compute_ops"] == 4
    assert info["int8_compute_fraction"] == 1.0


def test_non_compute_op_is_not_counted(tmp_path: Path) -> None:
    info = inspect_tflite(_write_tflite(tmp_path / "m.tflite", [
        ("ADD", ["float32", "float32"], ["float32"]),
        ("CONV_2D", ["int8", "int8", "int32"], ["int8"]),
        ("ADD", ["int8", "int8"], ["int8"]),
    ]))
    assert info["ops"] == {"ADD": 2, "CONV_2D": 1}
    assert info["compute_ops"] == info["int8_compute_ops"] == 1
    assert info["non_int8_compute_ops"] == []
    assert info["float_output_ops"] == ["ADD"]  # float, but not a compute op


def test_model_of_only_non_compute_ops_has_no_compute_ops(tmp_path: Path) -> None:
    info = inspect_tflite(_write_tflite(tmp_path / "m.tflite", [("ADD", ["int8", "int8"], ["int8"])]))
    assert info["ops"] == {"ADD": 1}
    assert info["compute_ops"] == info["int8_compute_ops"] == 0
    assert info["int8_compute_fraction"] == 1.0
