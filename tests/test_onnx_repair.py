"""ONNX files as production exporters write them: onnxruntime decides what is valid, metadata is
repaired and listed, every kind of dynamic dimension is fixed, inputs are frozen, If nodes fold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_models as om
import onnxruntime as ort
import pytest
from conftest import make_context, run_stage
from onnx import TensorProto, helper

from edgeq.config import GraphSpec, InputSpec, OutputSpec, load_model_spec, parse_input_value
from edgeq.errors import ConfigError, ModelError
from edgeq.onnx_repair import check_same_function, fix_inputs
from edgeq.onnx_rewrites import tf_node_names
from edgeq.results import ExportResult
from edgeq.stages.export import STAGE as EXPORT


def export_case(case: om.Case, tmp_path: Path, **kw: Any) -> Any:
    root = tmp_path / "model"
    om.write_model_dir(case, root, n_cal=8, n_eval=4)
    ctx = make_context(root, tmp_path / "work", input_shapes=case.input_shapes or None, **kw)
    run_stage(EXPORT, ctx)
    return ctx


def _float_onnx(ctx: Any) -> onnx.ModelProto:
    return onnx.load(str(ctx.artifact("onnx_float").path))


def _rewrites(ctx: Any) -> list[str]:
    return ctx.result(ExportResult).facts()["graphs"]["model"]["rewrites"]


def _run(model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def _static(vi: Any) -> list[int]:
    return [d.dim_value for d in vi.type.tensor_type.shape.dim]


# --- every kind of dynamic dimension ---------------------------------------------------------------


def _dim(kind: str) -> Any:
    d = onnx.TensorShapeProto.Dimension()
    if kind == "name":
        d.dim_param = "height"
    elif kind == "expression":
        d.dim_param = "2*h + 1"
    elif kind in ("-1", "0"):
        d.dim_value = int(kind)
    return d  # "empty": neither value nor name


@pytest.mark.parametrize("kind", ["name", "expression", "-1", "0", "empty"])
def test_every_kind_of_dynamic_dimension_takes_the_configured_size(kind: str) -> None:
    model = om.unnamed_dim().model
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].CopyFrom(_dim(kind))
    spec = GraphSpec("model", (InputSpec("x", (1, 3, 16, 32), "float32", "NCHW"),), (OutputSpec("logits"),))
    rewrites: list[str] = []
    fix_inputs(model, spec, Path("model.onnx"), rewrites)
    assert _static(model.graph.input[0]) == [1, 3, 16, 32]
    assert rewrites and rewrites[0].endswith("-> [1, 3, 16, 32]")


def test_a_static_dimension_that_disagrees_is_refused() -> None:
    model = om.unnamed_dim().model
    spec = GraphSpec("model", (InputSpec("x", (1, 3, 16, 64), "float32", "NCHW"),), (OutputSpec("logits"),))
    with pytest.raises(ModelError, match=r"input 'x' dimension 3 is 32 in the model but 64 in edgeq\.toml"):
        fix_inputs(model, spec, Path("model.onnx"), [])


def test_dynamic_dimensions_are_listed_as_the_model_writes_them(tmp_path: Path) -> None:
    case = om.minus_one_dims()
    om.write_model_dir(case, tmp_path / "m", n_cal=2, n_eval=2)
    with pytest.raises(ConfigError) as info:
        load_model_spec(tmp_path / "m")
    assert "dynamic dimensions with no size: x[0] '-1', x[2] '0', x[3] '-1'" in str(info.value)


def test_an_input_with_no_declared_shape_takes_the_configured_one() -> None:
    model = om.unnamed_dim().model
    model.graph.input[0].type.tensor_type.ClearField("shape")
    spec = GraphSpec("model", (InputSpec("x", (1, 3, 16, 32), "float32", "NCHW"),), (OutputSpec("logits"),))
    rewrites: list[str] = []
    fix_inputs(model, spec, Path("model.onnx"), rewrites)
    assert _static(model.graph.input[0]) == [1, 3, 16, 32]
    assert "declares no shape" in rewrites[0]


# --- export of the production-style files ----------------------------------------------------------


def test_unnamed_dimension_and_computed_reshape_export(tmp_path: Path) -> None:
    """[batch, 3, ?, 32] and a flatten whose shape is computed: the output shape is only known after
    folding (onnx's checker alone fails with "Field 'shape' of 'type' is required")."""
    case = om.unnamed_dim()
    ctx = export_case(case, tmp_path)
    model = _float_onnx(ctx)
    assert _static(model.graph.input[0]) == [1, 3, 16, 32]
    assert _static(model.graph.output[0]) == [1, 4]
    assert "input 'x' [batch, 3, ?, 32] -> [1, 3, 16, 32]" in _rewrites(ctx)
    x = ctx.eval.sample(0)["x"]
    np.testing.assert_allclose(_run(model, {"x": x})[0], _run(case.model, {"x": x})[0], rtol=1e-4, atol=1e-5)
    assert ctx.result(ExportResult).facts()["graphs"]["model"]["rewrite_max_rel_diff"] < 1e-4


def test_minus_one_and_zero_dimensions_export_with_input_shape(tmp_path: Path) -> None:
    ctx = export_case(om.minus_one_dims(), tmp_path)
    model = _float_onnx(ctx)
    assert _static(model.graph.input[0]) == [1, 3, 16, 16]
    assert "input 'x' [-1, 3, 0, -1] -> [1, 3, 16, 16]" in _rewrites(ctx)


def test_frozen_scalar_input_folds_every_if_away(tmp_path: Path) -> None:
    case = om.scalar_config_and_ifs()
    ctx = export_case(case, tmp_path)
    model = _float_onnx(ctx)
    assert [i.name for i in model.graph.input] == ["x", "state"]
    assert not [n for n in model.graph.node if n.op_type == "If"]
    rewrites = _rewrites(ctx)
    assert "input 'sr' frozen to 16000 (int64): a constant of the graph, not an input" in rewrites
    assert any(r.startswith("If x2: each condition became a constant") for r in rewrites)
    assert ctx.result(ExportResult).facts()["graphs"]["model"]["frozen_inputs"] == [
        {"name": "sr", "dtype": "int64", "shape": [], "value": 16000}]
    feeds = ctx.eval.sample(0)
    want = _run(case.model, {**feeds, "sr": np.array(16000, np.int64)})
    for got, ref in zip(_run(model, feeds), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # the other branch: 8000 doubles the frame, so the rewritten graph must differ from the 16 kHz one
    ctx8k = export_case(case, tmp_path / "8k", input_values={"sr": 8000})
    got8k = _run(_float_onnx(ctx8k), feeds)
    np.testing.assert_allclose(got8k[0], _run(case.model, {**feeds, "sr": np.array(8000, np.int64)})[0], rtol=1e-5)
    assert not np.allclose(got8k[0], want[0])


def test_an_if_left_names_the_node_and_the_input_to_freeze(tmp_path: Path) -> None:
    case = om.scalar_config_and_ifs()
    case.inputs[-1] = {"name": "sr", "shape": [], "dtype": "int32"}
    case.data["sr"] = ()
    with pytest.raises(ModelError) as info:
        export_case(case, tmp_path)
    message = str(info.value)
    assert "1 If node(s) left after folding: '/sr/If' (its condition depends on input 'sr')" in message
    assert "--input-value NAME=VALUE" in message


@pytest.mark.parametrize(("value", "fragment"), [
    (16000.5, "input 'sr' is INT64 in the model; its value 16000.5 must be whole numbers"),
    ([16000], "input 'sr' has shape [] in the model; its value has shape [1]"),
    (True, "its value True must be whole numbers"),
    (2 ** 70, "does not fit in 64 bits"),
])
def test_a_frozen_value_of_the_wrong_dtype_or_shape_is_refused(tmp_path: Path, value: Any, fragment: str) -> None:
    case = om.scalar_config_and_ifs()
    case.inputs[-1] = {"name": "sr", "value": value}
    with pytest.raises((ModelError, ConfigError)) as info:
        export_case(case, tmp_path)
    assert fragment in str(info.value)


def test_old_exporter_metadata_is_repaired_and_listed(tmp_path: Path) -> None:
    case = om.old_exporter()
    ctx = export_case(case, tmp_path)
    model = _float_onnx(ctx)
    rewrites = _rewrites(ctx)
    assert "4 initializer(s) also listed as graph inputs (IR < 4 style) are constants, not inputs" in rewrites
    assert any(r.startswith("opset 11 -> 13") for r in rewrites)
    assert "IR version 6 -> 7" in rewrites
    assert "1 tensor(s) declared without a shape ('fc'): shapes inferred" in rewrites
    assert ("1 stale or contradictory shape declaration(s) replaced by the inferred shapes: 'c1' declared "
            "[1, 8, 32, 32], is [1, 8, 16, 16]") in rewrites
    assert [i.name for i in model.graph.input] == ["x"]
    x = ctx.eval.sample(0)["x"]
    np.testing.assert_allclose(_run(model, {"x": x})[0], _run(case.model, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_a_value_info_without_shape_or_with_stale_shapes_is_not_refused(tmp_path: Path) -> None:
    """onnx's full check refuses this file; onnxruntime runs it, so edgeq takes it."""
    case = om.unnamed_dim()
    case.model.graph.value_info.extend([helper.make_tensor_value_info("c1", TensorProto.FLOAT, [7, 7]),
                                        helper.make_tensor_value_info("r2", TensorProto.FLOAT, None)])
    case.model.graph.value_info[-1].type.tensor_type.ClearField("shape")
    with pytest.raises((onnx.checker.ValidationError, onnx.shape_inference.InferenceError)):
        onnx.checker.check_model(case.model, full_check=True)
    ctx = export_case(case, tmp_path)
    assert _rewrites(ctx)[1:] == [
        "1 tensor(s) declared without a shape ('r2'): shapes inferred",
        "1 stale or contradictory shape declaration(s) replaced by the inferred shapes: 'c1' declared [7, 7], is "
        "[1, 8, 16, 32]"]


def test_an_output_shape_inference_cannot_give_comes_from_onnxruntime(tmp_path: Path) -> None:
    """com.microsoft ops are unknown to onnx's shape inference; onnxruntime runs them."""
    case = om.unnamed_dim()
    graph = case.model.graph
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    gemm.output[0] = "pre"
    graph.node.append(helper.make_node("FastGelu", ["pre"], ["logits"], domain="com.microsoft", name="/act/FastGelu"))
    case.model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    ctx = export_case(case, tmp_path)
    assert _static(_float_onnx(ctx).graph.output[0]) == [1, 4]
    assert "output shape(s) shape inference could not give, from onnxruntime: 'logits' [1, 4]" in _rewrites(ctx)


def test_a_rewrite_that_changes_the_results_is_caught() -> None:
    case = om.unnamed_dim()
    original = case.model.SerializeToString()
    broken = onnx.load_model_from_string(original)
    spec = GraphSpec("model", (InputSpec("x", (1, 3, 16, 32), "float32", "NCHW"),), (OutputSpec("logits"),))
    fix_inputs(broken, spec, Path("model.onnx"), [])
    w = next(t for t in broken.graph.initializer if t.name == "bfc")
    w.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w) + 1, "bfc"))
    with pytest.raises(ModelError, match="changed what output 'logits' computes on onnxruntime"):
        check_same_function(original, broken, [], Path("model.onnx"), ["a rewrite"])


def test_node_names_tensorflow_refuses_are_renamed() -> None:
    model = om.unnamed_dim().model
    model.graph.node[0].name = "Softmax@0"
    model.graph.node[1].name = "/relu1/Relu"
    model.graph.node[2].name = "Softmax_0"
    rewrites: list[str] = []
    tf_node_names(model, rewrites)
    assert [n.name for n in model.graph.node[:3]] == ["Softmax_0_1", "/relu1/Relu", "Softmax_0"]
    assert rewrites == ["1 node name(s) made valid TensorFlow scope names ('Softmax@0' -> 'Softmax_0_1')"]


def test_a_file_onnxruntime_rejects_is_refused_with_its_reason(tmp_path: Path) -> None:
    case = om.unnamed_dim()
    case.model.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(ModelError) as info:
        export_case(case, tmp_path)
    message = str(info.value)
    assert message.startswith("onnxruntime cannot load model.onnx: ")
    assert "NoSuchOp" in message and "\n" not in message


# --- config: values and scalars ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "want"), [
    ("sr=16000", ("sr", 16000)), ("gain=0.5", ("gain", 0.5)), ("mask=[1, 0, 1]", ("mask", [1, 0, 1])),
    ("flag=true", ("flag", True)), (" sr = 8000 ", ("sr", 8000)),
])
def test_input_value_text(text: str, want: tuple[str, Any]) -> None:
    assert parse_input_value(text) == want


