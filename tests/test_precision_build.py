"""--precision: every rung built, validated on the runtimes that can run it and packaged; `auto` ships
the smallest rung that passes every gate, `all` reports the whole ladder; the choices and refusals."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke_cli, make_model_dir, snapshot

from edgeq.config import load_model_spec, load_target
from edgeq.errors import ConfigError
from edgeq.gates import GateLimit, evaluate
from edgeq.precisions import PRECISIONS

HOST = ["-r", "litert", "-r", "litert-ref"]


def _outcome(out: Path, result: Any) -> dict[str, Any]:
    assert result.exit_code in (0, 1), (result.exit_code, result.stdout, result.stderr, result.exception)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    model = json.loads((out / "model.json").read_text(encoding="utf-8"))
    return {"exit": result.exit_code, "report": report, "model": model, "md": (out / "report.md").read_text(encoding="utf-8"),
            "stdout": result.stdout, "out": out}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("precision"))


@pytest.fixture(scope="module")
def ladder_all(model_dir: Path) -> dict[str, Any]:
    out = model_dir.parent / "dist" / "all"
    return _outcome(out, invoke_cli(["build", str(model_dir), "--out", str(out), "--precision", "all", *HOST]))


@pytest.fixture(scope="module")
def ladder_auto(model_dir: Path) -> dict[str, Any]:
    """auto with an output_cosine limit the smallest rungs miss, and no --out: the default names the rung shipped."""
    cwd = os.getcwd()
    os.chdir(model_dir.parent)
    try:
        result = invoke_cli(["build", str(model_dir), "--precision", "auto", "--gate", "output_cosine=0.99999", *HOST])
    finally:
        os.chdir(cwd)
    made = sorted((model_dir.parent / "dist").glob("tiny-android-*"))
    assert len(made) == 1, made
    return _outcome(made[0], result)


def test_all_validates_every_rung_and_ships_the_targets_default(ladder_all: dict[str, Any]) -> None:
    rows = ladder_all["report"]["ladder"]
    assert {r["rung"] for r in rows} == {p.alias for p in PRECISIONS}
    assert [r["bytes"] for r in rows] == sorted(r["bytes"] for r in rows)  # smallest file first
    assert [r["rung"] for r in rows if r["shipped"]] == ["int8"] == [ladder_all["model"]["precision"]]
    fp32 = next(r for r in rows if r["rung"] == "fp32")
    assert fp32["ratio_to_fp32"] == 1.0 and fp32["latency_ratio_to_fp32"] == 1.0
    for r in rows:
        assert not r.get("error"), r
        assert r["metric"] == "top1_accuracy" and r["value"] is not None and r["drop"] is not None
        assert r["host_latency_ms"] > 0 and r["min_sqnr_db"] is not None and r["gates"] >= 4
        assert set(r["kernels"]) == ({"litert"} if r["rung"] == "int4" else {"litert", "litert-ref"})
    int4 = next(r for r in rows if r["rung"] == "int4")
    assert "reference kernels" in int4["not_run"]["litert-ref"]
    md = ladder_all["md"]
    assert "## Precision ladder" in md and "dynamic_wi4_afp32_block32" in md
    assert "ladder int4:" in ladder_all["stdout"]


def test_integer_gate_applies_to_full_integer_rungs_only(ladder_all: dict[str, Any]) -> None:
    rows = {r["rung"]: r for r in ladder_all["report"]["ladder"]}
    gates = {g["name"] for g in ladder_all["report"]["gates"]}
    assert "int8_compute_ops" in gates  # int8 ships
    assert rows["int8"]["gates"] - rows["fp32"]["gates"] == 1  # int8_compute_ops, once per artifact
    assert rows["int16x8"]["gates"] == rows["int8"]["gates"]


def test_auto_ships_the_smallest_rung_that_passes(ladder_auto: dict[str, Any]) -> None:
    rows = ladder_auto["report"]["ladder"]
    shipped = [r for r in rows if r["shipped"]]
    assert len(shipped) == 1 and shipped[0]["passed"] and shipped[0] is rows[-1]  # auto stops there
    assert rows[:-1] and not any(r["passed"] for r in rows[:-1])  # every smaller rung failed a gate
    assert all(any(f.startswith("output_cosine") for f in r["failed"]) for r in rows[:-1])
    assert [r["bytes"] for r in rows] == sorted(r["bytes"] for r in rows)
    rung = shipped[0]["rung"]
    assert ladder_auto["model"]["precision"] == rung and ladder_auto["report"]["precision"]["rung"] == rung
    assert ladder_auto["out"].name == f"tiny-android-{rung}"
    assert ladder_auto["exit"] == 0


def test_a_rung_ships_with_its_name_and_runs_where_its_kernels_do(model_dir: Path) -> None:
    """int4 on the host, its reference kernels (which compute it wrong: not run, said why) and the aarch64
    LiteRT under qemu: the bundle's file is the int4 model, model.json names the rung."""
    out = model_dir.parent / "dist" / "int4"
    junit, summary = model_dir.parent / "junit.xml", model_dir.parent / "summary.md"
    got = _outcome(out, invoke_cli(["build", str(model_dir), "--out", str(out), "--precision", "int4", *HOST,
                                    "-r", "litert-arm64:cortex-a53", "--junit", str(junit), "--summary", str(summary)]))
    report, model = got["report"], got["model"]
    assert model["precision"] == "int4" and model["precision_name"] == "dynamic_wi4_afp32_block32"
    art = report["artifacts"]["tflite_int4"]
    assert set(art["runtimes"]) == {"litert", "litert-arm64:cortex-a53"} and set(art["not_run"]) == {"litert-ref"}
    assert art["bytes"] == (out / "model.tflite").stat().st_size and report["shipped"] == "tflite_int4"
    assert "int8_compute_ops" not in {g["name"] for g in report["gates"]}
    assert {g["runtime"] for g in report["gates"] if g["name"] == "output_cosine"} == {"litert", "litert-arm64:cortex-a53"}
    assert report["ladder"] == [] and "tflite_int8" not in report["artifacts"]
    assert "litert-ref: not run" in got["md"] and "did not run it" in got["stdout"]
    from junitparser import JUnitXml

    cases = [c for suite in JUnitXml.fromfile(str(junit)) for c in suite]
    assert len(cases) == len(report["gates"]) + len({g["name"] for g in report["gates"] if g["runtime"]})  # + skipped
    assert {c.name for c in cases if not c.is_passed and not c.is_skipped} == \
        {f"{g['name']} on {g['runtime']}" if g["runtime"] else g["name"] for g in report["gates"] if not g["passed"]}
    assert summary.read_text(encoding="utf-8").startswith("### edgeq: tiny for android, int4 - ")


