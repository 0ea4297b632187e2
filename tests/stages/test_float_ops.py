"""Ops TFLite's builtin INT8 set cannot run: exit 2 listing them, unless edgeq.toml accepts them in float32;
ops only TensorFlow kernels (Flex / select-TF-ops) can run are always refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import invoke_cli, make_fake_bundle, make_model_dir, snapshot, staging_leftovers
from onnx import helper, numpy_helper

from edgeq.config import check_tflite_ops, load_model_spec
from edgeq.errors import ConfigError
from edgeq.stages._convert_child import flex_ops


def _insert_before_fc(model_dir: Path, *ops: str) -> None:
    """Put ``ops`` (each one input, one output) between TinyNet's pooled features and its classifier."""
    path = model_dir / "model.onnx"
    model = onnx.load_model(str(path))
    fc = next(n for n in model.graph.node if n.op_type == "Gemm")
    x = fc.input[0]
    new = []
    for k, op in enumerate(ops):
        out = f"edgeq_test_{op.lower()}_{k}"
        if op == "CumSum":
            model.graph.initializer.append(numpy_helper.from_array(np.array(1, np.int64), "edgeq_test_axis"))
            new.append(helper.make_node(op, [x, "edgeq_test_axis"], [out], name=f"/head/{op}"))
        else:
            new.append(helper.make_node(op, [x], [out], name=f"/head/{op}"))
        x = out
    fc.input[0] = x
    at = list(model.graph.node).index(fc)
    for k, node in enumerate(new):
        model.graph.node.insert(at + k, node)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(path))


