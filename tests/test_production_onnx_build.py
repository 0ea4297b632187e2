"""Full builds of ONNX files written as production exporters write them (tests/onnx_models.py): each
builds for android, full INT8, every gate evaluated and passed; the bundle and report say what export
changed. One converter run per model, on host LiteRT only."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnx_models as om
from conftest import invoke_cli


def _build(tmp_path: Path, case: om.Case, *args: str) -> tuple[Path, dict]:
    root = tmp_path / "model"
    om.write_model_dir(case, root)
    out = tmp_path / "out"
    result = invoke_cli(["build", str(root), "--out", str(out), "--runtime", "litert", "--keep-build",
                         str(tmp_path / "keep"), *args])
    assert result.exit_code == 0, result.stderr + result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["passed"]
    insp = report["artifacts"]["tflite_int8"]["inspection"]["model"]
    assert insp["int8_compute_ops"] == insp["compute_ops"] > 0 and not insp["float_output_ops"]
    assert {g["name"] for g in report["gates"]} >= {"output_cosine", "int8_compute_ops", "model_bytes"}
    return out, report


def test_input_with_an_unnamed_dimension_builds(tmp_path: Path) -> None:
    out, _ = _build(tmp_path, om.unnamed_dim())
    model_json = json.loads((out / "model.json").read_text())
    assert [(i["name"], i["shape"]) for i in model_json["inputs"]] == [("x", [1, 16, 32, 3])]
    assert "- model: input 'x' [batch, 3, ?, 32] -> [1, 3, 16, 32]" in (out / "report.md").read_text()


def test_minus_one_dimensions_build_with_input_shape(tmp_path: Path) -> None:
    _out, report = _build(tmp_path, om.minus_one_dims(), "--input-shape", "x=1,3,16,16")
    assert "input 'x' [-1, 3, 0, -1] -> [1, 3, 16, 16]" in report["export"]["graphs"]["model"]["rewrites"]


def test_scalar_sr_frozen_with_shape_driven_ifs_and_state_builds(tmp_path: Path) -> None:
    out, report = _build(tmp_path, om.scalar_config_and_ifs())
    float_onnx = onnx.load(str(tmp_path / "keep" / "model.float.onnx"))
    assert not [n for n in float_onnx.graph.node if n.op_type == "If"]
    model_json = json.loads((out / "model.json").read_text())
    assert [i["name"] for i in model_json["inputs"]] == ["x", "state"]
    assert [o["name"] for o in model_json["outputs"]] == ["score", "stateN"]
    assert model_json["frozen_inputs"] == [{"name": "sr", "dtype": "int64", "shape": [], "value": 16000}]
    text = (out / "report.md").read_text()
    assert "- model: input 'sr' frozen to 16000 (int64): a constant of the graph, not an input" in text
    assert "- model: If x2: each condition became a constant" in text
    assert "checked on onnxruntime: the float ONNX computes what the model does" in text
    cosine = {o: m["cosine"] for o, m in report["artifacts"]["tflite_int8"]["runtimes"]["litert"]["outputs"]["model"].items()}
    assert set(cosine) == {"score", "stateN"} and min(cosine.values()) > 0.99


def test_input_value_on_the_command_line_freezes_as_edgeq_toml_does(tmp_path: Path) -> None:
    """`--input-value sr=16000` with sr declared without a value gives the very spec edgeq.toml's
    `value = 16000` gives, so the build above stands for both."""
    from edgeq.config import load_model_spec, parse_input_value

    om.write_model_dir(om.scalar_config_and_ifs(), tmp_path / "toml")
    case = om.scalar_config_and_ifs()
    case.inputs = case.inputs[:-1]  # sr left out of [[inputs]]: it must be named somewhere
    case.inputs.append({"name": "sr", "shape": [], "dtype": "int32"})  # ... and the option freezes it
    om.write_model_dir(case, tmp_path / "cli")
    from_toml = load_model_spec(tmp_path / "toml")
    from_cli = load_model_spec(tmp_path / "cli", None, dict([parse_input_value("sr=16000")]))
    assert [(g.inputs, g.outputs, g.frozen) for g in from_cli.graphs] == \
        [(g.inputs, g.outputs, g.frozen) for g in from_toml.graphs]
    assert [(f.name, f.value) for f in from_cli.graphs[0].frozen] == [("sr", 16000)]


def test_lstm_op_with_its_state_as_inputs_and_outputs_builds(tmp_path: Path) -> None:
    """The ONNX LSTM op written out step by step; its state [1, 1, 16] declared layout "DNC" (not
    batch-first) keeps its shape in the .tflite, as the app feeds it back."""
    out, report = _build(tmp_path, om.lstm_state())
    assert any(r.startswith("LSTM x1 written out step by step") for r in report["export"]["graphs"]["model"]["rewrites"])
    model_json = json.loads((out / "model.json").read_text())
    assert [(i["name"], i["shape"]) for i in model_json["inputs"]] == [("x", [1, 8]), ("h", [1, 1, 16]), ("c", [1, 1, 16])]