@pytest.mark.parametrize("text", ["sr", "=16000", "sr=", "sr=abc", 'sr="16000"', "sr={a = 1}", "sr=[1, [2]]"])
def test_bad_input_value_text(text: str) -> None:
    with pytest.raises(ConfigError, match="--input-value"):
        parse_input_value(text)


def test_input_value_must_name_an_input(tmp_path: Path) -> None:
    case = om.scalar_config_and_ifs()
    om.write_model_dir(case, tmp_path / "m", n_cal=2, n_eval=2)
    with pytest.raises(ConfigError, match="--input-value names rate, but the model's inputs are x, state, sr"):
        load_model_spec(tmp_path / "m", input_values={"rate": 1})


def test_a_frozen_input_is_not_fed_and_a_scalar_input_is(tmp_path: Path) -> None:
    case = om.scalar_config_and_ifs()
    case.inputs[-1] = {"name": "sr", "shape": [], "dtype": "int32"}
    om.write_model_dir(case, tmp_path / "m", n_cal=2, n_eval=2)
    spec = load_model_spec(tmp_path / "m")
    assert [(i.name, i.shape, i.layout) for i in spec.inputs][-1] == ("sr", (), "")
    frozen = load_model_spec(tmp_path / "m", input_values={"sr": 16000}).single
    assert [i.name for i in frozen.inputs] == ["x", "state"]
    assert [(f.name, f.value, f.shape) for f in frozen.frozen] == [("sr", 16000, ())]


