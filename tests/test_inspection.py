"""`edgeq inspect FILE` (edgeq.inspection): a model file's weights per dtype and at every precision rung,
on small files each library writes at test time (GGUF, safetensors, ONNX, .tflite, an edgeq bundle)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import invoke_cli
from tflite_models import fc_model

from edgeq import inspection
from edgeq.errors import ConfigError
from edgeq.inspection import inspect_path, inspection_lines
from edgeq.precisions import PRECISIONS


def _lines(info: dict[str, Any]) -> list[str]:
    lines = inspection_lines(info)
    assert all(len(line) <= 100 for line in lines), [line for line in lines if len(line) > 100]
    assert all("\n" not in line and "\x1b" not in line for line in lines)
    return lines


def _tensor(info: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in info["tensors"] if t["name"] == name)


# --------------------------------------------------------------------------------------------
# GGUF


def test_gguf_tensor_types_and_file_type_are_decoded(tmp_path: Path) -> None:
    import gguf
    from gguf.quants import quantize

    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny\x1b[2J")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    w.add_tensor("a.f32", rng.standard_normal((4, 64)).astype(np.float32))
    w.add_tensor("b.f16", rng.standard_normal((4, 64)).astype(np.float16))
    for qt in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0):
        w.add_tensor(f"c.{qt.name}", quantize(rng.standard_normal((8, 64)).astype(np.float32), qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    info = inspect_path(path)
    assert info["format"] == "gguf" and info["file"] == "tiny.gguf" and info["bytes"] == path.stat().st_size
    assert info["params"] == 4 * 64 * 2 + 8 * 64 * 2
    bits = {t["name"]: t["bits_per_weight"] for t in info["tensors"]}
    assert bits == {"a.f32": 32, "b.f16": 16, "c.Q8_0": 8.5, "c.Q4_0": 4.5}
    q4 = _tensor(info, "c.Q4_0")
    assert q4["shape"] == [8, 64] and q4["block_size"] == 32 and q4["bytes"] == 8 * 64 // 32 * 18
    assert q4["scale_bytes"] == 8 * 64 // 32 * 2  # one float16 scale per 32 weights
    assert "block_size" not in _tensor(info, "a.f32")
    assert info["by_dtype"]["Q8_0"] == {"tensors": 1, "params": 512, "bytes": 544}
    weight_bytes = 1024 + 512 + 544 + 288
    assert info["weight_bytes"] == weight_bytes == info["load_bytes"]
    assert info["file_type"] == {"code": 2, "name": "Q4_0", "bits_per_weight": round(weight_bytes * 8 / 1536, 4)}
    assert info["architecture"] == "llama" and info["name"] == "tiny\x1b[2J"
    assert [r["alias"] for r in info["ladder"]] == [p.alias for p in PRECISIONS]
    int4 = info["ladder"][-1]
    assert int4["bytes"] == 1536 * 4.5 / 8 and int4["scale_bytes"] == 1536 / 32 * 2
    assert int4["ratio"] == pytest.approx(int4["bytes"] / weight_bytes)
    assert "ops_by_dtype" not in info

    lines = _lines(info)
    assert "file type Q4_0 (general.file_type 2)" in lines[2] and lines[3] == "  architecture 'llama', name 'tiny\\x1b[2J'"
    row = next(line for line in lines if line.strip().startswith("c.Q4_0"))
    assert row.split()[1:] == ["Q4_0", "8x64", "4.5", "32"]
    json.dumps(info)


# --------------------------------------------------------------------------------------------
# safetensors


def test_safetensors_params_and_bytes_by_dtype(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "w.safetensors"
    save_file({"fc.weight": np.zeros((16, 8), np.float32), "fc.bias": np.zeros(16, np.float32),
               "emb\x1b[31m\nname": np.zeros((10, 4), np.float16)}, str(path))
    info = inspect_path(path)
    assert info["format"] == "safetensors" and info["params"] == 128 + 16 + 40
    assert info["by_dtype"] == {"float32": {"tensors": 2, "params": 144, "bytes": 576},
                                "float16": {"tensors": 1, "params": 40, "bytes": 80}}
    assert [t["name"] for t in info["tensors"]] == ["fc.weight", "emb\x1b[31m\nname", "fc.bias"]  # largest first
    lines = _lines(info)
    assert any("emb\\x1b[31m\\nname" in line for line in lines)


def test_the_tensor_list_is_capped_and_says_how_many_were_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "many.safetensors"
    save_file({f"t{i}": np.zeros(i + 1, np.float32) for i in range(15)}, str(path))
    monkeypatch.setattr(inspection, "MAX_TENSORS", 12)
    info = inspect_path(path)
    assert len(info["tensors"]) == 12 and info["tensors_left_out"] == 3 and info["params"] == sum(range(1, 16))
    assert info["tensors"][0]["name"] == "t14"
    assert _lines(info)[-1] == "  ... and 5 more"  # 10 shown of 15


# --------------------------------------------------------------------------------------------
# ONNX


def _onnx_model(path: Path, qdq: bool = False) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "W"),
             numpy_helper.from_array(np.ones(4, np.float16), "B16")]
    nodes = [helper.make_node("Cast", ["B16"], ["B"], to=TensorProto.FLOAT)]
    if qdq:  # W as an int8 weight with per-channel scales, dequantized in the graph
        inits[0] = numpy_helper.from_array(rng.integers(-127, 127, (4, 8)).astype(np.int8), "Wq")
        inits += [numpy_helper.from_array(np.full(4, 0.1, np.float32), "Ws"),
                  numpy_helper.from_array(np.zeros(4, np.int8), "Wz")]
        nodes.insert(0, helper.make_node("DequantizeLinear", ["Wq", "Ws", "Wz"], ["W"], axis=0))
        inits += [numpy_helper.from_array(np.float32(0.05), "Xs"), numpy_helper.from_array(np.int8(0), "Xz")]
        nodes += [helper.make_node("QuantizeLinear", ["X", "Xs", "Xz"], ["Xq"]),  # and X as an int8 activation
                  helper.make_node("DequantizeLinear", ["Xq", "Xs", "Xz"], ["Xd"])]
    nodes.append(helper.make_node("Gemm", ["Xd" if qdq else "X", "W", "B"], ["Y"], transB=1))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_onnx_initializers_and_ops_by_dtype(tmp_path: Path) -> None:
    info = inspect_path(_onnx_model(tmp_path / "gemm.onnx"))
    assert info["format"] == "onnx" and info["params"] == 36
    assert info["by_dtype"] == {"float32": {"tensors": 1, "params": 32, "bytes": 128},
                                "float16": {"tensors": 1, "params": 4, "bytes": 8}}
    assert info["ops_by_dtype"] == {"float16": {"Cast": 1}, "float32": {"Gemm": 1}}
    assert _tensor(info, "W")["shape"] == [4, 8]
    assert any(line.strip() == "float32: Gemm(1)" for line in _lines(info))


def test_onnx_qdq_weight_carries_its_scales(tmp_path: Path) -> None:
    info = inspect_path(_onnx_model(tmp_path / "qdq.onnx", qdq=True))
    w = _tensor(info, "Wq")
    assert w["dtype"] == "int8" and w["scales"] == 4 and w["quantized_dimension"] == 0
    assert w["bytes"] == 32 + 4 * 4 + 4 and w["scale_bytes"] == 20 and w["bits_per_weight"] == 13.0
    assert "Ws" not in [t["name"] for t in info["tensors"]] and info["params"] == 36 + 2  # and X's scale, zero point
    assert info["ops_by_dtype"]["int8 (QDQ)"] == {"Gemm": 1}
    assert info["ops_by_dtype"]["int8 -> float32"] == {"DequantizeLinear": 2}
    assert info["ops_by_dtype"]["float32 -> int8"] == {"QuantizeLinear": 1}


# --------------------------------------------------------------------------------------------
# .tflite: a float32 model written with LiteRT's flatbuffer schema (no TensorFlow), then quantized


@pytest.fixture(scope="module")
def float_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tflite") / "float32.tflite"
    path.write_bytes(fc_model())
    return path


@pytest.fixture(scope="module")
def int4_tflite(float_tflite: Path) -> Path:
    """The float model quantized by litert-quantizer's dynamic_wi4b32_afp32 recipe (int4 weights in blocks of 32)."""
    from litert_quantizer import Quantizer, recipe

    q = Quantizer(bytearray(float_tflite.read_bytes()), recipe.dynamic_wi4b32_afp32())
    path = float_tflite.with_name("int4.tflite")
    path.write_bytes(bytes(q.quantize().quantized_model))
    return path


