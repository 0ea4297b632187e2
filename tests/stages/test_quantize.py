"""quantize stage: float ONNX -> static INT8 QDQ ONNX, run alone on a hand-made BuildContext."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import INPUT, make_context, make_model_dir, run_stage
from onnx import numpy_helper

from edgeq.artifacts import Artifact
from edgeq.config import QuantSpec
from edgeq.results import CalibrationResult, QuantizeResult
from edgeq.stages.export import STAGE as EXPORT
from edgeq.stages.quantize import STAGE as QUANTIZE
from edgeq.stages.quantize import StreamingReader


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny model folder and its float ONNX, exported once for the module."""
    root = tmp_path_factory.mktemp("quantize")
    model_dir = make_model_dir(root)
    ctx = make_context(model_dir, root / "work")
    run_stage(EXPORT, ctx)
    return model_dir, ctx.artifacts["onnx_float"]["model"].path


def quantize(exported: tuple[Path, Path], work: Path, **quant: Any) -> Any:
    model_dir, float_onnx = exported
    ctx = make_context(model_dir, work)
    ctx.spec = replace(ctx.spec, quantization=QuantSpec(**quant))
    src = ctx.build_dir / "model.float.onnx"
    shutil.copyfile(float_onnx, src)
    ctx.add(Artifact("onnx_float", src, "onnx", "float32", {"outputs": ["logits"]}))
    ctx.put(CalibrationResult({"model": ctx.calibration}))  # what the calibrate stage does for one graph
    result = run_stage(QUANTIZE, ctx)
    assert result is ctx.result(QuantizeResult) and "onnx_int8" in ctx.artifacts
    return ctx


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _top1(path: Path, ds: Any) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.array([sess.run(None, s)[0].argmax() for s in ds])


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_each_calibration_method_gives_a_qdq_model(
    exported: tuple[Path, Path], tmp_path: Path, method: str
) -> None:
    ctx = quantize(exported, tmp_path, method=method)
    assert set(ctx.artifacts["onnx_int8"]) == {"model"}
    art = ctx.artifacts["onnx_int8"]["model"]
    assert (art.path, art.format, art.precision, art.graph) == (
        ctx.build_dir / "model.int8.onnx", "onnx", "int8", "model"
    )
    assert art.meta == {"outputs": ["logits"]}
    ops = _ops(art.path)
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert ops.count("Conv") == 2 and "Gemm" in ops
    model = onnx.load(str(art.path))
    int8_weights = [t for t in model.graph.initializer if numpy_helper.to_array(t).dtype == np.int8]
    assert len(int8_weights) >= 3  # both convs and the classifier
    recipe = ctx.result(QuantizeResult).recipe
    assert recipe["calibration_method"] == method
    assert recipe["format"] == "QDQ"
    assert recipe["weights"] == "int8 symmetric per-channel"
    assert recipe["activations"] == "int8 asymmetric per-tensor"
    assert recipe["calibration_samples"] == {"model": len(ctx.calibration)}
    assert ("percentile" in recipe) == (method == "percentile")
    # the INT8 model still classifies the eval set like the float model does
    agree = (_top1(art.path, ctx.eval) == ctx.eval.sample_labels()).mean()
    assert agree >= 0.9


def test_per_tensor_weights(exported: tuple[Path, Path], tmp_path: Path) -> None:
    ctx = quantize(exported, tmp_path, per_channel=False)
    assert ctx.result(QuantizeResult).recipe["weights"] == "int8 symmetric per-tensor"
    model = onnx.load(str(ctx.artifacts["onnx_int8"]["model"].path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weight_scales = [
        inits[n.input[1]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and inits.get(n.input[0]) is not None
        and inits[n.input[0]].dtype == np.int8
    ]
    assert weight_scales and all(s.size == 1 for s in weight_scales)


def test_calibration_sample_limit_is_recorded(exported: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, float_onnx = exported
    ctx = make_context(model_dir, tmp_path / "limited")
    ctx.calibration.count = 5
    ctx.add(Artifact("onnx_float", float_onnx, "onnx", "float32", {"outputs": ["logits"]}))
    ctx.put(CalibrationResult({"model": ctx.calibration}))
    run_stage(QUANTIZE, ctx)
    assert ctx.result(QuantizeResult).recipe["calibration_samples"] == {"model": 5}
    assert "percentile" not in ctx.result(QuantizeResult).recipe


def test_streaming_reader_hands_out_one_sample_at_a_time(tmp_path: Path) -> None:
    ctx = make_context(make_model_dir(tmp_path), tmp_path / "work")
    reader = StreamingReader(ctx.calibration)
    assert len(reader) == len(ctx.calibration)
    first = reader.get_next()
    assert first is not None and first[INPUT].shape == (1, 3, 8, 8)
    rest = iter(lambda: reader.get_next(), None)
    assert sum(1 for _ in rest) == len(ctx.calibration) - 1
    assert reader.get_next() is None
    reader.rewind()
    again = reader.get_next()
    assert again is not None
    np.testing.assert_array_equal(again[INPUT], first[INPUT])
