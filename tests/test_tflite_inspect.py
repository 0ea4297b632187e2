"""edgeq.tflite_inspect on the .tflite files of the shared builds."""

from __future__ import annotations

from pathlib import Path

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
