"""quantize stage: every calibration sample counts, however many there are.

The stage feeds onnxruntime's calibrator in chunks of at most 64 samples (``quantize._CHUNK``). For
minmax the INT8 model's activation scales and zero points must be exactly those of one pass of
``quantize_static`` over every sample held in memory (the reference), also at and around the chunk
boundaries: 1, 63, 64, 65, 128 and 200 samples. onnxruntime's ``CalibMaxIntermediateOutputs`` (what
edgeq used before) dropped each full batch of 64 samples: 64 and 128 samples failed ("No data is
collected") and 65 samples calibrated on the last one only.

The tiny model is built here with onnx.helper from a fixed seed; its calibration samples shrink in
scale from first to last (or grow, for the histogram methods: their bins would have to grow chunk by
chunk), so the activation ranges depend on which samples are seen (ranges from the last chunk alone
are several times too small). Entropy and percentile must give exactly one pass's ranges too.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import default_config, make_context, run_stage, write_config

from edgeq.artifacts import Artifact
from edgeq.config import QuantSpec
from edgeq.context import BuildContext
from edgeq.results import CalibrationResult, QuantizeResult
from edgeq.stages.quantize import _CHUNK
from edgeq.stages.quantize import STAGE as QUANTIZE

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "sample_models" / "digits"
SEED = 7
N_SAMPLES = 200
IN_SHAPE = (1, 3, 8, 8)
CLASSES = ("a", "b", "c", "d")


def _tiny_onnx() -> bytes:
    """image [1, 3, 8, 8] -> Conv -> Relu -> Conv (stride 2) -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> logits [1, 4]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)

    def init(name: str, shape: tuple[int, ...], scale: float = 0.5) -> Any:
        return numpy_helper.from_array((scale * rng.standard_normal(shape)).astype(np.float32), name)

    inits = [init("w1", (8, 3, 3, 3)), init("b1", (8,)), init("w2", (8, 8, 3, 3), 0.3), init("b2", (8,)),
             init("w3", (4, 8)), init("b3", (4,))]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(nodes, "tiny_calibration", [helper.make_tensor_value_info("image", TensorProto.FLOAT, IN_SHAPE)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, (1, 4))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _samples(n: int, *, growing: bool = False) -> np.ndarray:
    """``n`` samples whose scale shrinks from 4 to about 0.1 (or grows from 0.1 to 4 if ``growing``)."""
    rng = np.random.default_rng(SEED + 1)
    x = rng.standard_normal((n, *IN_SHAPE[1:])).astype(np.float32)
    scale = 4.0 / (1.0 + np.arange(n, dtype=np.float32) / 5.0)
    if growing:
        scale = scale[::-1]
    return (x * scale[:, None, None, None]).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder for the tiny ONNX with 200 calibration samples (shrinking) and a small eval set."""
    root = tmp_path_factory.mktemp("calibration") / "tiny"
    cal, ev = root / "data" / "calibration", root / "data" / "eval"
    cal.mkdir(parents=True)
    ev.mkdir(parents=True)
    (root / "model.onnx").write_bytes(_tiny_onnx())
    (root / "labels.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    np.save(cal / "image.npy", _samples(N_SAMPLES))
    np.save(ev / "image.npy", _samples(8))
    np.save(ev / "labels.npy", np.arange(8, dtype=np.int64) % len(CLASSES))
    cfg = default_config("onnx")
    cfg["inputs"][0]["shape"] = list(IN_SHAPE)
    write_config(root, cfg)
    return root


def _stage(model_dir: Path, float_onnx: Path, work: Path, n: int, method: str = "minmax") -> BuildContext:
    """Run the quantize stage alone on ``n`` calibration samples of ``model_dir``."""
    ctx = make_context(model_dir, work)
    ctx.spec = replace(ctx.spec, quantization=QuantSpec(method=method))
    ctx.calibration.count = n
    src = ctx.build_dir / "model.float.onnx"
    shutil.copyfile(float_onnx, src)
    ctx.add(Artifact("onnx_float", src, "onnx", "float32", {"outputs": ["logits"]}))
    ctx.put(CalibrationResult({"model": ctx.calibration}))  # what the calibrate stage does for one graph
    run_stage(QUANTIZE, ctx)
    return ctx


def _one_shot(ctx: BuildContext, method: str = "minmax") -> Path:
    """The reference: quantize_static on the stage's pre-processed model, every sample in one collect_data
    call (a plain reader, no CalibMaxIntermediateOutputs), with the stage's other arguments."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Plain(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([ctx.calibration.sample(k) for k in range(len(ctx.calibration))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": False}
    if method == "percentile":
        extra["CalibPercentile"] = ctx.spec.quantization.percentile
    out = ctx.build_dir / "reference.int8.onnx"
    quantize_static(str(ctx.build_dir / "model.preprocessed.onnx"), str(out), Plain(), quant_format=QuantFormat.QDQ,
                    per_channel=ctx.spec.quantization.per_channel, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=methods[method], extra_options=extra)
    return out


def _qdq_params(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every initializer a QuantizeLinear/DequantizeLinear node reads as scale or zero point, and the
    (scale, zero point) of each activation QuantizeLinear by the tensor it quantizes."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    params: dict[str, np.ndarray] = {}
    activations: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            params.update({name: inits[name] for name in node.input[1:] if name in inits})
            if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
                activations[node.input[0]] = np.array([inits[node.input[1]].item(), float(inits[node.input[2]].item())])
    return params, activations


def _assert_identical(got: Path, want: Path) -> int:
    got_params, got_act = _qdq_params(got)
    want_params, want_act = _qdq_params(want)
    assert want_act, "the reference has no activation QuantizeLinear"
    assert sorted(got_act) == sorted(want_act)
    for name in want_act:  # scale and zero point of each activation, with a readable message
        np.testing.assert_array_equal(got_act[name], want_act[name], err_msg=f"activation {name}")
    assert sorted(got_params) == sorted(want_params)
    for name, value in want_params.items():
        assert got_params[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got_params[name], value, err_msg=name)
    return len(want_act)


@pytest.mark.parametrize("n", [1, 63, 64, 65, 128, 200])
def test_minmax_ranges_equal_one_pass_over_every_sample(tiny_dir: Path, tmp_path: Path, n: int) -> None:
    ctx = _stage(tiny_dir, tiny_dir / "model.onnx", tmp_path, n)
    got = ctx.artifacts["onnx_int8"]["model"].path
    assert _assert_identical(got, _one_shot(ctx)) >= 4  # image, both convs' outputs, the pooled features
    recipe = ctx.result(QuantizeResult).recipe
    assert recipe["calibration_samples"] == {"model": n}
    assert recipe["calibration_chunks"] == {"model": math.ceil(n / _CHUNK)}
    # the calibrator's augmented model is removed; the ranges quantize_static read stay in the build folder
    assert not list(ctx.build_dir.glob("*augmented*"))
    assert (ctx.build_dir / "model.calibration.json").is_file()


def test_last_chunk_alone_would_give_other_ranges(tiny_dir: Path, tmp_path: Path) -> None:
    """The data really exercises the bug: ranges from the 65th sample alone are far from all 65's."""
    ctx = _stage(tiny_dir, tiny_dir / "model.onnx", tmp_path / "all", 65)
    ctx_last = make_context(tiny_dir, tmp_path / "last")
    ctx_last.calibration.count = 65
    ctx.calibration = replace(ctx_last.calibration, arrays={"image": ctx_last.calibration.arrays["image"][64:65]}, count=1)
    last = _one_shot(ctx)
    _, all_act = _qdq_params(ctx.artifacts["onnx_int8"]["model"].path)
    _, last_act = _qdq_params(last)
    ratio = min(all_act[k][0] / last_act[k][0] for k in all_act)
    assert ratio > 3  # every activation scale is at least 3x larger with every sample seen


@pytest.mark.parametrize("n", [65, 200])
@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods_equal_one_pass_over_every_sample(tiny_dir: Path, tmp_path: Path, method: str, n: int) -> None:
    """Samples growing in scale: left to onnxruntime's chunk-by-chunk re-binning, the histograms would
    differ from one pass (entropy's ranges down to a tenth of it); laid out on the whole set's range first
    (``_seed_histograms``) they are one pass's, count for count."""
    model_dir = tmp_path / "growing"
    shutil.copytree(tiny_dir, model_dir)
    np.save(model_dir / "data" / "calibration" / "image.npy", _samples(N_SAMPLES, growing=True))
    ctx = _stage(model_dir, model_dir / "model.onnx", tmp_path / "work", n, method)
    assert ctx.result(QuantizeResult).recipe["calibration_chunks"] == {"model": math.ceil(n / _CHUNK)}
    assert _assert_identical(ctx.artifacts["onnx_int8"]["model"].path, _one_shot(ctx, method)) >= 4


@pytest.fixture(scope="module")
def digits_float(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits sample's float ONNX, exported once for the module."""
    from edgeq.stages.export import STAGE as EXPORT

    ctx = make_context(DIGITS, tmp_path_factory.mktemp("digits_export"))
    run_stage(EXPORT, ctx)
    return ctx.artifacts["onnx_float"]["model"].path


@pytest.mark.parametrize("n", [64, 65, 128])
def test_digits_sample_ranges_equal_one_pass(digits_float: Path, tmp_path: Path, n: int) -> None:
    ctx = _stage(DIGITS, digits_float, tmp_path, n)
    assert _assert_identical(ctx.artifacts["onnx_int8"]["model"].path, _one_shot(ctx)) >= 10
    assert ctx.result(QuantizeResult).recipe["calibration_chunks"] == {"model": math.ceil(n / _CHUNK)}
