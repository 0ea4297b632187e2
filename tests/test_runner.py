"""edgeq.runner and the stage table: order, contracts, and which stage failed after which."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from conftest import make_context, make_model_dir

from edgeq.artifacts import Artifact
from edgeq.errors import ModelError, StageError
from edgeq.results import (
    CalibrationResult,
    ConvertResult,
    ExportResult,
    PackageResult,
    PrecisionResult,
    QuantizeResult,
    ValidationResult,
)
from edgeq.runner import run_stages
from edgeq.stages import STAGES, load_stage

NAMES = [name for name, _ in STAGES]

# A stand-in result of each type a stage returns.
FAKE_RESULTS: dict[type, Any] = {
    ExportResult: ExportResult("0" * 64, {}),
    CalibrationResult: CalibrationResult({}),
    QuantizeResult: QuantizeResult({"stage": "quantize"}),
    ConvertResult: ConvertResult("c", "o", "float32", "convert.log", {}, "none"),
    PrecisionResult: PrecisionResult({}),
    ValidationResult: ValidationResult({}, {}, (), True),
    PackageResult: PackageResult({}),
}


def test_stage_table_order_and_contracts() -> None:
    assert NAMES == ["export", "calibrate", "quantize", "convert", "precision", "validate", "package"]
    produced: set[str | type] = set()
    for name, module in STAGES:
        stage = load_stage(name)
        assert stage is importlib.import_module(module).STAGE
        assert stage.name == name
        assert isinstance(stage.requires, tuple) and isinstance(stage.produces, tuple)
        # every artifact and result a stage needs comes from a stage before it; each returns one result
        assert set(stage.requires) <= produced, (name, stage.requires, produced)
        assert len([p for p in stage.produces if isinstance(p, type)]) == 1, name
        produced |= set(stage.produces)


@pytest.fixture
def ctx(tmp_path: Path) -> Any:
    return make_context(make_model_dir(tmp_path), tmp_path / "work")


@pytest.fixture
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace every stage's run with one that adds the artifacts it promises; returns the stages by name."""
    stages = {name: load_stage(name) for name in NAMES}
    for stage in stages.values():

        def run(ctx: Any, stage: Any = stage) -> Any:
            for key in stage.produces:
                if isinstance(key, str):
                    path = ctx.build_dir / key
                    path.write_bytes(b"x")
                    ctx.add(Artifact(key, path, "onnx", "float32"))
            return next(FAKE_RESULTS[p] for p in stage.produces if isinstance(p, type))

        monkeypatch.setattr(stage, "run", run)
    return stages


def test_all_stages_run_in_order_with_events_and_timings(ctx: Any, fake_stages: dict[str, Any]) -> None:
    events: list[tuple[str, int, int, str]] = []
    results = run_stages(ctx, lambda n, k, total, status, s: events.append((n, k, total, status)))
    assert list(results) == NAMES
    assert results["quantize"] == FAKE_RESULTS[QuantizeResult]  # a cacheable stage's result, as JSON gives it back
    assert ctx.result(QuantizeResult) is results["quantize"]  # kept by type for later stages
    assert results["validate"] is FAKE_RESULTS[ValidationResult]
    assert set(ctx.results) == set(FAKE_RESULTS)
    assert events == [e for k, n in enumerate(NAMES, 1) for e in ((n, k, 7, "start"), (n, k, 7, "done"))]
    assert list(ctx.timings) == NAMES and all(t >= 0 for t in ctx.timings.values())
    assert set(ctx.artifacts) == {"onnx_float", "onnx_int8", "saved_model", "tflite_float32", "tflite_int8"}


