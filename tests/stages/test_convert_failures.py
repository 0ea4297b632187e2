"""When onnx2tf fails, the error names the node, its op type and input shapes from the log."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from edgeq.stages.convert import failed_node


def _model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    relu = helper.make_node("Relu", ["x"], ["r"], name="/stem/Relu")
    resize = helper.make_node("Resize", ["r", "", "scales"], ["y"], name="/head/Resize", mode="linear")
    graph = helper.make_graph([relu, resize], "g", [x], [y], [scales])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_the_failing_node_is_named_with_its_op_and_input_shapes(tmp_path: Path) -> None:
    model = _model(tmp_path / "m.onnx")
    log = tmp_path / "convert.log"
    log.write_text(
        "\x1b[32mINFO:\x1b[0m onnx_op_type: Relu onnx_op_name: /stem/Relu\n"
        "\x1b[31mERROR:\x1b[0m The trace log is below.\nValueError: bad layout\n"
        "\x1b[31mERROR:\x1b[0m onnx_op_name: /head/Resize\n"
    )
    assert failed_node(log, model) == ", at node '/head/Resize' (Resize, inputs [1, 3, 8, 8], [4])"


def test_without_a_node_in_the_log_nothing_is_claimed(tmp_path: Path) -> None:
    model = _model(tmp_path / "m.onnx")
    log = tmp_path / "convert.log"
    log.write_text("Traceback: something else\n")
    assert failed_node(log, model) == ""
    assert failed_node(tmp_path / "missing.log", model) == ""
    log.write_text("ERROR: onnx_op_name: /not/in/the/model\n")
    assert failed_node(log, model) == ", at node '/not/in/the/model'"
