"""--target path/to/board.toml: a target a user describes, read and checked as the built-in ones are."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import CliBuild, invoke_cli

BOARD = '''name = "board"
description = "a Linux board: LiteRT on its CPU"
format = "tflite"
precisions = ["int8", "fp16"]
precision = "fp16"
io_dtype = "float32"
io_dtypes = ["float32"]
runtimes = ["litert"]
threads = 2

[gates]
output_cosine = 0.99
model_bytes = 1_000_000

[bundle]
model_file = "board.tflite"
'''


def _board(tmp_path: Path, text: str = BOARD, name: str = "board.toml") -> Path:
    path = tmp_path / "targets" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_target_file_builds_its_default_precision(tiny_build: CliBuild, tmp_path: Path) -> None:
    board = _board(tmp_path)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:  # no --out: named by the target file's name and the rung shipped
        result = invoke_cli(["build", str(tiny_build.model_dir), "--target", "targets/board.toml"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    out = tmp_path / "dist" / "tiny-board-fp16"
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["target"] == {"name": "board", "io_dtype": "float32", "runtimes": ["litert"], "threads": 2}
    assert report["precision"]["rung"] == "fp16" and (out / "board.tflite").is_file()
    assert {g["name"] for g in report["gates"]} == {"output_cosine", "model_bytes"}
    listed = invoke_cli(["targets", str(board)])
    assert listed.exit_code == 0 and listed.stdout.splitlines()[0].startswith("android")
    assert listed.stdout.splitlines()[-1].startswith("board      a Linux board") and "default fp16" in listed.stdout


@pytest.mark.parametrize(("text", "name", "fragment"), [
    (BOARD.replace('name = "board"', 'name = "other"'), "board.toml", "does not match the file name 'board'"),
    (BOARD.replace("threads = 2", "threads = 0"), "board.toml", "threads must be 1 to 64, got 0"),
    (BOARD.replace('"board.tflite"', '"../escape.tflite"'), "board.toml", "model_file must be a plain file name"),
    (BOARD.replace('runtimes = ["litert"]', 'runtimes = ["edgetpu"]'), "board.toml", "unknown runtime 'edgetpu'"),
    (BOARD.replace('precision = "fp16"', 'precision = "int4"'), "board.toml", "precision 'int4' is not among"),
    (BOARD + "flash = 1\n", "board.toml", "flash"),
    ("name = [", "board.toml", "not valid TOML"),
])
def test_a_bad_target_file_is_refused_in_one_line(tiny_build: CliBuild, tmp_path: Path, text: str, name: str,
                                                 fragment: str) -> None:
    board = _board(tmp_path, text, name)
    for args in (["targets", str(board)],
                 ["build", str(tiny_build.model_dir), "--target", str(board), "--out", str(tmp_path / "dist" / "x")]):
        result = invoke_cli(args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr, result.exception)
        assert len(result.stderr.splitlines()) == 1 and fragment in result.stderr, result.stderr
    assert not (tmp_path / "dist").exists()


def test_a_missing_target_file_names_the_built_in_ones(tmp_path: Path) -> None:
    result = invoke_cli(["targets", str(tmp_path / "nowhere.toml")])
    assert result.exit_code == 2 and "no such target file; give a .toml file or one of: android" in result.stderr


def test_linux_arm64_validates_on_both_raspberry_pi_cores(tiny_build: CliBuild, tmp_path: Path) -> None:
    out = tmp_path / "dist" / "pi"
    result = invoke_cli(["build", str(tiny_build.model_dir), "--target", "linux-arm64", "--out", str(out)])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    runtimes = report["artifacts"]["tflite_int8"]["runtimes"]
    assert set(runtimes) == {"litert", "litert-ref", "litert-arm64:cortex-a72", "litert-arm64:cortex-a76"}
    assert all(e["describe"]["threads"] == 4 for e in runtimes.values())
    assert {rt for rt in report["artifacts"]["tflite_int8"]["parity"]} == {"litert-ref", "litert-arm64:cortex-a72",
                                                                          "litert-arm64:cortex-a76"}