# --- LSTM written out step by step -----------------------------------------------------------------


def _lstm(direction: str, steps: int, with_state: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    d, hidden, size = (2 if direction == "bidirectional" else 1), 5, 3
    inits = [onnx.numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.5, n)
             for n, s in (("W", (d, 4 * hidden, size)), ("R", (d, 4 * hidden, hidden)), ("B", (d, 8 * hidden)))]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, 2, size])]
    state = ["h", "c"] if with_state else ["", ""]
    if with_state:
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [d, 2, hidden]) for n in state]
    node = helper.make_node("LSTM", ["x", "W", "R", "B", "", *state], ["y", "yh", "yc"], hidden_size=hidden,
                            direction=direction, name="/rnn/LSTM")
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "yh", "yc")]
    graph = helper.make_graph([node], "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("direction", "steps", "with_state"), [
    ("forward", 1, True), ("forward", 4, False), ("reverse", 3, True), ("bidirectional", 3, True),
])
def test_an_lstm_written_out_step_by_step_computes_the_same(direction: str, steps: int, with_state: bool) -> None:
    from edgeq.onnx_rewrites import unroll_lstms

    model = _lstm(direction, steps, with_state)
    original = model.SerializeToString()
    rewrites: list[str] = []
    unroll_lstms(model, rewrites)
    assert rewrites == ["LSTM x1 written out step by step (MatMul, Sigmoid, Tanh, Mul, Add: the same function, ops "
                        "with int8 kernels)"]
    assert not [n for n in model.graph.node if n.op_type == "LSTM"]
    rng = np.random.default_rng(8)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input}
    for got, want in zip(_run(model, feeds), _run(original, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_an_lstm_with_peepholes_is_left_as_it_is() -> None:
    from edgeq.onnx_rewrites import unroll_lstms

    model = _lstm("forward", 2, False)
    model.graph.node[0].input.append("P")  # x, W, R, B, sequence_lens, initial_h, initial_c, P
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((1, 15), np.float32), "P"))
    rewrites: list[str] = []
    unroll_lstms(model, rewrites)
    assert rewrites == [] and model.graph.node[0].op_type == "LSTM"