def test_float32_tflite(float_tflite: Path) -> None:
    info = inspect_path(float_tflite)
    assert info["format"] == "tflite" and info["params"] == 64 * 64 + 64 + 16 * 64
    assert info["by_dtype"] == {"float32": {"tensors": 3, "params": 5184, "bytes": 5184 * 4}}
    assert info["ops_by_dtype"] == {"float32 weights, float32 activations": {"FULLY_CONNECTED": 2}}
    assert info["ladder"][0]["ratio"] == 1.0 and info["load_bytes"] == 5184 * 4 and not info["notes"]


def test_blockwise_int4_tflite_reports_its_block_size_and_scales(int4_tflite: Path) -> None:
    info = inspect_path(int4_tflite)
    w1 = _tensor(info, "w1")
    # two int4 weights a byte, and one float16 scale (a separate constant tensor) per 32 weights
    assert w1["dtype"] == "int4" and w1["block_size"] == 32 and w1["scale_dtype"] == "float16"
    assert w1["scales"] == 64 * 64 // 32 and w1["scale_bytes"] == 64 * 64 // 32 * 2
    assert w1["bytes"] == 64 * 64 // 2 + w1["scale_bytes"] and w1["bits_per_weight"] == 4.5
    assert not any(t["name"].endswith("_scales") for t in info["tensors"])  # counted with their weights
    assert info["params"] == 5184 and info["by_dtype"]["int4"]["params"] == 5120
    assert info["ops_by_dtype"] == {"int4 weights, float32 activations": {"FULLY_CONNECTED": 2}}
    lines = _lines(info)
    row = next(line for line in lines if line.strip().startswith("w1 "))
    assert row.split()[1:] == ["int4", "64x64", "4.5", "32"]


