"""The `edgeq` command, driven with typer's CliRunner (stdout and stderr captured apart).

Exit codes: 0 every gate passed, 1 a gate failed (bundle and report written), 2 bad input (one line
on stderr, --out untouched), 3 a bug in edgeq.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bad_inputs import CONFIG_CASES, DATA_CASES, Mutation, remove
from conftest import (
    CliBuild,
    ProcessBuild,
    RebuildRun,
    invoke_cli,
    make_fake_bundle,
    make_model_dir,
    snapshot,
    staging_leftovers,
)

from edgeq import __version__

BUNDLE_FILES = {"model.tflite", "model.json", "labels.txt", "report.json", "report.md", "manifest.json", "attribution.png"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def lines(text: str) -> list[str]:
    return [_ANSI.sub("", ln).rstrip() for ln in text.splitlines() if ln.strip()]


def assert_refused(result: Any, fragment: str, code: int = 2) -> str:
    """Exit ``code``, nothing on stdout, exactly one line on stderr: 'error: ...' holding ``fragment``."""
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    err = lines(result.stderr)
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    assert fragment in err[0]
    return err[0]


# --- the small commands ----------------------------------------------------------------------------


def test_version() -> None:
    result = invoke_cli(["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"edgeq {__version__}\n"


def test_targets_lists_the_built_in_targets() -> None:
    result = invoke_cli(["targets"])
    assert result.exit_code == 0
    android, linux, mcu = lines(result.stdout)
    assert android.startswith("android ") and "INT8 .tflite for LiteRT" in android
    assert linux.startswith("linux-arm64 ") and "Raspberry Pi 4 and 5" in linux
    assert mcu.startswith("mcu ") and "TensorFlow Lite Micro" in mcu and "(precisions: int8; default int8)" in mcu


def test_help_lists_the_commands() -> None:
    result = invoke_cli(["--help"])
    assert result.exit_code == 0
    assert "build" in result.stdout and "targets" in result.stdout


def test_build_help_lists_its_options() -> None:
    result = invoke_cli(["build", "--help"])
    assert result.exit_code == 0
    for option in ("--target", "--out", "--gate", "--io-dtype", "--keep-build", "--json", "--debug"):
        assert option in result.stdout
    # bracketed help text is escaped, not taken for rich markup and dropped
    assert "[list]" in result.stdout and "dist/<model>-<target>-{precision}]" in result.stdout


def test_help_imports_no_heavy_module() -> None:
    code = """