def _build(model_dir: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = invoke_cli(["build", str(model_dir), "--out", str(out), "-r", "litert", *extra])
    return result.exit_code, result.output


def test_ops_without_an_int8_kernel_are_listed_and_refused(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path, "onnx")
    _insert_before_fc(d, "Sin", "CumSum")
    out = make_fake_bundle(tmp_path / "dist" / "bundle")
    before = snapshot(out)
    code, output = _build(d, out)
    assert code == 2, output
    line = " ".join(output.split())
    assert "the INT8 model would compute CUMSUM x1 (ONNX node '/head/CumSum'), SIN x1 (ONNX node '/head/Sin') in float32" in line
    assert "TFLite's builtin INT8 ops have no int8 kernel for them" in line
    assert 'allow_float_ops = ["CUMSUM", "SIN"]' in line and "--allow-float-op CUMSUM --allow-float-op SIN" in line
    assert snapshot(out) == before
    assert staging_leftovers(out.parent) == []


def test_accepted_float_ops_build_and_are_reported(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path, "onnx", quantization={"allow_float_ops": ["sin"]})
    _insert_before_fc(d, "Sin", "CumSum")
    out = tmp_path / "dist" / "bundle"
    # only SIN is accepted in edgeq.toml: CUMSUM is still refused, alone
    code, output = _build(d, out)
    assert code == 2, output
    line = " ".join(output.split())
    assert "would compute CUMSUM x1 (ONNX node '/head/CumSum') in float32" in line and "SIN x1" not in line
    assert not out.exists()
    # the command line adds CUMSUM to edgeq.toml's list
    code, output = _build(d, out, "--allow-float-op", "CUMSUM")
    assert code in (0, 1), output  # built; whether gates pass does not matter here
    report = json.loads((out / "report.json").read_text())
    insp = report["artifacts"]["tflite_int8"]["inspection"]["model"]
    assert insp["float_output_ops"] == ["CUMSUM", "SIN"]
    assert insp["float_ops"]["SIN"]["count"] == 1
    assert "Ops left in float32: CUMSUM, SIN." in (out / "report.md").read_text()


def test_flex_ops_are_refused_naming_the_onnx_node(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path, "onnx", quantization={"allow_float_ops": ["SIN"]})  # accepting float does not help
    _insert_before_fc(d, "Sinh")  # tf.math.sinh: a TensorFlow kernel only, no TFLite builtin
    out = tmp_path / "dist" / "bundle"
    code, output = _build(d, out)
    assert code == 2, output
    line = " ".join(output.split())
    assert "needs TensorFlow ops that TFLite's builtin ops cannot run (Sinh: ONNX node '/head/Sinh')" in line
    assert "edgeq does not ship select-TF-ops (Flex) models" in line
    assert not out.parent.exists()  # the folders edgeq made for --out are gone too


def test_an_exact_gelu_erf_is_refused_with_the_tanh_fix(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path, "onnx")
    _insert_before_fc(d, "Erf")
    out = tmp_path / "dist" / "bundle"
    code, output = _build(d, out)
    assert code == 2, output
    line = " ".join(output.split())
    assert "needs TensorFlow ops that TFLite's builtin ops cannot run (Erf: ONNX node '/head/Erf')" in line
    assert "its tanh approximation converts to int8, PyTorch nn.GELU(approximate='tanh')" in line
    assert not out.parent.exists()


def test_flex_ops_are_read_from_the_converter_message() -> None:
    message = (
        "error: 'tf.Erf' op is neither a custom op nor a flex op\n"
        "Some ops are not supported by the native TFLite runtime, you can enable TF kernels fallback using TF Select.\n"
        "TF Select ops: Erf, Cumprod\nDetails:\n\ttf.Erf(tensor<1x16xf32>) -> (tensor<1x16xf32>)\n"
        "TF Select ops: Erf\n"
    )
    assert flex_ops(message) == ["Erf", "Cumprod"]
    assert flex_ops("Some ops in the model are custom ops\nCustom ops: Acosh\nDetails:") == ["Acosh"]
    assert flex_ops("error: something else") == []


def test_allowed_op_names_are_tflite_builtins(tmp_path: Path) -> None:
    assert check_tflite_ops(["sin", "CUMSUM", "SIN"], "here") == ("SIN", "CUMSUM")
    assert check_tflite_ops([], "here") == ()
    for bad in ("tf.Sin", "NOT_AN_OP", 3):
        with pytest.raises(ConfigError, match="is not a TFLite builtin op name"):
            check_tflite_ops([bad], "here")
    d = make_model_dir(tmp_path, "onnx", quantization={"allow_float_ops": ["Sine"]})
    with pytest.raises(ConfigError, match=r"\[quantization\].allow_float_ops: 'Sine' is not a TFLite builtin op name"):
        load_model_spec(d)
    d2 = make_model_dir(tmp_path, "onnx", dirname="m2", quantization={"allow_float_ops": "SIN"})
    with pytest.raises(ConfigError, match=r"\[quantization\].allow_float_ops must be a list"):
        load_model_spec(d2)
    out = tmp_path / "dist" / "b"
    result = invoke_cli(["build", str(d2), "--out", str(out), "--allow-float-op", "nope"])
    assert result.exit_code == 2
    assert "--allow-float-op: 'nope' is not a TFLite builtin op name" in " ".join(result.output.split())
    assert not out.exists()


def test_onnx_nodes_are_named_by_op_type(tmp_path: Path) -> None:
    from edgeq.onnx_files import describe_nodes

    d = make_model_dir(tmp_path, "onnx")
    _insert_before_fc(d, "Sin", "Sin", "CumSum")
    path = d / "model.onnx"
    assert describe_nodes(path, "SIN") == "ONNX nodes '/head/Sin', '/head/Sin'"
    assert describe_nodes(path, "SIN", 1) == "1 of the 2 ONNX Sin nodes '/head/Sin', '/head/Sin'"
    assert describe_nodes(path, "CUMSUM", 1) == "ONNX node '/head/CumSum'"
    assert describe_nodes(path, "Cumsum") == "ONNX node '/head/CumSum'"
    assert describe_nodes(path, "ERF") == ""


def test_neg_is_rewritten_as_mul_by_minus_one_and_runs_in_int8(tmp_path: Path) -> None:
    """TFLite has no int8 NEG (LayerNorm and GELU decompositions have one): export writes Mul by -1."""
    d = make_model_dir(tmp_path, "onnx")
    _insert_before_fc(d, "Neg")
    out = tmp_path / "dist" / "bundle"
    keep = tmp_path / "keep"
    code, output = _build(d, out, "--keep-build", str(keep))
    assert code in (0, 1), output
    report = json.loads((out / "report.json").read_text())
    assert report["export"]["graphs"]["model"]["rewrites"] == [
        "input 'image' [batch, 3, 8, 8] -> [1, 3, 8, 8]",
        "Neg -> Mul by -1 (x1): same values; TFLite has no int8 NEG kernel",
    ]
    insp = report["artifacts"]["tflite_int8"]["inspection"]["model"]
    assert insp["float_output_ops"] == [] and "NEG" not in insp["ops"]
    float_onnx = onnx.load_model(str(keep / "model.float.onnx"))
    assert "Neg" not in {n.op_type for n in float_onnx.graph.node}
    # the same function: the rewritten float model gives the original's outputs exactly
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    new = ort.InferenceSession(str(keep / "model.float.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_array_equal(ref, new)
    assert "- model: Neg -> Mul by -1" in (out / "report.md").read_text()


def test_tf2onnx_erfc_is_rewritten_as_one_minus_erf() -> None:
    import onnxruntime as ort
    from onnx import TensorProto

    from edgeq.stages._tf_export_child import _replace_erfc

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])
    graph = helper.make_graph([helper.make_node("Erfc", ["x"], ["y"], name="gelu/Erfc")], "g", [x], [y])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert _replace_erfc(proto) == 1
    assert [n.op_type for n in proto.graph.node] == ["Erf", "Sub"]
    onnx.checker.check_model(proto, full_check=True)
    v = np.array([-2.0, -0.5, 0.0, 0.5, 2.0], np.float32)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": v})[0]
    from math import erfc

    np.testing.assert_allclose(got, [erfc(t) for t in v], atol=1e-6)
    assert _replace_erfc(proto) == 0


def test_a_converter_refusal_is_a_conversion_failure_with_its_reason(tmp_path: Path) -> None:
    from edgeq.stages._convert_child import ConversionFailed, _convert

    class Refuses:
        def __init__(self, text: str) -> None:
            self.text = text

        def convert(self) -> bytes:
            raise RuntimeError(self.text)

    d = make_model_dir(tmp_path, "onnx")
    _insert_before_fc(d, "Sinh")
    with pytest.raises(ConversionFailed, match=r"^the TFLite converter refused the float32 model: error: bad shape$"):
        _convert(Refuses("error: bad shape\n  context"), "float32", d / "model.onnx")
    with pytest.raises(ConversionFailed) as info:
        _convert(Refuses("error: failed\nTF Select ops: Sinh\nDetails:"), "INT8", d / "model.onnx")
    assert "(Sinh: ONNX node '/head/Sinh')" in str(info.value) and "GELU" not in str(info.value)
    assert "the INT8 model needs TensorFlow ops" in str(info.value)


def _insert_gelu(model_dir: Path, *, divide: bool = True, one: float = 1.0) -> None:
    """The exact GELU between TinyNet's pooled features and its classifier, as PyTorch exports nn.GELU:
    x * 0.5 * (1 + erf(x / sqrt(2))) (or x * (1 / sqrt(2)) for the division)."""
    path = model_dir / "model.onnx"
    model = onnx.load_model(str(path))
    fc = next(n for n in model.graph.node if n.op_type == "Gemm")
    x = fc.input[0]
    consts = {"g_sqrt2": 2 ** 0.5 if divide else 2 ** -0.5, "g_one": one, "g_half": 0.5}
    for name, value in consts.items():
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    nodes = [
        helper.make_node("Div" if divide else "Mul", [x, "g_sqrt2"], ["g_s"], name="/act/Div"),
        helper.make_node("Erf", ["g_s"], ["g_e"], name="/act/Erf"),
        helper.make_node("Add", ["g_e", "g_one"], ["g_a"], name="/act/Add"),
        helper.make_node("Mul", [x, "g_a"], ["g_m"], name="/act/Mul"),
        helper.make_node("Mul", ["g_m", "g_half"], ["g_y"], name="/act/Mul_1"),
    ]
    fc.input[0] = "g_y"
    at = list(model.graph.node).index(fc)
    for k, node in enumerate(nodes):
        model.graph.node.insert(at + k, node)
    onnx.save_model(model, str(path))


def test_exact_gelu_is_fused_and_converts_to_int8(tmp_path: Path) -> None:
    """PyTorch's exact GELU (an Erf, which TFLite cannot run) becomes one com.microsoft Gelu: the same
    outputs on onnxruntime, TFLite's int8 GELU after conversion; onnx2tf never rewrites the float ONNX."""
    import onnxruntime as ort

    d = make_model_dir(tmp_path, "onnx")
    _insert_gelu(d, divide=True)
    out, keep = tmp_path / "dist" / "bundle", tmp_path / "keep"
    code, output = _build(d, out, "--keep-build", str(keep))
    assert code == 0, output
    report = json.loads((out / "report.json").read_text())
    assert report["export"]["graphs"]["model"]["rewrites"][1].startswith(
        "exact GELU (Div/Erf/Add/Mul/Mul) -> com.microsoft Gelu (x1): the same function")
    insp = report["artifacts"]["tflite_int8"]["inspection"]["model"]
    assert insp["ops"]["GELU"] == 1 and insp["float_output_ops"] == [] and insp["int8_compute_fraction"] == 1.0
    float_onnx = onnx.load_model(str(keep / "model.float.onnx"))  # as export wrote it, after conversion too
    assert [(n.op_type, n.domain) for n in float_onnx.graph.node if n.op_type == "Gelu"] == [("Gelu", "com.microsoft")]
    assert "Erf" not in {n.op_type for n in float_onnx.graph.node}
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    for k in range(4):
        feed = {"image": x[k:k + 1]}
        ref = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        new = ort.InferenceSession(str(keep / "model.float.onnx"), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        np.testing.assert_allclose(new, ref, rtol=1e-5, atol=1e-6)


def test_exact_gelu_written_with_a_mul_by_one_over_sqrt2_is_fused_too(tmp_path: Path) -> None:
    """The other way exporters write x / sqrt(2): the same rewrite (the build that converts it to int8
    is the Div form's, above), the same outputs on onnxruntime."""
    import onnxruntime as ort

    from edgeq.stages.export import _fuse_exact_gelu

    d = make_model_dir(tmp_path, "onnx")
    _insert_gelu(d, divide=False)
    model = onnx.load_model(str(d / "model.onnx"))
    (rewrite,) = _fuse_exact_gelu(model)
    assert rewrite.startswith("exact GELU (Div/Erf/Add/Mul/Mul) -> com.microsoft Gelu (x1)"), rewrite
    assert [(n.op_type, n.domain) for n in model.graph.node if n.op_type == "Gelu"] == [("Gelu", "com.microsoft")]
    assert "Erf" not in {n.op_type for n in model.graph.node}
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    new = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for k in range(4):
        feed = {"image": x[k:k + 1]}
        np.testing.assert_allclose(new.run(None, feed)[0], ref.run(None, feed)[0], rtol=1e-5, atol=1e-6)


def test_a_pattern_that_is_not_gelu_is_left_alone(tmp_path: Path) -> None:
    from edgeq.stages.export import _fuse_exact_gelu

    d = make_model_dir(tmp_path, "onnx")
    _insert_gelu(d, one=2.0)  # x * 0.5 * (2 + erf(...)): not a GELU
    model = onnx.load_model(str(d / "model.onnx"))
    assert _fuse_exact_gelu(model) == []
    assert "Erf" in {n.op_type for n in model.graph.node}