def test_float16_weights_are_loaded_as_float32(tmp_path: Path) -> None:
    path = tmp_path / "f16.tflite"
    path.write_bytes(fc_model(f16=True))
    info = inspect_path(path)
    assert info["by_dtype"]["float16"] == {"tensors": 1, "params": 4096, "bytes": 8192}
    assert info["load_bytes"] == info["weight_bytes"] + 8192  # w1 as float32 after LiteRT's DEQUANTIZE at load
    assert "DEQUANTIZE" in info["notes"][0]
    assert info["ops_by_dtype"]["float16 weights dequantized at load, float32 activations"] == {"FULLY_CONNECTED": 1}
    assert info["ops_by_dtype"]["float16 -> float32"] == {"DEQUANTIZE": 1}


def test_bundle_and_its_int8_tflite(bundle: Path) -> None:
    tflite = inspect_path(bundle / "model.tflite")
    assert set(tflite["by_dtype"]) == {"int8", "int32"}
    assert tflite["ops_by_dtype"]["int8 weights, int8 activations"]["CONV_2D"] == 2
    conv = next(t for t in tflite["tensors"] if t["dtype"] == "int8" and len(t["shape"]) == 4)
    assert conv["scales"] == conv["shape"][0] and conv["quantized_dimension"] == 0  # per output channel
    assert conv["scale_bytes"] == 12 * conv["scales"]  # a float32 scale and an int64 zero point each
    info = inspect_path(bundle)
    assert info["format"] == "edgeq bundle" and info["file"] == bundle.name
    assert info["files"] == [{"file": "model.tflite", "bytes": tflite["bytes"], "params": tflite["params"]}]
    assert info["params"] == tflite["params"] and info["by_dtype"] == tflite["by_dtype"]
    assert info["ops_by_dtype"] == tflite["ops_by_dtype"]
    assert all(t["name"].startswith("model.tflite:") for t in info["tensors"])
    _lines(info)