def test_a_slice_naming_every_axis_keeps_only_the_axes_it_cuts() -> None:
    from edgeq.onnx_rewrites import tidy_slices

    big = np.iinfo(np.int64).max
    consts = {"starts": [0, 0, 0], "ends": [big, 3, big], "axes": [0, 1, 2], "steps": [1, 1, 1],
              "s2": [0, 3], "e2": [big, big], "a2": [0, 1], "st2": [1, 1]}
    graph = helper.make_graph(
        [helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["lo"], name="/lo"),
         helper.make_node("Slice", ["x", "s2", "e2", "a2", "st2"], ["hi"], name="/hi"),
         helper.make_node("Slice", ["x", "s2", "e2", "a2"], ["hi2"], name="/hi2")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("lo", "hi", "hi2")],
        [onnx.numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    original = model.SerializeToString()
    rewrites: list[str] = []
    tidy_slices(model, rewrites)
    assert rewrites and rewrites[0].startswith("Slice x3: only the axes each one cuts")
    lo = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == model.graph.node[0].input[3]))
    assert lo.tolist() == [1]
    x = np.random.default_rng(0).standard_normal((1, 6, 4)).astype(np.float32)
    for got, want in zip(_run(model, {"x": x}), _run(original, {"x": x}), strict=True):
        np.testing.assert_array_equal(got, want)
