"""--target mcu: full-integer int8 with int8 I/O, validated on the TFLite Micro interpreter, its arena
measured and gated, the model as a C array; an op TFLite Micro cannot run is exit 2 naming it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import CliBuild, invoke_cli
from tflite_models import fc_model

from edgeq.artifacts import Artifact
from edgeq.errors import ModelError


@pytest.fixture(scope="module")
def mcu_build(tiny_build: CliBuild, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("mcu") / "bundle"
    result = invoke_cli(["build", str(tiny_build.model_dir), "--target", "mcu", "--out", str(out)])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return {"out": out, "report": json.loads((out / "report.json").read_text(encoding="utf-8")),
            "model": json.loads((out / "model.json").read_text(encoding="utf-8"))}


def test_tflm_runs_the_int8_model_and_its_arena_is_gated(mcu_build: dict[str, Any]) -> None:
    report = mcu_build["report"]
    art = report["artifacts"]["tflite_int8"]
    assert list(art["runtimes"]) == ["litert", "litert-ref", "tflm"]
    tflm = art["runtimes"]["tflm"]
    arena = tflm["describe"]["arena_bytes"]
    assert 0 < arena < 262_144 and tflm["describe"]["kernels"] == "TFLite Micro reference kernels"
    gate = next(g for g in report["gates"] if g["name"] == "arena_bytes")
    assert (gate["runtime"], gate["value"], gate["limit"], gate["passed"]) == ("tflm", arena, 262_144, True)
    assert [g["runtime"] for g in report["gates"] if g["name"] == "arena_bytes"] == ["tflm"]  # only where measured
    assert art["parity"]["tflm"]["top1_agreement"] == 1.0  # TFLM's reference kernels agree with LiteRT's
    assert report["target"]["io_dtype"] == "int8" and mcu_build["model"]["inputs"][0]["dtype"] == "int8"


def test_the_bundle_holds_the_model_as_an_aligned_c_array(mcu_build: dict[str, Any]) -> None:
    out, model = mcu_build["out"], mcu_build["model"]
    assert model["c_array"]["arena_bytes"] == mcu_build["report"]["artifacts"]["tflite_int8"]["runtimes"]["tflm"][
        "describe"]["arena_bytes"]
    source = (out / "model_data.cc").read_text(encoding="utf-8")
    header = (out / "model_data.h").read_text(encoding="utf-8")
    assert "alignas(16) const unsigned char g_model[] = {" in source
    values = bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", source))
    assert values == (out / "model.tflite").read_bytes()
    assert f"const size_t g_model_len = {len(values)};" in source
    assert f"constexpr size_t kTensorArenaSize = {model['c_array']['arena_bytes']};" in header
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert {"model_data.cc", "model_data.h"} <= {f["path"] for f in manifest["files"]}


def test_an_arena_over_budget_fails_its_gate(tiny_build: CliBuild, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = invoke_cli(["build", str(tiny_build.model_dir), "--target", "mcu", "--out", str(out), "--gate",
                         "arena_bytes=1024", "-r", "tflm"])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    gate = next(g for g in json.loads((out / "report.json").read_text())["gates"] if g["name"] == "arena_bytes")
    assert not gate["passed"] and gate["value"] > 1024 and "FAIL arena_bytes on tflm" in result.stdout


def test_a_model_tflm_cannot_prepare_is_named(tmp_path: Path) -> None:
    """A hybrid (int4 weights, float activations) FULLY_CONNECTED: TFLite Micro has no kernel for it."""
    from edgeq.precisions import precision
    from edgeq.rungs import make_rung
    from edgeq.runtimes.tflm import TFLiteMicro

    path = tmp_path / "int4.tflite"
    path.write_bytes(make_rung(fc_model(), "serving_default", precision("int4")))
    with pytest.raises(ModelError, match=r"TFLite Micro cannot run int4.tflite: FULLY_CONNECTED cannot be prepared"):
        TFLiteMicro().load(Artifact("tflite_int4", path, "tflite", "int4", {"signature": "serving_default"}))


def test_tflm_matches_litert_reference_kernels_on_a_float_model(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgeq.runtimes.tflm import TFLiteMicro

    path = tmp_path / "float.tflite"
    path.write_bytes(fc_model())
    meta = {"signature": "serving_default", "inputs": [{"name": "x", "tflite_name": "x", "perm": [0, 1],
                                                         "dtype": "float32", "quantization": None}],
            "outputs": [{"name": "y", "tflite_name": "y", "perm": [0, 1], "dtype": "float32", "quantization": None}]}
    engine = TFLiteMicro()
    engine.load(Artifact("tflite_float32", path, "tflite", "float32", meta))
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    ref = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    ref.allocate_tensors()
    want = ref.get_signature_runner("serving_default")(x=x)["y"]
    np.testing.assert_allclose(engine.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)
    assert engine.describe()["arena_bytes"] > 0
