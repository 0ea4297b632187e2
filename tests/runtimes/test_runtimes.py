"""Runtimes: every registered one loads, and each runs its artifact in the ONNX model's terms."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import INPUT, NUM_CLASSES, OUTPUT, ApiBuild, CliBuild, tiny_assets, tiny_logits
from onnx import TensorProto, helper

from edgeq.artifacts import Artifact
from edgeq.config import load_model_spec, load_target
from edgeq.runtimes import RUNTIMES, create_runtime, facts, split_name
from edgeq.stages.convert import io_mapping
from edgeq.tflite_io import dequantize, quantize


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_every_registered_runtime_imports_and_builds(name: str) -> None:
    module, cls = RUNTIMES[name].cls.split(":")
    assert hasattr(importlib.import_module(module), cls)
    full = f"{name}:cortex-a53" if RUNTIMES[name].emulator else name
    rt = create_runtime(full, threads=2)
    assert rt.name == full and rt.threads == 2
    assert RUNTIMES[name].format in ("onnx", "tflite")
    assert facts(full) is RUNTIMES[name]


def test_runtime_table_and_target_agree() -> None:
    assert {split_name(r)[0] for r in load_target("android").runtimes} <= set(RUNTIMES)
    # emulated runtimes run whole artifacts in their own process; host ones are engines per file
    assert all(f.whole_artifact == (f.emulator is not None) for f in RUNTIMES.values())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("litert-arm64", "runtime 'litert-arm64': a CPU profile is needed; choose one of: litert-arm64:cortex-a53"),
        ("litert-arm64:", "a CPU profile is needed"),
        ("litert-arm64:cortex-a99", "unknown CPU profile 'cortex-a99'; choose one of: litert-arm64:cortex-a53, "
                                    "litert-arm64:cortex-a72, litert-arm64:cortex-a76"),
        ("litert:cortex-a53", "litert runs on the host and takes no CPU profile; write 'litert'"),
        ("tflite-gpu:x", "unknown runtime 'tflite-gpu'"),
    ],
)
def test_runtime_names_with_profiles(name: str, message: str) -> None:
    with pytest.raises(KeyError) as e:
        create_runtime(name)
    assert message in e.value.args[0]


def test_profile_selection_reaches_the_runtime() -> None:
    a53, a76 = create_runtime("litert-arm64:cortex-a53"), create_runtime("litert-arm64:cortex-a76")
    assert (a53.profile.qemu_cpu, a53.profile.dot_product) == ("cortex-a53", False)
    assert (a76.profile.qemu_cpu, a76.profile.dot_product) == ("cortex-a76", True)
    assert split_name("litert-arm64:cortex-a76") == ("litert-arm64", "cortex-a76")
    assert split_name("litert") == ("litert", None)


def test_unknown_runtime() -> None:
    with pytest.raises(KeyError, match="unknown runtime 'tensorrt'; known: onnxruntime, litert"):
        create_runtime("tensorrt")


def test_onnxruntime_runs_a_helper_built_graph(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "two"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, [2, 3]),
        ],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = np.array([[-1.0, 0.5, 2.0], [3.0, -4.0, 0.0]], np.float32)

    rt = create_runtime("onnxruntime")
    rt.load(Artifact("g", path, "onnx", "float32", {"outputs": ["y"]}))  # only the outputs asked for
    out = rt.run({"x": x})
    assert list(out) == ["y"] and out["y"].dtype == np.float32
    np.testing.assert_array_equal(out["y"], 2 * np.maximum(x, 0))

    rt.load(Artifact("g", path, "onnx", "float32"))  # no list: every graph output
    assert list(rt.run({"x": x})) == ["y", "r"]
    d = rt.describe()
    assert (d["runtime"], d["provider"], d["threads"], d["host"]) == (
        "onnxruntime",
        "CPUExecutionProvider",
        1,
        True,
    )


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_quantize_dequantize_round_trip(dtype: str) -> None:
    q = {"scale": [0.05], "zero_point": [3 if dtype == "int8" else 128]}
    x = np.linspace(-3, 3, 101, dtype=np.float32)
    y = quantize(x, q, dtype)
    assert y.dtype == np.dtype(dtype)
    back = dequantize(y, q)
    assert back.dtype == np.float32
    inside = (back > -3 + 0.2) & (back < 3 - 0.2)  # away from the clipped ends
    assert np.all(np.abs(back[inside] - x[inside]) <= 0.025 + 1e-6)
    info = np.iinfo(dtype)
    big = quantize(np.array([1e6, -1e6], np.float32), q, dtype)
    assert big.tolist() == [info.max, info.min]


def _litert(path: Path, model_dir: Path) -> object:
    spec = load_model_spec(model_dir)
    meta = io_mapping(path, spec.inputs, [OUTPUT], {OUTPUT: [1, NUM_CLASSES]})
    rt = create_runtime("litert")
    rt.load(Artifact("tflite_int8", path, "tflite", "int8", meta))
    return rt


@pytest.mark.parametrize("which", ["float-io", "int8-io"])
def test_litert_takes_and_returns_onnx_layout_floats(
    which: str, tiny_build: CliBuild, onnx_int8_build: ApiBuild
) -> None:
    if which == "float-io":
        rt = _litert(tiny_build.out / "model.tflite", tiny_build.model_dir)
    else:
        rt = _litert(onnx_int8_build.out / "model.tflite", onnx_int8_build.model_dir)
    assets = tiny_assets()
    for k in range(8):
        x = assets.eval_images[k : k + 1]  # NCHW, as the ONNX model takes it
        out = rt.run({INPUT: x})
        assert list(out) == [OUTPUT]
        y = out[OUTPUT]
        assert y.shape == (1, NUM_CLASSES) and y.dtype == np.float32
        ref = tiny_logits(x)
        assert int(y.argmax()) == int(ref.argmax()) == int(assets.eval_labels[k])
        cos = float((y * ref).sum() / np.sqrt((y * y).sum() * (ref * ref).sum()))
        assert cos > 0.99
    d = rt.describe()
    assert (d["runtime"], d["threads"], d["host"]) == ("litert", 1, True)
    assert d["kernels"].startswith("XNNPACK")


def test_litert_float32_model_matches_the_float_reference(onnx_int8_build: ApiBuild) -> None:
    rt = _litert(onnx_int8_build.keep / "model.float32.tflite", onnx_int8_build.model_dir)
    x = tiny_assets().eval_images[:1]
    np.testing.assert_allclose(rt.run({INPUT: x})[OUTPUT], tiny_logits(x), rtol=1e-4, atol=1e-4)
