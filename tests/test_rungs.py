"""The rungs made from a float32 .tflite (edgeq.rungs): what each stores, that LiteRT runs it with the
float model's signature, and how close it stays; GATHER tables stored at the rung's weight type."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tflite_models import fc_model

from edgeq.precisions import precision
from edgeq.rungs import MADE_HERE, make_rung, quantized_tables

ROWS = 512  # the lookup table's rows: 32,768 values, above MIN_TABLE


def _run(model: bytes, feeds: dict[str, np.ndarray], reference: bool = False) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    interp = Interpreter(model_content=model, num_threads=1, experimental_op_resolver_type=kind)
    interp.allocate_tensors()
    return dict(interp.get_signature_runner("serving_default")(**feeds))


def _tensors(model: bytes) -> dict[str, Any]:
    """name -> (type name, has data, quantization) of every tensor of the first subgraph."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    types = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    out = {}
    for t in m.subgraphs[0].tensors:
        name = t.name.decode() if isinstance(t.name, bytes) else t.name
        out[name] = (types[t.type], m.buffers[t.buffer].data is not None, t.quantization)
    return out


def _sqnr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(10 * np.log10((a * a).sum() / max(((a - b) ** 2).sum(), 1e-30)))


@pytest.fixture(scope="module")
def model() -> tuple[bytes, list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 64)).astype(np.float32),
              "ids": rng.integers(0, ROWS, 4).astype(np.int32)} for _ in range(8)]
    return fc_model(table_rows=ROWS), feeds


@pytest.mark.parametrize("alias", MADE_HERE)
def test_each_rung_runs_with_the_float_signature_and_stays_close(model: tuple[bytes, Any], alias: str) -> None:
    float_model, feeds = model
    made = make_rung(float_model, "serving_default", precision(alias), feeds)
    assert len(made) < 0.6 * len(float_model)
    want, got = _run(float_model, feeds[0]), _run(made, feeds[0])
    assert set(got) == {"y", "e"} and all(got[k].dtype == np.float32 and got[k].shape == want[k].shape for k in got)
    floor = {"fp16": 50.0, "dynamic-int8": 25.0, "int16x8": 25.0, "int4": 8.0}[alias]
    assert _sqnr(want["y"], got["y"]) > floor and _sqnr(want["e"], got["e"]) > floor


def test_what_each_rung_stores(model: tuple[bytes, Any]) -> None:
    float_model, feeds = model
    stored = {alias: _tensors(make_rung(float_model, "serving_default", precision(alias), feeds)) for alias in MADE_HERE}
    kinds = {alias: {kind for kind, has_data, _ in t.values() if has_data} for alias, t in stored.items()}
    assert "FLOAT16" in kinds["fp16"] and "INT8" not in kinds["fp16"]
    assert "INT8" in kinds["dynamic-int8"] and "INT4" not in kinds["dynamic-int8"]
    assert "INT4" in kinds["int4"]
    int16 = {kind for kind, has_data, _ in stored["int16x8"].values() if not has_data}
    assert "INT16" in int16  # 16-bit activations
    blockwise = [q for kind, _, q in stored["int4"].values() if kind == "INT4" and q is not None and q.details is not None]
    assert blockwise and all(q.details.blockSize == 32 for q in blockwise)  # the FULLY_CONNECTED weights
    assert stored["int16x8"]["table"][:2] == ("INT16", True)  # litert-quantizer's static GATHER: a 16-bit table
    for alias, dtype in (("fp16", "FLOAT16"), ("dynamic-int8", "INT8"), ("int4", "INT4")):
        assert stored[alias]["table"][1] is False  # the float32 table's bytes are gone ...
        assert stored[alias][f"table_{dtype.lower()}"][0] == dtype  # ... into its twin at the rung's type


@pytest.mark.parametrize(("dtype", "bits"), [("int8", 8), ("int4", 4)])
def test_a_quantized_table_looks_up_its_dequantized_rows(model: tuple[bytes, Any], dtype: str, bits: int) -> None:
    float_model, feeds = model
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=float_model)
    table = next(interp.get_tensor(d["index"]) for d in interp.get_tensor_details() if d["name"] == "table")
    qmax = 2 ** (bits - 1) - 1
    scale = np.abs(table).max(axis=1, keepdims=True) / qmax
    expected = np.clip(np.round(table / scale), -qmax - 1, qmax) * scale  # symmetric, one scale per row
    made = quantized_tables(float_model, dtype)
    assert len(made) < len(float_model) - ROWS * 64 * 4 * (1 - bits / 32) + ROWS * 12 + 1024  # a scale, a zero point a row
    for reference in (False, True):
        got = _run(made, feeds[0], reference)["e"]
        np.testing.assert_allclose(got, expected[feeds[0]["ids"]], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_run(made, feeds[0])["y"], _run(float_model, feeds[0])["y"])  # the rest untouched


def test_small_tables_and_models_without_gather_are_left_as_they_are(model: tuple[bytes, Any]) -> None:
    float_model, _ = model
    assert quantized_tables(float_model, "int4", min_values=ROWS * 64 + 1) == float_model
    plain = fc_model()
    assert quantized_tables(plain, "int4") == plain


def test_int16x8_needs_calibration_samples_and_fp32_is_not_made_here(model: tuple[bytes, Any]) -> None:
    float_model, _ = model
    with pytest.raises(ValueError, match="calibration samples"):
        make_rung(float_model, "serving_default", precision("int16x8"))
    with pytest.raises(ValueError, match="not made from the float32"):
        make_rung(float_model, "serving_default", precision("int8"))