def _refused(model_dir: Path, tmp_path: Path, fragment: str, *args: str) -> None:
    out = tmp_path / "dist" / "x"
    result = invoke_cli(["build", str(model_dir), "--out", str(out), *args])
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert not (tmp_path / "dist").exists()


@pytest.mark.parametrize(("args", "fragment"), [
    (["--precision", "int3"], "unknown precision 'int3'; choose one of: fp32, fp16"),
    (["--precision", "\x1b[2Jbf16"], "unknown precision '\\x1b[2Jbf16'"),
    (["--precision", "fp16", "--io-dtype", "int8"], "int8 inputs and outputs come with the int8 precision only"),
    (["--precision", "auto", "--io-dtype", "int8"], "int8 inputs and outputs come with the int8 precision only"),
    (["--precision", "int4", "-r", "litert-ref"], "no runtime of the target runs precision 'int4'"),
])
def test_refused_precisions(model_dir: Path, tmp_path: Path, args: list[str], fragment: str) -> None:
    _refused(model_dir, tmp_path, fragment, *args)


def test_a_rung_no_runtime_can_run_is_not_shipped_on_its_size(model_dir: Path, tmp_path: Path) -> None:
    """-r litert-ref runs no int4: the ladder lists int4 as not validated, auto ships a rung that ran."""
    out = tmp_path / "dist" / "ref"
    got = _outcome(out, invoke_cli(["build", str(model_dir), "--out", str(out), "--precision", "auto", "-r", "litert-ref"]))
    int4 = next(r for r in got["report"]["ladder"] if r["rung"] == "int4")
    assert not int4["passed"] and "no runtime of the target runs it" in int4["error"]
    assert got["model"]["precision"] != "int4" and got["report"]["artifacts"][got["report"]["shipped"]]["runtimes"]


def test_out_names_the_rung_where_it_says_so(model_dir: Path, tmp_path: Path) -> None:
    from edgeq.build import BuildOptions, build

    with pytest.raises(ConfigError, match="may stand in the bundle folder's own name only"):
        build(BuildOptions(model_dir, "android", tmp_path / "{precision}" / "x", runtimes=("litert",)))
    assert list(tmp_path.iterdir()) == []


def test_edgeq_toml_names_the_precision(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, target={"precision": "fp16"})
    assert load_model_spec(root).precision == "fp16"
    bad = make_model_dir(tmp_path, dirname="bad", target={"precision": "q4_k_m"})
    before = snapshot(bad)
    _refused(bad, tmp_path, "precision", "-r", "litert")
    assert snapshot(bad) == before


def test_a_target_says_which_rungs_it_ships() -> None:
    android = load_target("android")
    assert android.precision == "int8" and set(android.precisions) == {p.alias for p in PRECISIONS}
    assert android.with_precision("static_wi8_ai16").precision == "int16x8"  # the full name is taken too
    assert android.with_precision(None) is android
    narrow = replace(android, precisions=("int8", "fp16"))
    with pytest.raises(ConfigError, match="does not ship precision 'int4'; choose one of: int8, fp16, auto, all"):
        narrow.with_precision("int4")
    with pytest.raises(ConfigError, match="precision 'int4' is not among its precisions"):
        replace(android, precisions=("int8",), precision="int4")


def test_the_integer_gate_skips_a_rung_that_computes_in_float() -> None:
    shipped = {"bytes": 10, "inspection": {"g": {"compute_ops": 4, "int8_compute_ops": 0}}, "runtimes": {}}
    limits = [GateLimit("int8_compute_ops", 1.0, "target"), GateLimit("model_bytes", 100, "target")]
    names = [g["name"] for g in evaluate(limits, "classification", {}, {**shipped, "full_integer": False}, "tflite_fp16")]
    assert names == ["model_bytes"]
    failed = evaluate(limits, "classification", {}, {**shipped, "full_integer": True}, "tflite_int8")
    assert [(g["name"], g["passed"]) for g in failed] == [("int8_compute_ops", False), ("model_bytes", True)]
