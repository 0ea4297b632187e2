"""`edgeq verify BUNDLE`: every file against manifest.json; changed, missing and extra files fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import invoke_cli, snapshot


def test_an_intact_bundle_passes(bundle: Path) -> None:
    before = snapshot(bundle)
    result = invoke_cli(["verify", str(bundle)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("OK: 6 files match")
    assert snapshot(bundle) == before  # read only


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "line"),
    [
        (lambda b: _flip_one_byte(b / "model.tflite"), "changed: model.tflite (sha256 differs from the manifest)"),
        (lambda b: (b / "labels.txt").write_text("circle\n"), "changed: labels.txt ("),
        (lambda b: (b / "model.json").unlink(), "missing: model.json"),
        (lambda b: (b / "notes.txt").write_text("x"), "extra: notes.txt (not in manifest.json)"),
        (lambda b: ((b / "sub").mkdir(), (b / "sub" / "x.bin").write_bytes(b"1")), "extra: sub/x.bin"),
        (lambda b: ((b / "model.tflite").unlink(), (b / "model.tflite").symlink_to(b / "report.md")),
         "not a regular file: model.tflite"),
    ],
    ids=["changed-byte", "changed-size", "missing", "extra", "extra-nested", "symlink"],
)
def test_a_damaged_bundle_fails_naming_the_file(bundle: Path, damage, line: str) -> None:  # type: ignore[no-untyped-def]
    damage(bundle)
    result = invoke_cli(["verify", str(bundle)])
    assert result.exit_code == 1
    assert line in result.stderr
    assert "FAILED: 1 problem(s)" in result.stderr


def test_every_problem_is_listed(bundle: Path) -> None:
    _flip_one_byte(bundle / "report.md")
    (bundle / "labels.txt").unlink()
    (bundle / "extra").write_text("x")
    result = invoke_cli(["verify", str(bundle)])
    assert result.exit_code == 1
    assert "FAILED: 3 problem(s)" in result.stderr


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda b: shutil.rmtree(b), "is not a folder; pass the folder `edgeq build` wrote"),
        (lambda b: (b / "manifest.json").unlink(), "has no manifest.json; it is not an edgeq bundle"),
        (lambda b: (b / "manifest.json").write_text("{"), "manifest.json is not valid JSON"),
        (lambda b: (b / "manifest.json").write_text('{"files": []}'), "was not written by edgeq"),
        (lambda b: (b / "manifest.json").write_text(json.dumps(
            {"generator": "edgeq", "files": [{"path": "../../etc/passwd", "sha256": "0", "bytes": 1}]})),
         "files entry '../../etc/passwd' points outside the bundle"),
        (lambda b: (b / "manifest.json").write_text(json.dumps({"generator": "edgeq", "files": [{"path": "x"}]})),
         "a files entry lacks path/sha256/bytes"),
    ],
    ids=["no-folder", "no-manifest", "bad-json", "not-edgeq", "escape", "bad-entry"],
)
def test_not_a_bundle_exits_2(bundle: Path, setup, message: str) -> None:  # type: ignore[no-untyped-def]
    setup(bundle)
    result = invoke_cli(["verify", str(bundle)])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