def test_unexpected_exception_becomes_stage_error_with_context(
    ctx: Any, fake_stages: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(ctx: Any) -> Any:
        raise ValueError("first line\nsecond line")

    monkeypatch.setattr(fake_stages["convert"], "run", boom)
    events: list[tuple[str, str]] = []
    with pytest.raises(StageError) as info:
        run_stages(ctx, lambda n, k, total, status, s: events.append((n, status)))
    err = info.value
    assert (err.stage, err.after) == ("convert", ["export", "calibrate", "quantize"])
    assert str(err) == (
        "stage 'convert' failed (after: export, calibrate, quantize): ValueError: first line "
        "(run with --debug for the traceback)"
    )
    assert isinstance(err.__cause__, ValueError)
    assert events[-1] == ("convert", "failed")
    assert "convert" not in ctx.timings


def test_user_error_in_a_stage_keeps_its_type_and_gains_the_stage_name(
    ctx: Any, fake_stages: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(ctx: Any) -> Any:
        raise ModelError("the model has a loop")

    monkeypatch.setattr(fake_stages["export"], "run", refuse)
    with pytest.raises(ModelError) as info:
        run_stages(ctx)
    assert str(info.value) == "export: the model has a loop"
    assert isinstance(info.value.__cause__, ModelError)


def test_stage_error_from_a_stage_passes_through(
    ctx: Any, fake_stages: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = StageError("inner", [], "why")

    def fail(ctx: Any) -> Any:
        raise original

    monkeypatch.setattr(fake_stages["export"], "run", fail)
    with pytest.raises(StageError) as info:
        run_stages(ctx)
    assert info.value is original


def test_stage_that_does_not_produce_its_artifacts(
    ctx: Any, fake_stages: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_stages["quantize"], "run", lambda ctx: FAKE_RESULTS[QuantizeResult])
    with pytest.raises(
        StageError,
        match=r"stage 'quantize' failed \(after: export, calibrate\): did not produce \['onnx_int8'\]",
    ):
        run_stages(ctx)


def test_stage_that_does_not_return_its_result(
    ctx: Any, fake_stages: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_result(ctx: Any) -> None:
        path = ctx.build_dir / "onnx_float"
        path.write_bytes(b"x")
        ctx.add(Artifact("onnx_float", path, "onnx", "float32"))

    monkeypatch.setattr(fake_stages["export"], "run", no_result)
    with pytest.raises(StageError, match=r"stage 'export' failed \(after: none\): did not produce \['ExportResult'\]"):
        run_stages(ctx)


def test_stage_whose_inputs_are_missing(ctx: Any, fake_stages: dict[str, Any]) -> None:
    with pytest.raises(
        StageError, match=r"stage 'quantize' failed \(after: none\): needs \['onnx_float', 'CalibrationResult'\]"
    ):
        run_stages(ctx, names=["quantize"])


def test_stage_whose_results_are_missing(ctx: Any, fake_stages: dict[str, Any]) -> None:
    """An artifact alone is not enough: package reads the validation (and export ...) results too."""
    run_stages(ctx, names=["export", "calibrate", "quantize", "convert", "precision"])
    with pytest.raises(StageError, match=r"needs \['ValidationResult'\] that no earlier stage produced"):
        run_stages(ctx, names=["package"])


def test_stage_error_message_shape() -> None:
    err = StageError("validate", ["export"], "why")
    assert str(err) == "stage 'validate' failed (after: export): why"
    assert err.reason == "why" and err.exit_code == 2


def test_a_cacheable_stage_is_reused_with_its_files_artifacts_and_result(tmp_path: Path, fake_stages: dict[str, Any]) -> None:
    from edgeq.cache import StageCache

    def context(work: str) -> Any:
        c = make_context(make_model_dir(tmp_path / work), tmp_path / work / "build")
        c.cache, c.cache_base = StageCache(tmp_path / "cache"), "base"
        return c

    first = context("a")
    run_stages(first)
    (first.build_dir / "convert.log").write_text("made by the first build")  # not made by a stage: not kept
    second = context("b")
    events: list[tuple[str, str]] = []
    run_stages(second, lambda n, k, total, status, s: events.append((n, status)))
    assert [n for n, status in events if status == "cached"] == ["export", "quantize", "convert", "precision"]
    assert [n for n, status in events if status == "done"] == ["calibrate", "validate", "package"]
    assert second.result(QuantizeResult) == FAKE_RESULTS[QuantizeResult]
    art = second.artifact("tflite_int8")
    assert art.path == second.build_dir / "tflite_int8" and art.path.read_bytes() == b"x"
    assert not (second.build_dir / "convert.log").exists()
    second.cache_base = "another base"  # what every stage depends on changed: nothing is reused
    events.clear()
    run_stages(second, lambda n, k, total, status, s: events.append((n, status)))
    assert not [n for n, status in events if status == "cached"]
