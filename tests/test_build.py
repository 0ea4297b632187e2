"""edgeq.build: inputs checked before any work, a staging folder, an atomic swap, same inputs, same bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bad_inputs import CONFIG_CASES, DATA_CASES, Mutation
from conftest import (
    ApiBuild,
    CliBuild,
    ProcessBuild,
    RebuildRun,
    StubStages,
    make_fake_bundle,
    make_model_dir,
    snapshot,
    staging_leftovers,
)

from edgeq.build import BuildOptions, BuildOutcome, build
from edgeq.bundle.layout import KEEP_MARKER
from edgeq.bundle.staging import check_out_dir, is_edgeq_bundle
from edgeq.errors import ConfigError, DataError, ModelError, OutputDirError, StageError


def _opts(root: Path, out: Path, **kw: Any) -> BuildOptions:
    return BuildOptions(model_dir=root, target="android", out=out, **kw)


@pytest.mark.parametrize(("mutate", "error", "fragment"), CONFIG_CASES + DATA_CASES)
def test_bad_input_raises_before_any_work(
    tmp_path: Path, stub_stages: StubStages, mutate: Mutation, error: type, fragment: str
) -> None:
    root = make_model_dir(tmp_path)
    mutate(root)
    with pytest.raises(error) as info:
        build(_opts(root, tmp_path / "out"))
    assert fragment in str(info.value)
    assert stub_stages.contexts == []  # no stage was reached
    assert not (tmp_path / "out").exists()
    assert staging_leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("options", "error", "fragment"),
    [
        pytest.param({"target": "ios"}, ConfigError, "unknown target 'ios'", id="unknown-target"),
        pytest.param(
            {"io_dtype": "int16"}, ConfigError, "io dtype 'int16' is not supported", id="bad-io-dtype"
        ),
    ],
)
def test_bad_options_raise(
    tmp_path: Path, stub_stages: StubStages, options: dict[str, Any], error: type, fragment: str
) -> None:
    kw = {"model_dir": make_model_dir(tmp_path), "target": "android", "out": tmp_path / "out", **options}
    with pytest.raises(error, match=fragment):
        build(BuildOptions(**kw))
    assert stub_stages.contexts == []


def test_io_dtype_from_options_beats_edgeq_toml(tmp_path: Path, stub_stages: StubStages) -> None:
    root = make_model_dir(tmp_path, target={"io_dtype": "int8"})
    build(_opts(root, tmp_path / "a"))
    build(_opts(root, tmp_path / "b", io_dtype="float32"))
    assert [c.target.io_dtype for c in stub_stages.contexts] == ["int8", "float32"]


def test_build_context_carries_specs_data_and_gates(tmp_path: Path, stub_stages: StubStages) -> None:
    root = make_model_dir(tmp_path, gates={"accuracy_drop": 3.0}, data={"calibration_samples": 5})
    outcome = build(_opts(root, tmp_path / "out", gates={"model_bytes": 1234.0}))
    (ctx,) = stub_stages.contexts
    assert ctx.spec.name == "tiny" and ctx.target.name == "android"
    assert len(ctx.calibration) == 5 and len(ctx.eval) == 32
    assert ctx.eval.labels is not None and ctx.calibration.labels is None
    sources = {g.name: g.source for g in ctx.gates}
    assert (sources["accuracy_drop"], sources["model_bytes"], sources["top1_agreement"]) == (
        "edgeq.toml",
        "command line",
        "target",
    )
    # stages write under a staging folder next to --out, never into --out itself
    assert ctx.bundle_dir.parent.parent == tmp_path
    assert ctx.bundle_dir.parent.name.startswith(".edgeq-staging-out-")
    assert isinstance(outcome, BuildOutcome) and outcome.passed and outcome.out == tmp_path / "out"
    assert outcome.report == {"passed": True, "stub": True}


def test_missing_parents_of_out_are_created(tmp_path: Path, stub_stages: StubStages) -> None:
    out = tmp_path / "a" / "b" / "out"
    build(_opts(make_model_dir(tmp_path), out))
    assert (out / "model.tflite").is_file()
    assert staging_leftovers(out.parent) == []


@pytest.mark.parametrize("existing", ["absent", "empty-folder", "earlier-bundle"])
@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_successful_build_swaps_the_bundle_in(
    tmp_path: Path, stub_stages: StubStages, monkeypatch: pytest.MonkeyPatch, existing: str, exchange: bool
) -> None:
    if not exchange:
        monkeypatch.setattr("edgeq.bundle.staging._rename_exchange", lambda a, b: False)
    out = tmp_path / "dist" / "out"
    out.parent.mkdir()
    if existing == "empty-folder":
        out.mkdir()
    elif existing == "earlier-bundle":
        make_fake_bundle(out)
    build(_opts(make_model_dir(tmp_path), out))
    assert set(snapshot(out)) == {"model.tflite", "report.json", "manifest.json"}
    assert (out / "model.tflite").read_bytes() == b"TFL3 new build"
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(StageError("convert", ["export", "quantize"], "onnx2tf failed"), id="stage-error"),
        pytest.param(ModelError("export: bad model"), id="model-error"),
        pytest.param(RuntimeError("a bug"), id="unexpected"),
        pytest.param(KeyboardInterrupt(), id="interrupt"),
    ],
)
def test_failed_build_leaves_the_earlier_bundle_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    stub = StubStages(raise_after_writing=failure)  # writes into the staging bundle, then fails
    monkeypatch.setattr("edgeq.build.run_stages", stub)
    out = make_fake_bundle(tmp_path / "dist" / "out")
    before = snapshot(out)
    with pytest.raises(type(failure)):
        build(_opts(make_model_dir(tmp_path), out, keep_build_dir=tmp_path / "keep"))
    assert snapshot(out) == before
    assert staging_leftovers(out.parent) == []
    # the build folder is kept on failure too (convert.log explains a failed conversion)
    assert set(snapshot(tmp_path / "keep")) == {"model.float.onnx", KEEP_MARKER}


def test_failing_real_stage_leaves_the_earlier_bundle_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeq.stages import export

    def boom(ctx: Any) -> Any:
        (ctx.build_dir / "model.exported.onnx").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(export.STAGE, "run", boom)
    out = make_fake_bundle(tmp_path / "dist" / "out")
    before = snapshot(out)
    with pytest.raises(StageError) as info:
        build(_opts(make_model_dir(tmp_path), out))
    assert (info.value.stage, info.value.after) == ("export", [])
    assert "OSError: disk full" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert snapshot(out) == before
    assert staging_leftovers(out.parent) == []


def test_keep_build_copies_the_intermediate_files(tmp_path: Path, stub_stages: StubStages) -> None:
    keep = tmp_path / "keep"
    build(_opts(make_model_dir(tmp_path), tmp_path / "out", keep_build_dir=keep))
    assert set(snapshot(keep)) == {"model.float.onnx", KEEP_MARKER}
    (keep / "stale.txt").write_text("from the earlier build")
    build(
        _opts(tmp_path / "model", tmp_path / "out", keep_build_dir=keep)
    )  # an earlier keep folder (it holds the marker) is replaced
    assert set(snapshot(keep)) == {"model.float.onnx", KEEP_MARKER}


def test_keep_build_never_deletes_a_folder_it_did_not_write(tmp_path: Path, stub_stages: StubStages) -> None:
    keep = tmp_path / "my-project"
    keep.mkdir()
    (keep / "precious.txt").write_text("months of work")
    with pytest.raises(OutputDirError, match="was not written by edgeq"):
        build(_opts(make_model_dir(tmp_path), tmp_path / "out", keep_build_dir=keep))
    assert (keep / "precious.txt").read_text() == "months of work"


# --- check_out_dir and is_edgeq_bundle ------------------------------------------------------------


def _bundle_with_manifest(text: str):
    def make(p: Path) -> Path:
        p.mkdir()
        (p / "manifest.json").write_text(text)
        return p

    return make


def _a_file(p: Path) -> Path:
    p.write_text("x")
    return p


@pytest.mark.parametrize(
    ("make", "ok"),
    [
        pytest.param(lambda p: p, True, id="absent"),
        pytest.param(lambda p: p / "x" / "y", True, id="parents-missing"),
        pytest.param(lambda p: _a_file(p) / "y", False, id="parent-is-a-file"),
        pytest.param(lambda p: p.mkdir() or p, True, id="empty-folder"),
        pytest.param(make_fake_bundle, True, id="earlier-bundle"),
        pytest.param(_bundle_with_manifest('{"generator": "edgeq"}'), True, id="minimal-manifest"),
        pytest.param(_bundle_with_manifest('{"generator": "other"}'), False, id="other-generator"),
        pytest.param(_bundle_with_manifest('["edgeq"]'), False, id="manifest-not-an-object"),
        pytest.param(_bundle_with_manifest("{not json"), False, id="manifest-not-json"),
        pytest.param(_a_file, False, id="file"),
    ],
)
def test_check_out_dir(tmp_path: Path, make, ok: bool) -> None:
    out = make(tmp_path / "out")
    if ok:
        check_out_dir(out)
    else:
        with pytest.raises(OutputDirError):
            check_out_dir(out)


def test_is_edgeq_bundle(tmp_path: Path) -> None:
    assert is_edgeq_bundle(make_fake_bundle(tmp_path / "a"))
    assert not is_edgeq_bundle(tmp_path / "missing")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").mkdir()  # a folder named manifest.json
    assert not is_edgeq_bundle(tmp_path / "b")


# --- the shared real builds ----------------------------------------------------------------------------


def test_onnx_model_with_int8_io_builds_and_passes(onnx_int8_build: ApiBuild) -> None:
    outcome = onnx_int8_build.outcome
    assert outcome.passed, [g for g in outcome.report["gates"] if not g["passed"]]
    assert outcome.out == onnx_int8_build.out
    assert outcome.report == json.loads((onnx_int8_build.out / "report.json").read_text(encoding="utf-8"))
    assert outcome.report["model"]["format"] == "onnx"
    assert outcome.report["target"]["io_dtype"] == "int8"
    assert {p.name for p in onnx_int8_build.keep.iterdir()} >= {
        "model.float.onnx",
        "model.preprocessed.onnx",
        "model.int8.onnx",
        "model.saved_model",
        "model.convert_job.json",
        "model.float32.tflite",
        "model.int8.tflite",
        "convert.log",
    }
    assert (onnx_int8_build.keep / "model.int8.tflite").read_bytes() == (
        onnx_int8_build.out / "model.tflite"
    ).read_bytes()


def test_two_processes_give_byte_identical_bundles(process_builds: list[ProcessBuild]) -> None:
    first, second = process_builds
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    a, b = snapshot(first.out), snapshot(second.out)
    for name in ("model.tflite", "model.json", "labels.txt"):
        assert a[name] == b[name], name
    ra, rb = json.loads(a["report.json"]), json.loads(b["report.json"])
    for r in (ra, rb):  # the emulators' host wall times are the only fields that may differ (no cache here)
        assert "stage_seconds" not in r
        for entry in r["artifacts"]["tflite_int8"]["runtimes"].values():
            entry["describe"].pop("validation_seconds", None)
    assert ra == rb


def test_in_process_rebuild_gives_the_same_model_json(
    tiny_build: CliBuild, gate_fail_rebuild: RebuildRun
) -> None:
    assert (gate_fail_rebuild.out / "model.json").read_bytes() == (tiny_build.out / "model.json").read_bytes()
    assert (gate_fail_rebuild.out / "labels.txt").read_bytes() == (tiny_build.out / "labels.txt").read_bytes()


def test_in_process_rebuild_gives_the_same_model_tflite(
    tiny_build: CliBuild, gate_fail_rebuild: RebuildRun
) -> None:
    assert (gate_fail_rebuild.out / "model.tflite").read_bytes() == (
        tiny_build.out / "model.tflite"
    ).read_bytes()


def test_labels_file_problems_are_data_errors(tmp_path: Path, stub_stages: StubStages) -> None:
    root = make_model_dir(tmp_path)
    (root / "labels.txt").write_text("only\ntwo\n")
    with pytest.raises(DataError, match=r"labels.txt lists 2 classes \(ids 0..1\)"):
        build(_opts(root, tmp_path / "out"))
