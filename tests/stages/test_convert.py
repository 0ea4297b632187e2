"""convert stage: read through the kept build folder of the shared ONNX/int8-I/O build and the bundles."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from conftest import INPUT, NUM_CLASSES, OUTPUT, SHAPE, ApiBuild, CliBuild
from edgeq.config import InputSpec, load_model_spec
from edgeq.errors import ModelError
from edgeq.stages.convert import channels_last_perm, input_perm, io_mapping


@pytest.mark.parametrize(
    ("rank", "perm"),
    [(1, (0,)), (2, (0, 1)), (3, (0, 2, 1)), (4, (0, 2, 3, 1)), (5, (0, 2, 3, 4, 1))],
)
def test_channels_last_perm(rank: int, perm: tuple[int, ...]) -> None:
    assert channels_last_perm(rank) == perm


@pytest.mark.parametrize(
    ("shape", "layout", "perm"),
    [
        ((1, 3, 8, 8), "NCHW", (0, 2, 3, 1)),  # onnx2tf makes channels-first inputs channels-last
        ((1, 8, 8, 3), "NHWC", (0, 1, 2, 3)),  # and keeps declared channels-last ones as they are
        ((1, 3, 16), "NCW", (0, 2, 1)),
        ((1, 16, 3), "NWC", (0, 1, 2)),
        ((1, 16), "NC", (0, 1)),
    ],
)
def test_input_perm_follows_the_declared_layout(
    shape: tuple[int, ...], layout: str, perm: tuple[int, ...]
) -> None:
    assert input_perm(InputSpec("x", shape, "float32", layout)) == perm


def _mapping(build_dir: Path, name: str, model_dir: Path) -> dict:
    spec = load_model_spec(model_dir)
    return io_mapping(build_dir / name, spec.inputs, [OUTPUT], {OUTPUT: [1, NUM_CLASSES]})


def test_convert_writes_both_tflite_files_and_a_log(onnx_int8_build: ApiBuild) -> None:
    keep = onnx_int8_build.keep
    for name in ("model.float32.tflite", "model.int8.tflite"):
        assert (keep / name).read_bytes()[4:8] == b"TFL3", name  # the flatbuffer file identifier
    assert (keep / "saved_model" / "saved_model.pb").is_file()
    assert (keep / "convert.log").is_file()
    conversion = onnx_int8_build.outcome.report["conversion"]
    assert conversion["int8_ops_set"] == "TFLITE_BUILTINS_INT8"
    assert conversion["io_dtype"] == "int8"


def test_int8_io_model_takes_quantized_nhwc_input(onnx_int8_build: ApiBuild) -> None:
    meta = _mapping(onnx_int8_build.keep, "model.int8.tflite", onnx_int8_build.model_dir)
    assert meta["signature"] == "serving_default"
    (inp,) = meta["inputs"]
    assert inp["name"] == INPUT and inp["onnx_shape"] == list(SHAPE)
    assert inp["perm"] == [0, 2, 3, 1]
    assert inp["shape"] == [1, 8, 8, 3]
    assert inp["dtype"] == "int8"
    q = inp["quantization"]
    assert len(q["scale"]) == 1 and q["scale"][0] > 0 and len(q["zero_point"]) == 1
    assert -128 <= q["zero_point"][0] <= 127
    (out,) = meta["outputs"]
    assert (out["name"], out["shape"], out["dtype"], out["perm"]) == (
        OUTPUT,
        [1, NUM_CLASSES],
        "int8",
        [0, 1],
    )
    assert out["quantization"] is not None


def test_float32_tflite_keeps_float_io(onnx_int8_build: ApiBuild) -> None:
    meta = _mapping(onnx_int8_build.keep, "model.float32.tflite", onnx_int8_build.model_dir)
    (inp,) = meta["inputs"]
    assert (inp["perm"], inp["dtype"], inp["quantization"]) == ([0, 2, 3, 1], "float32", None)
    assert meta["outputs"][0]["dtype"] == "float32"


def test_float_io_int8_model_takes_float_nhwc_input(tiny_build: CliBuild) -> None:
    meta = _mapping(tiny_build.out, "model.tflite", tiny_build.model_dir)
    (inp,) = meta["inputs"]
    assert (inp["perm"], inp["shape"], inp["dtype"], inp["quantization"]) == (
        [0, 2, 3, 1],
        [1, 8, 8, 3],
        "float32",
        None,
    )
    assert meta["outputs"][0]["dtype"] == "float32"


def test_model_json_tells_an_app_how_to_feed_int8_io(onnx_int8_build: ApiBuild) -> None:
    mj = json.loads((onnx_int8_build.out / "model.json").read_text(encoding="utf-8"))
    assert mj["io_dtype"] == "int8"
    (inp,) = mj["inputs"]
    assert (inp["dtype"], inp["layout"], inp["shape"]) == ("int8", "NHWC", [1, 8, 8, 3])
    assert inp["quantization"]["scale"][0] > 0
    assert mj["outputs"][0]["dtype"] == "int8" and mj["outputs"][0]["quantization"]["scale"][0] > 0


def test_io_mapping_refuses_shapes_that_do_not_correspond(onnx_int8_build: ApiBuild) -> None:
    spec = load_model_spec(onnx_int8_build.model_dir)
    with pytest.raises(ModelError, match="does not correspond to ONNX shape"):
        io_mapping(onnx_int8_build.keep / "model.int8.tflite", spec.inputs, [OUTPUT], {OUTPUT: [1, 5]})
    with pytest.raises(ModelError, match="the .tflite has 1 outputs, the ONNX model 2"):
        io_mapping(
            onnx_int8_build.keep / "model.int8.tflite",
            spec.inputs,
            [OUTPUT, "extra"],
            {OUTPUT: [1, NUM_CLASSES], "extra": [1]},
        )


def test_network_is_blocked_while_converting_and_restored_after() -> None:
    from edgeq.stages._convert_child import NetworkBlocked, _no_network

    connect = socket.socket.connect
    with _no_network():
        with pytest.raises(NetworkBlocked, match="edgeq runs offline"):
            socket.create_connection(("127.0.0.1", 9))
        with socket.socket() as s, pytest.raises(NetworkBlocked):
            s.connect(("127.0.0.1", 9))
    assert socket.socket.connect is connect


def test_int8_tflite_agrees_with_the_float_model(onnx_int8_build: ApiBuild) -> None:
    report = onnx_int8_build.outcome.report
    entry = report["artifacts"]["tflite_int8"]["runtimes"]["litert"]
    assert entry["task"]["top1_agreement"] == 1.0
    assert entry["outputs"][OUTPUT]["cosine"] > 0.99
    assert np.isfinite(entry["outputs"][OUTPUT]["sqnr_db"])