import sys
from typer.testing import CliRunner
heavy = ("tensorflow", "torch", "onnx2tf", "onnx", "onnxruntime", "ai_edge_litert", "keras")
from edgeq.cli import app
assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]
for args in (["--help"], ["build", "--help"], ["targets"], ["--version"]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
    loaded = [m for m in heavy if m in sys.modules]
    assert not loaded, (args, loaded)
print("light")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "light"


def test_real_process_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgeq", "build", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    (line,) = lines(proc.stderr)
    assert line.startswith("error: model directory") and "does not exist" in line
    assert not (tmp_path / "out").exists()


# --- bad input: exit 2, one line, --out untouched ----------------------------------------------------


@pytest.fixture(params=["absent", "earlier-bundle"])
def out_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """--out in a fresh dist/ folder: either not there yet, or holding an earlier edgeq bundle."""
    dist = tmp_path / "dist"
    dist.mkdir()
    out = dist / "tiny-android"
    if request.param == "earlier-bundle":
        make_fake_bundle(out)
    return out


@pytest.mark.parametrize(("mutate", "error", "fragment"), CONFIG_CASES + DATA_CASES)
def test_bad_model_folder_exits_2_and_leaves_out_alone(
    tmp_path: Path, out_dir: Path, mutate: Mutation, error: type, fragment: str
) -> None:
    root = make_model_dir(tmp_path)
    mutate(root)
    before = snapshot(out_dir)
    existed = out_dir.exists()
    assert_refused(invoke_cli(["build", str(root), "--out", str(out_dir)]), fragment)
    assert out_dir.exists() == existed
    assert snapshot(out_dir) == before
    assert staging_leftovers(out_dir.parent) == []


def _args(*extra: str) -> Callable[[Path, Path], list[str]]:
    return lambda root, out: ["build", str(root), "--out", str(out), *extra]


CLI_CASES = [
    pytest.param(
        _args("--target", "ios"), "unknown target 'ios'; available targets: android", id="unknown-target"
    ),
    pytest.param(_args("-t", "Android"), "unknown target 'Android'", id="target-is-case-sensitive"),
    pytest.param(_args("--gate", "speed=1"), "unknown gate 'speed'", id="gate-unknown"),
    pytest.param(_args("--gate", "accuracy_drop"), "expected NAME=VALUE", id="gate-without-value"),
    pytest.param(_args("--gate", "accuracy_drop=lots"), "'lots' is not a number", id="gate-not-a-number"),
    pytest.param(_args("--gate", "top1_agreement=nan"), "must be a finite number", id="gate-nan"),
    pytest.param(
        _args("--gate", "accuracy_drop=2", "--gate", "bogus=1"),
        "unknown gate 'bogus'",
        id="one-bad-gate-among-good",
    ),
    pytest.param(
        _args("--io-dtype", "bogus"),
        "io dtype 'bogus' is not supported by target 'android'",
        id="io-dtype-bogus",
    ),
    pytest.param(_args("--io-dtype", "uint8"), "io dtype 'uint8' is not supported", id="io-dtype-uint8"),
    pytest.param(
        lambda root, out: ["build", str(root / "nowhere"), "--out", str(out)],
        "does not exist; pass the folder that holds edgeq.toml",
        id="model-dir-missing",
    ),
    pytest.param(
        lambda root, out: ["build", str(root / "labels.txt"), "--out", str(out)],
        "is not a directory",
        id="model-dir-is-a-file",
    ),
]


@pytest.mark.parametrize(("args", "fragment"), CLI_CASES)
def test_bad_options_exit_2_and_leave_out_alone(tmp_path: Path, out_dir: Path, args, fragment: str) -> None:
    root = make_model_dir(tmp_path)
    before = snapshot(out_dir)
    existed = out_dir.exists()
    assert_refused(invoke_cli(args(root, out_dir)), fragment)
    assert out_dir.exists() == existed
    assert snapshot(out_dir) == before
    assert staging_leftovers(out_dir.parent) == []


def _out_file(tmp: Path) -> Path:
    (tmp / "out").write_text("my notes")
    return tmp / "out"


def _out_foreign_folder(tmp: Path) -> Path:
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").write_text("mine")
    return tmp / "out"


def _out_foreign_manifest(tmp: Path) -> Path:
    (tmp / "out").mkdir()
    (tmp / "out" / "manifest.json").write_text('{"generator": "someone else"}')
    return tmp / "out"


def _out_broken_manifest(tmp: Path) -> Path:
    (tmp / "out").mkdir()
    (tmp / "out" / "manifest.json").write_text('{"generator": "edgeq"')
    return tmp / "out"


def _out_symlink(tmp: Path) -> Path:
    make_fake_bundle(tmp / "real")
    (tmp / "out").symlink_to(tmp / "real")
    return tmp / "out"


def _out_under_a_file(tmp: Path) -> Path:
    (tmp / "plain").write_text("a file")
    return tmp / "plain" / "sub" / "out"


@pytest.mark.parametrize(
    ("make_out", "fragment"),
    [
        pytest.param(_out_file, "exists and is not a folder", id="file"),
        pytest.param(_out_foreign_folder, "exists and is not an edgeq bundle", id="non-bundle-folder"),
        pytest.param(_out_foreign_manifest, "exists and is not an edgeq bundle", id="foreign-manifest"),
        pytest.param(_out_broken_manifest, "exists and is not an edgeq bundle", id="broken-manifest"),
        pytest.param(_out_symlink, "exists and is not a folder", id="symlink"),
        pytest.param(_out_under_a_file, "is a file, not a folder", id="under-a-file"),
    ],
)
def test_out_that_is_not_ours_exits_2_and_is_untouched(tmp_path: Path, make_out, fragment: str) -> None:
    root = make_model_dir(tmp_path, dirname="model")
    place = tmp_path / "place"
    place.mkdir()
    out = make_out(place)
    before = snapshot(place)
    links = sorted(p.name for p in place.iterdir() if p.is_symlink())
    assert_refused(invoke_cli(["build", str(root), "--out", str(out)]), fragment)
    assert snapshot(place) == before
    assert sorted(p.name for p in place.iterdir() if p.is_symlink()) == links
    assert staging_leftovers(place) == []


def test_error_line_is_the_message_verbatim(tmp_path: Path) -> None:
    # Rich markup must not eat '[data]' or a folder named like a style tag
    root = make_model_dir(tmp_path, dirname="[red]models")
    remove("data/calibration")(root)  # DataError: "... fix [data].calibration in edgeq.toml"
    result = invoke_cli(["build", str(root), "--out", str(tmp_path / "out")])
    line = assert_refused(result, "does not exist")
    assert line == f"error: edgeq.toml: [data].calibration 'data/calibration' does not exist; fix the path (relative to {root})"


# --- a successful build ----------------------------------------------------------------------------


def test_build_exits_0_and_writes_the_bundle(tiny_build: CliBuild) -> None:
    assert tiny_build.exit_code == 0, tiny_build.stderr
    assert {p.name for p in tiny_build.out.iterdir()} == BUNDLE_FILES
    assert staging_leftovers(tiny_build.out.parent) == []


def test_manifest_hashes_every_bundle_file(tiny_build: CliBuild) -> None:
    manifest = json.loads((tiny_build.out / "manifest.json").read_text(encoding="utf-8"))
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == BUNDLE_FILES - {"manifest.json"}
    for name, entry in listed.items():
        data = (tiny_build.out / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest(), name
        assert entry["bytes"] == len(data), name


def test_progress_goes_to_stderr_one_line_per_stage_event(tiny_build: CliBuild) -> None:
    err = lines(tiny_build.stderr)
    stages = ["export", "calibrate", "quantize", "convert", "precision", "validate", "package"]
    assert [ln for ln in err if ln.endswith(" ...")] == [f"[{k}/7] {s} ..." for k, s in enumerate(stages, 1)]
    done = [ln for ln in err if " done in " in ln]
    assert [ln.split(" done in ")[0] for ln in done] == [f"[{k}/7] {s}" for k, s in enumerate(stages, 1)]
    assert not any(ln.startswith("error") for ln in err)


def test_json_flag_ends_stdout_with_report_json(tiny_build: CliBuild) -> None:
    report_text = (tiny_build.out / "report.json").read_text(encoding="utf-8")
    assert tiny_build.stdout.endswith(report_text)


def test_json_flag_prints_only_the_report_in_process(tiny_build: CliBuild) -> None:
    assert json.loads(tiny_build.stdout) == json.loads(
        (tiny_build.out / "report.json").read_text(encoding="utf-8")
    )


def test_json_flag_prints_only_the_report_as_a_process(process_builds: list[ProcessBuild]) -> None:
    for run in process_builds:
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout) == json.loads((run.out / "report.json").read_text(encoding="utf-8"))
        assert "error" not in run.stderr


# --- a gate failure: exit 1, bundle still written ----------------------------------------------------


def test_gate_failure_exits_1_and_still_writes_bundle(gate_fail_rebuild: RebuildRun) -> None:
    run = gate_fail_rebuild
    assert run.exit_code == 1, run.stderr
    assert {p.name for p in run.out.iterdir()} == BUNDLE_FILES
    report = json.loads((run.out / "report.json").read_text(encoding="utf-8"))
    assert report["passed"] is False
    # 16-bit activations cannot make a file smaller: no repair is tried for a size gate
    assert "model_bytes" in report["repair"]["skipped"] and "repair skipped" in run.stdout
    failed = [g for g in report["gates"] if not g["passed"]]
    assert [g["name"] for g in failed] == ["model_bytes"]
    (g,) = failed
    assert g["source"] == "command line" and g["limit"] == 100.0
    assert g["value"] == report["artifacts"]["tflite_int8"]["bytes"]
    assert g["margin"] == pytest.approx(100.0 - g["value"])
    assert json.loads((run.out / "manifest.json").read_text(encoding="utf-8"))["passed"] is False


def test_gate_failure_summary_names_the_gate_and_its_margin(gate_fail_rebuild: RebuildRun) -> None:
    report = json.loads((gate_fail_rebuild.out / "report.json").read_text(encoding="utf-8"))
    (g,) = [g for g in report["gates"] if not g["passed"]]
    out = lines(gate_fail_rebuild.stdout)
    fail_line = next(ln for ln in out if ln.startswith("FAIL model_bytes"))
    assert f"misses by {abs(g['margin']):.4f} bytes" in fail_line
    assert sum(ln.startswith("PASS ") for ln in out) == len(report["gates"]) - 1
    assert any(ln.startswith("FAILED: bundle in") for ln in out)


def test_gate_failure_report_md_names_the_gate(gate_fail_rebuild: RebuildRun) -> None:
    md = (gate_fail_rebuild.out / "report.md").read_text(encoding="utf-8")
    assert "**FAILED**" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| model_bytes |"))
    assert "**no**" in row and "command line" in row


def test_gate_failure_report_md_gives_the_margin(gate_fail_rebuild: RebuildRun) -> None:
    report = json.loads((gate_fail_rebuild.out / "report.json").read_text(encoding="utf-8"))
    (g,) = [g for g in report["gates"] if not g["passed"]]
    md = (gate_fail_rebuild.out / "report.md").read_text(encoding="utf-8")
    rows = [ln for ln in md.splitlines() if "model_bytes" in ln]
    assert any(str(int(abs(g["margin"]))) in ln for ln in rows), rows


def test_rebuild_replaces_an_earlier_bundle(gate_fail_rebuild: RebuildRun) -> None:
    after = snapshot(gate_fail_rebuild.out)
    assert set(after) == set(gate_fail_rebuild.before) == BUNDLE_FILES
    assert after["report.json"] != gate_fail_rebuild.before["report.json"]
    assert json.loads(gate_fail_rebuild.before["manifest.json"])["passed"] is True
    assert json.loads(after["manifest.json"])["passed"] is False
    assert staging_leftovers(gate_fail_rebuild.out.parent) == []
    assert sorted(p.name for p in gate_fail_rebuild.out.parent.iterdir()) == ["bundle"]


# --- failures past the checks, with stages stubbed (no converter runs) --------------------------------


def test_stage_failure_exits_2_naming_the_stage(
    tmp_path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeq.stages import export

    def boom(ctx: Any) -> Any:
        raise ValueError("boom\nsecond line of detail")

    monkeypatch.setattr(export.STAGE, "run", boom)
    before = snapshot(out_dir)
    result = invoke_cli(["build", str(make_model_dir(tmp_path)), "--out", str(out_dir)])
    assert result.exit_code == 2
    err = lines(result.stderr)
    assert err[:2] == ["[1/7] export ...", err[1]] and err[1].startswith("[1/7] export failed after ")
    assert err[-1] == (
        "error: stage 'export' failed (after: none): ValueError: boom (run with --debug for the traceback)"
    )
    assert "Traceback" not in result.stderr
    assert snapshot(out_dir) == before
    assert staging_leftovers(out_dir.parent) == []

    debug = invoke_cli(["build", str(tmp_path / "model"), "--out", str(out_dir), "--debug"])
    assert debug.exit_code == 2
    assert "Traceback" in debug.stderr and "ValueError: boom" in debug.stderr


def test_interrupt_exits_130_and_leaves_out_alone(
    tmp_path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeq.stages import export

    def interrupted(ctx: Any) -> Any:
        (ctx.bundle_dir / "model.tflite").write_bytes(b"half written")
        raise KeyboardInterrupt

    monkeypatch.setattr(export.STAGE, "run", interrupted)
    before = snapshot(out_dir)
    result = invoke_cli(["build", str(make_model_dir(tmp_path)), "--out", str(out_dir)])
    assert result.exit_code == 130
    assert "interrupted; --out was left as it was" in result.stderr
    assert snapshot(out_dir) == before
    assert staging_leftovers(out_dir.parent) == []


def test_internal_error_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("oops")

    monkeypatch.setattr("edgeq.build.build", broken)
    result = invoke_cli(["build", str(make_model_dir(tmp_path)), "--out", str(tmp_path / "out")])
    line = assert_refused(result, "internal error: RuntimeError: oops", code=3)
    assert "report it" in line


def test_stubbed_build_passes_options_through(tmp_path: Path, stub_stages: Any) -> None:
    root = make_model_dir(tmp_path)
    out = tmp_path / "out"
    result = invoke_cli(
        ["build", str(root), "--out", str(out), "--io-dtype", "int8", "--gate", "accuracy_drop=2.5", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"passed": True, "stub": True}
    (ctx,) = stub_stages.contexts
    assert ctx.target.io_dtype == "int8"
    gates = {g.name: (g.limit, g.source) for g in ctx.gates}
    assert gates["accuracy_drop"] == (2.5, "command line")
    assert gates["top1_agreement"] == (0.98, "target")
    assert (out / "model.tflite").read_bytes() == b"TFL3 new build"


def test_stubbed_gate_failure_exits_1(tmp_path: Path, stub_stages: Any) -> None:
    stub_stages.passed = False
    result = invoke_cli(["build", str(make_model_dir(tmp_path)), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["passed"] is False


def test_default_out_is_dist_model_target_precision(
    tmp_path: Path, stub_stages: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_model_dir(tmp_path)
    work = tmp_path / "work"
    (work / "dist").mkdir(parents=True)
    monkeypatch.chdir(work)
    result = invoke_cli(["build", str(root), "--json"])
    assert result.exit_code == 0, result.stderr
    assert (work / "dist" / "tiny-android-int8" / "model.tflite").is_file()


def test_default_out_works_without_a_dist_folder(
    tmp_path: Path, stub_stages: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_model_dir(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = invoke_cli(["build", str(root), "--json"])
    assert result.exit_code == 0, result.stderr
    assert (work / "dist" / "tiny-android-int8" / "model.tflite").is_file()


def test_bad_input_creates_no_missing_parents(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path)
    remove("data/eval/labels.npy")(root)
    assert_refused(
        invoke_cli(["build", str(root), "--out", str(tmp_path / "a" / "b" / "out")]), "labels.npy missing"
    )
    assert not (tmp_path / "a").exists()


def test_failed_stage_removes_the_parents_it_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.stages import export

    def boom(ctx: Any) -> Any:
        raise ValueError("boom")

    monkeypatch.setattr(export.STAGE, "run", boom)
    (tmp_path / "a").mkdir()
    result = invoke_cli(
        ["build", str(make_model_dir(tmp_path)), "--out", str(tmp_path / "a" / "b" / "c" / "out")]
    )
    assert result.exit_code == 2
    assert (
        sorted(p.name for p in (tmp_path / "a").iterdir()) == []
    )  # b and c were made by the build: gone again


def test_no_args_shows_help() -> None:
    result = invoke_cli([])
    assert "Usage" in result.output and "build" in result.output


def test_main_maps_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq import cli

    for raised, code in ((SystemExit(None), 0), (SystemExit(1), 1), (SystemExit("text"), 2)):

        def fake_app(raised: SystemExit = raised) -> None:
            raise raised

        monkeypatch.setattr(cli, "app", fake_app)
        with pytest.raises(SystemExit) as info:
            cli.main()
        assert info.value.code == code


def test_importing_edgeq_turns_off_onnxruntime_telemetry() -> None:
    """onnxruntime (>= 1.29) phones home from Linux unless ORT_DISABLE_TELEMETRY is set before it loads."""
    code = "import os; os.environ.pop('ORT_DISABLE_TELEMETRY', None); import edgeq; print(os.environ['ORT_DISABLE_TELEMETRY'])"
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert proc.stdout.strip() == "1"


def _m(sqnr: float | None, identical: bool = False) -> dict[str, Any]:
    return {"cosine": 1.0, "sqnr_db": sqnr, "identical": identical}


@pytest.mark.parametrize(
    ("outputs", "shown"),
    [
        pytest.param({"model": {"logits": _m(31.25)}}, "31.2", id="one-graph"),
        pytest.param({"encoder": {"memory": _m(40.0)}, "decoder": {"logits": _m(22.06)}}, "22.1", id="worst-of-graphs"),
        pytest.param({"encoder": {"memory": _m(None, True)}, "decoder": {"logits": _m(25.0)}}, "25.0",
                     id="identical-graph-ignored"),
        pytest.param({"encoder": {"memory": _m(None, True)}, "decoder": {"logits": _m(None, True)}}, "inf",
                     id="all-identical"),
        pytest.param({"model": {"logits": _m(None, False)}}, "-", id="zero-reference"),
    ],
)
def test_summary_sqnr_is_the_worst_output_of_any_graph(outputs: dict[str, Any], shown: str) -> None:
    from edgeq.summary import _min_sqnr

    assert _min_sqnr({"outputs": outputs}) == shown
