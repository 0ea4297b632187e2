"""Dynamic shapes: input shapes from --input-shape, edgeq.toml or the ONNX model; every dynamic
dimension left without a size is listed by input name, exit 2."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from conftest import DELETE, INPUT, SHAPE, invoke_cli, make_model_dir

from edgeq.config import load_model_spec, parse_input_shape
from edgeq.errors import ConfigError


def _two_dynamic_dims(d: Path) -> None:
    """model.onnx with its height dynamic too (named 'h'), besides the batch."""
    model = onnx.load_model(str(d / "model.onnx"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].ClearField("dim_value")
    dims[2].dim_param = "h"
    onnx.save_model(model, str(d / "model.onnx"))


def _static(d: Path) -> None:
    model = onnx.load_model(str(d / "model.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save_model(model, str(d / "model.onnx"))


def test_dynamic_dimensions_without_a_size_are_all_listed(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path, "onnx", inputs=[{"name": INPUT}])
    _two_dynamic_dims(d)
    with pytest.raises(ConfigError) as e:
        load_model_spec(d)
    msg = str(e.value)
    assert "model.onnx: dynamic dimensions with no size: image[0] 'batch', image[2] 'h'" in msg
    assert "--input-shape image=" in msg


def test_input_shape_fills_dynamic_dimensions(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path, "onnx", inputs=[{"name": INPUT}])
    _two_dynamic_dims(d)
    spec = load_model_spec(d, {INPUT: SHAPE})
    assert spec.inputs[0].shape == SHAPE and spec.inputs[0].layout == "NCHW"


def test_inputs_can_be_left_out_for_an_onnx_model(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path, "onnx", inputs=DELETE)
    with pytest.raises(ConfigError, match=r"dynamic dimensions with no size: image\[0\] 'batch'"):
        load_model_spec(d)
    spec = load_model_spec(d, {INPUT: SHAPE})
    assert [(i.name, i.shape, i.dtype) for i in spec.inputs] == [(INPUT, SHAPE, "float32")]
    _static(d)
    assert load_model_spec(d).inputs[0].shape == SHAPE  # every dimension static: read from the model


def test_an_unknown_input_name_is_refused(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path)
    with pytest.raises(ConfigError, match="--input-shape names pixels, but the model's inputs are image"):
        load_model_spec(d, {"pixels": SHAPE})


def test_input_shape_replaces_a_declared_shape(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path)  # pytorch: shapes come from edgeq.toml or --input-shape only
    assert load_model_spec(d, {INPUT: (2, 3, 8, 8)}).inputs[0].shape == (2, 3, 8, 8)
    d2 = make_model_dir(tmp_path, dirname="m2", inputs=[{"name": INPUT}])
    with pytest.raises(ConfigError, match=r"inputs\[0\] \('image'\) has no shape; give shape = \[\.\.\.\] or --input-shape"):
        load_model_spec(d2)


@pytest.mark.parametrize("text", ["image", "image=", "=1,3", "image=1,x,8", "image=1,0,8,8", "image=1,-3"])
def test_bad_input_shape_text(text: str) -> None:
    with pytest.raises(ConfigError, match=r"write NAME=D1,D2,\.\.\. with positive sizes"):
        parse_input_shape(text)


def test_input_shape_cli_errors(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path, "onnx", inputs=[{"name": INPUT}])
    for args, message in (
        (["--input-shape", "image=1,x"], "write NAME=D1,D2,..."),
        (["--input-shape", "pixels=1,3,8,8"], "image[0] 'batch' (--input-shape named pixels, not an input of this model)"),
        ([], "dynamic dimensions with no size: image[0] 'batch'"),
    ):
        result = invoke_cli(["build", str(d), "--out", str(tmp_path / "out"), *args])
        assert result.exit_code == 2, result.stdout
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()


def test_a_dynamic_onnx_model_builds_with_input_shape(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path, "onnx", inputs=DELETE)
    out = tmp_path / "out"
    result = invoke_cli(["build", str(d), "--out", str(out), "--input-shape", "image=1,3,8,8", "--runtime", "litert"])
    assert result.exit_code == 0, result.stderr
    assert (out / "model.tflite").is_file()
