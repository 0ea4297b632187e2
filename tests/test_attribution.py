"""Per-layer error attribution: the INT8 ONNX model's tensors against the float model's, ranked by
where the error originates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import SHAPE, ApiBuild
from onnx import TensorProto, helper, numpy_helper

from edgeq.attribution import attribute

WIDTH = 16
SEED = 0


def _mlp(path: Path, outlier_layer: int | None) -> None:
    """Four MatMul + Relu layers; the outlier layer's weights give one output channel values 300x the others'."""
    rng = np.random.default_rng(SEED)
    nodes, inits, x = [], [], "x"
    for k in range(4):
        w = rng.normal(0, 1 / np.sqrt(WIDTH), (WIDTH, WIDTH)).astype(np.float32)
        if k == outlier_layer:
            w[:, 3] *= 300.0
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        nodes += [helper.make_node("MatMul", [x, f"w{k}"], [f"mm{k}"], name=f"MatMul_{k}"),
                  helper.make_node("Relu", [f"mm{k}"], [f"h{k}"], name=f"Relu_{k}")]
        x = f"h{k}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _quantize(src: Path, dst: Path, samples: list[dict[str, np.ndarray]]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True)


def _samples(n: int = 24) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(SEED + 1)
    return [{"x": rng.normal(0, 1, (1, WIDTH)).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("layer", [1, 2])
def test_the_layer_with_an_outlier_channel_is_named_first(tmp_path: Path, layer: int) -> None:
    f, q = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    _mlp(f, outlier_layer=layer)
    _quantize(f, q, _samples())
    rows = attribute(f, q, iter(_samples()))
    assert rows[0]["node"] in (f"MatMul_{layer}", f"Relu_{layer}"), [(r["node"], round(r["drop_db"], 1)) for r in rows]
    first = rows[0]
    assert first["drop_db"] > 10 and first["scale"] is not None and first["float_range"][1] > 10
    json.dumps(rows, allow_nan=False)  # report.json takes them as they are
    # every measured tensor is listed once, the drops in order
    assert len({r["tensor"] for r in rows}) == len(rows) and [r["drop_db"] for r in rows] == sorted(
        (r["drop_db"] for r in rows), reverse=True)


def test_without_an_outlier_no_layer_stands_out(tmp_path: Path) -> None:
    f, q = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    _mlp(f, outlier_layer=None)
    _quantize(f, q, _samples())
    rows = attribute(f, q, iter(_samples()))
    assert rows and all(r["sqnr_db"] > 25 for r in rows)
    assert rows[0]["drop_db"] < 15


def test_the_report_shows_the_top_tensors(tiny_report: dict[str, object]) -> None:
    """A real build: report.json carries the attribution of the shipped model's graph."""
    rows = tiny_report["attribution"]["model"]  # type: ignore[index]
    assert isinstance(rows, list) and rows and {"tensor", "op", "sqnr_db", "drop_db", "float_range", "scale"} <= set(rows[0])


def test_each_tflite_tensor_is_mapped_to_the_onnx_node_computing_it(onnx_int8_build: ApiBuild) -> None:
    """The converter fuses Conv + Relu into one CONV_2D, moves NCHW to NHWC and renames everything:
    the values tell which ONNX node computed a .tflite tensor."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeq.attribution import onnx_nodes

    keep = onnx_int8_build.keep
    float_tflite = (keep / "model.float32.tflite").read_bytes()
    model = onnx.load_model(str(keep / "model.float.onnx"))
    nodes = {n.name: n.op_type for n in model.graph.node}
    interp = Interpreter(model_content=float_tflite)
    signature = next(iter(interp.get_signature_list()))
    (tflite_input,) = interp.get_signature_list()[signature]["inputs"]
    x = np.random.default_rng(0).normal(0, 1, SHAPE).astype(np.float32)
    found = onnx_nodes(keep / "model.float.onnx", float_tflite, signature, {model.graph.input[0].name: x},
                       {tflite_input: x.transpose(0, 2, 3, 1)})
    details = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    by_op: dict[str, list[dict[str, str] | None]] = {}
    for op in interp._get_ops_details():
        for t in op["outputs"]:
            by_op.setdefault(op["op_name"], []).append(found.get(details[t]))
    assert all(v["node"] in nodes and nodes[v["node"]] == v["op"] for v in found.values())
    assert [v["op"] for v in by_op["CONV_2D"] if v] == ["Relu", "Relu"]  # conv and relu fused: the relu's values
    assert [v["op"] for v in by_op["FULLY_CONNECTED"] if v] == ["Gemm"]
    assert len(found) >= len([v for vs in by_op.values() for v in vs]) - 2  # a reshape's int32 shape, a pad


def test_the_tflite_rows_stand_when_their_onnx_nodes_cannot_be_found(onnx_int8_build: ApiBuild, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The ONNX node of each row is a help to read the table: when the mapping fails (a model
    onnxruntime cannot run with every tensor an output), the rows are there without it. (This build
    has int8 model I/O: the float feeds are quantized for the INT8 .tflite's inputs.)"""
    from conftest import context_with_artifacts

    import edgeq.attribution
    from edgeq.stages.validate import _attribution_tflite

    ctx = context_with_artifacts(onnx_int8_build.model_dir, onnx_int8_build.keep, tmp_path / "a")
    rows = _attribution_tflite(ctx)["model"]
    assert isinstance(rows, list) and any(r["onnx_node"] for r in rows)

    def fails(*args: object) -> dict[str, object]:
        raise RuntimeError("onnxruntime cannot make that tensor an output")

    monkeypatch.setattr(edgeq.attribution, "onnx_nodes", fails)
    ctx = context_with_artifacts(onnx_int8_build.model_dir, onnx_int8_build.keep, tmp_path / "b")
    without = _attribution_tflite(ctx)["model"]
    assert [r["tensor"] for r in without] == [r["tensor"] for r in rows] and all("onnx_node" not in r for r in without)