# --------------------------------------------------------------------------------------------
# refusals: one line each, naming the problem and the fix


def _refused(path: Path, *words: str) -> str:
    with pytest.raises(ConfigError) as e:
        inspect_path(path)
    message = str(e.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


def test_missing_unknown_and_pickle_files_are_refused(tmp_path: Path) -> None:
    _refused(tmp_path / "nope.gguf", "does not exist", ".safetensors")
    (tmp_path / "notes.txt").write_text("hi")
    _refused(tmp_path / "notes.txt", "not a model file", ".gguf")
    (tmp_path / "model.pt").write_bytes(b"\x80\x04not really a pickle")
    _refused(tmp_path / "model.pt", "pickle", "safetensors")
    (tmp_path / "folder").mkdir()
    _refused(tmp_path / "folder", "without model.json")


@pytest.mark.parametrize(("suffix", "data", "words"), [
    (".safetensors", b"\x10\x00\x00", ("truncated", "8-byte")),
    (".safetensors", struct.pack("<Q", 1000) + b"{}", ("claims 1,000 bytes", "more than the file holds")),
    (".safetensors", struct.pack("<Q", 200 << 20) + b"{}", ("over the 100 MB limit",)),
    (".safetensors", struct.pack("<Q", 4) + b"[1]]", ("not a readable safetensors file",)),
    (".safetensors", struct.pack("<Q", 2) + b"\xff\xfe", ("not a readable safetensors file",)),
    (".gguf", b"GGUF" + b"\xff" * 60, ("not a readable gguf file",)),
    (".gguf", b"not a gguf file at all", ("not a readable gguf file",)),
    (".tflite", b"", ("not a readable tflite file",)),
    (".tflite", b"\x10\x00\x00\x00TFL3" + b"\xff" * 24, ("not a readable tflite file",)),
    (".onnx", b"\xff\xff\xff garbage", ("not a readable onnx file",)),
])
def test_damaged_files_are_refused(tmp_path: Path, suffix: str, data: bytes, words: tuple[str, ...]) -> None:
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(data)
    _refused(path, *words)


def test_a_truncated_file_is_refused(int4_tflite: Path, tmp_path: Path) -> None:
    path = tmp_path / "half.tflite"
    path.write_bytes(int4_tflite.read_bytes()[: int4_tflite.stat().st_size // 2])
    _refused(path, "not a readable tflite file")


# --------------------------------------------------------------------------------------------
# the command line


def test_cli_inspect_file(int4_tflite: Path) -> None:
    r = invoke_cli(["inspect", str(int4_tflite)])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("int4.tflite: tflite,") and "int4 weights, float32 activations" in r.stdout
    data = json.loads(invoke_cli(["inspect", str(int4_tflite), "--json"]).stdout)
    assert data["params"] == 5184 and data["format"] == "tflite"


@pytest.mark.parametrize("args", [["inspect"], ["inspect", "model.gguf", "--params", "7e9"]])
def test_cli_inspect_needs_a_file_or_params(args: list[str]) -> None:
    r = invoke_cli(args)
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert "pass a model FILE or --params N" in r.stderr


def test_cli_inspect_refuses_a_bad_file_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "w.safetensors").write_bytes(struct.pack("<Q", 1 << 40))
    r = invoke_cli(["inspect", str(tmp_path / "w.safetensors")])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and "header claims" in r.stderr
