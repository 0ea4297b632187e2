"""Hostile inputs, round two, through the command line: paths that leave the model folder or the
bundle, reads that would not end, names that would drive the terminal, documents nested to crash a
parser. Each case checks the four promises: exit 2, exactly one line on stderr, --out untouched
(no staging folder left), and nothing outside read into the bundle or written (a canary)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bad_inputs import edit
from conftest import (
    INPUT,
    TranslationBuild,
    invoke_cli,
    make_fake_bundle,
    make_model_dir,
    snapshot,
    staging_leftovers,
)


@pytest.fixture(autouse=True)
def _never_block() -> Iterator[None]:
    """A FIFO or device read that blocks fails the test instead of hanging the suite."""
    def boom(*_: Any) -> None:
        raise TimeoutError("a read blocked (FIFO or device opened)")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _one_line(result: Any) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "\x1b" not in result.stderr and "Traceback" not in result.stderr
    return lines[0]


def _refused_build(root: Path, tmp_path: Path, fragment: str, *extra: str) -> str:
    """edgeq build on ``root``: exit 2, one line holding ``fragment``, --out (an earlier bundle) untouched."""
    out = make_fake_bundle(tmp_path / "dist" / "bundle")
    before = snapshot(out)
    line = _one_line(invoke_cli(["build", str(root), "--out", str(out), "--runtime", "litert", *extra]))
    assert fragment in line, line
    assert snapshot(out) == before and staging_leftovers(out.parent) == []
    return line


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside the model folder that must never reach a bundle."""
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_text("CI_TOKEN=hunter2\n", encoding="utf-8")
    return path


# --- [task].labels: the CI secret case -------------------------------------------------------


def _labels(value: str) -> Callable[[Path], None]:
    return edit(task={"labels": value})


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        pytest.param("/proc/self/environ", "[task].labels '/proc/self/environ' is an absolute path, outside the folder",
                     id="proc-environ"),
        pytest.param("/etc/passwd", "[task].labels '/etc/passwd' is an absolute path, outside the folder", id="etc-passwd"),
        pytest.param("../outside/secret.txt", "[task].labels '../outside/secret.txt' leaves the folder ('..')", id="dotdot"),
        pytest.param("data/../../outside/secret.txt", "leaves the folder ('..')", id="dotdot-inside"),
    ],
)
def test_labels_outside_the_folder_are_refused(tmp_path: Path, secret: Path, labels: str, fragment: str) -> None:
    root = make_model_dir(tmp_path, "onnx")
    _labels(labels)(root)
    _refused_build(root, tmp_path, fragment)


def test_labels_through_a_symlink_are_refused(tmp_path: Path, secret: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    (root / "labels.txt").unlink()
    (root / "labels.txt").symlink_to(secret)
    _refused_build(root, tmp_path, "[task].labels 'labels.txt' goes through a symlink (labels.txt)")


def test_labels_that_are_a_fifo_do_not_block(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    (root / "labels.txt").unlink()
    os.mkfifo(root / "labels.txt")
    _refused_build(root, tmp_path, "[task].labels 'labels.txt' is not a regular file")


def test_labels_that_are_not_utf8(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    (root / "labels.txt").write_bytes(b"circle\nsquare\n\xff\xfe stripe\ndot\n")
    _refused_build(root, tmp_path, "labels file labels.txt is not UTF-8 text (invalid start byte at byte 14); re-save it")


def test_labels_over_the_size_limit_are_not_read(tmp_path: Path) -> None:
    from edgeq.inputs.files import MAX_LABELS

    root = make_model_dir(tmp_path, "onnx")
    with open(root / "labels.txt", "r+b") as fh:  # sparse: the size is known without writing it
        fh.truncate(MAX_LABELS + 1)
    _refused_build(root, tmp_path, f"labels file labels.txt is {MAX_LABELS + 1} bytes, over the 16 MiB limit")


# --- the model and its data ------------------------------------------------------------------


def test_a_model_file_given_as_an_absolute_path(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    elsewhere = tmp_path / "elsewhere.onnx"
    shutil.move(root / "model.onnx", elsewhere)
    edit(model={"file": str(elsewhere)})(root)
    _refused_build(root, tmp_path, f"[model].file '{elsewhere}' is an absolute path, outside the folder")


def test_a_model_file_that_is_a_symlink_out_of_the_folder(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    elsewhere = tmp_path / "elsewhere.onnx"
    shutil.move(root / "model.onnx", elsewhere)
    (root / "model.onnx").symlink_to(elsewhere)
    _refused_build(root, tmp_path, "[model].file 'model.onnx' goes through a symlink (model.onnx)")


def test_pytorch_model_code_outside_the_folder(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path)
    shutil.move(root / "model.py", tmp_path / "model.py")
    edit(model={"file": "../model.py"})(root)
    _refused_build(root, tmp_path, "[model].file '../model.py' leaves the folder ('..')")


@pytest.mark.parametrize("link", ["data/calibration", "data"], ids=["calibration-folder", "data-parent"])
def test_a_data_folder_that_is_a_symlink_out(tmp_path: Path, link: str) -> None:
    root = make_model_dir(tmp_path, "onnx")
    target = tmp_path / "outside-data"
    shutil.move(root / link, target)
    (root / link).symlink_to(target, target_is_directory=True)
    part = link.split("/")[-1]
    _refused_build(root, tmp_path, f"[data].calibration 'data/calibration' goes through a symlink ({part})")


def test_a_data_file_that_is_a_symlink_out(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    target = tmp_path / "outside.npy"
    shutil.move(root / "data" / "calibration" / f"{INPUT}.npy", target)
    (root / "data" / "calibration" / f"{INPUT}.npy").symlink_to(target)
    _refused_build(root, tmp_path, f"calibration data: {INPUT}.npy is a symlink; copy the real file there")


# --- .npz archives: sizes known before anything is unpacked ----------------------------------


def _npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, arr in arrays.items():
            with z.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, arr)


def test_an_npz_bomb_is_refused_before_unpacking(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    shutil.rmtree(root / "data" / "calibration")
    zeros = np.zeros((6000, 3, 8, 8), np.float32)  # 4.6 MB of zeros: about 1000x in deflate
    _npz(root / "data" / "calibration.npz", {INPUT: zeros})
    edit(data={"calibration": "data/calibration.npz"})(root)
    _refused_build(root, tmp_path, "over the limit of 200x; raise [data].max_unpack_ratio if the data is real")


def test_an_npz_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    cal = np.load(root / "data" / "calibration" / f"{INPUT}.npy")
    shutil.rmtree(root / "data" / "calibration")
    _npz(root / "data" / "calibration.npz", {INPUT: cal})
    edit(data={"calibration": "data/calibration.npz", "max_unpacked_bytes": 1000})(root)
    _refused_build(root, tmp_path, "over the limit of 1000; raise [data].max_unpacked_bytes or use fewer samples")


def test_an_npz_whose_directory_lies_about_a_size(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    cal = np.load(root / "data" / "calibration" / f"{INPUT}.npy")
    shutil.rmtree(root / "data" / "calibration")
    path = root / "data" / "calibration.npz"
    _npz(path, {INPUT: cal})
    # The central directory says the member unpacks to twice its real size.
    size = zipfile.ZipFile(path).getinfo(f"{INPUT}.npy").file_size
    data = bytearray(path.read_bytes())
    at = data.rfind(b"PK\x01\x02")  # the member's central directory header; uncompressed size at +24
    assert int.from_bytes(data[at + 24 : at + 28], "little") == size
    data[at + 24 : at + 28] = (size * 2).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    edit(data={"calibration": "data/calibration.npz"})(root)
    _refused_build(root, tmp_path, f"says it unpacks to {size * 2} bytes but its array")


# --- edgeq.toml: nesting, size, names that drive the terminal ---------------------------------


def test_edgeq_toml_nested_5000_deep(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    deep = "x = " + "{ a = " * 5000 + "1" + " }" * 5000 + "\n"
    (root / "edgeq.toml").write_text((root / "edgeq.toml").read_text() + deep, encoding="utf-8")
    _refused_build(root, tmp_path, "edgeq.toml: tables or arrays nested too deep to read")


def test_edgeq_toml_over_the_size_limit(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    with open(root / "edgeq.toml", "a", encoding="utf-8") as fh:
        fh.write("# padding\n" * 120_000)
    _refused_build(root, tmp_path, "bytes, over the 1 MiB limit")


def test_an_input_name_with_an_escape_sequence_is_shown_escaped(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    edit(inputs=[{"name": "\x1b[2Jimage", "shape": [1, 3, 8, 8]}])(root)
    line = _refused_build(root, tmp_path, "\\x1b[2Jimage")
    assert "\x1b" not in line


def test_a_key_with_a_newline_cannot_forge_a_second_error_line(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    text = (root / "edgeq.toml").read_text(encoding="utf-8")
    (root / "edgeq.toml").write_text('"x\\nerror: all gates PASSED" = 1\n' + text, encoding="utf-8")
    line = _refused_build(root, tmp_path, "x\\nerror: all gates PASSED")
    assert line.count("error:") == 2  # the real prefix and the escaped key, on one line


def test_a_bidi_override_and_a_very_long_name_are_rendered_as_text(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    edit(task={"output": "\u202elogits" + "y" * 5000})(root)
    line = _refused_build(root, tmp_path, "\\u202elogits")
    assert "more characters]" in line and len(line) < 1200


@pytest.mark.parametrize("name", ["../../escape", "a/b", "\x1b[2J", ".."])
def test_a_model_name_that_is_not_a_plain_name(tmp_path: Path, name: str) -> None:
    root = make_model_dir(tmp_path, "onnx")
    edit(model={"name": name})(root)
    out_default = tmp_path / "dist"
    cwd = os.getcwd()
    os.chdir(tmp_path)  # without --out the bundle would go to dist/<name>-android-int8
    try:
        line = _one_line(invoke_cli(["build", str(root), "--runtime", "litert"]))
    finally:
        os.chdir(cwd)
    assert "[model].name" in line and "must be a plain name" in line
    assert not out_default.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# --- edgeq translate: every file a bundle names stays in the bundle ----------------------------


@pytest.fixture
def translation_bundle(translation_build: TranslationBuild, tmp_path: Path) -> Path:
    assert translation_build.returncode == 0, translation_build.stderr[-3000:]
    copy = tmp_path / "bundle"
    shutil.copytree(translation_build.out, copy)
    return copy


def _model_json(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    model = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    change(model)
    (bundle / "model.json").write_text(json.dumps(model), encoding="utf-8")


def _refused_translate(bundle: Path, fragment: str) -> str:
    before = snapshot(bundle)
    line = _one_line(invoke_cli(["translate", str(bundle), "my mother wants 97 lamps"]))
    assert fragment in line, line
    assert snapshot(bundle) == before
    return line


def test_translate_refuses_an_encoder_outside_the_bundle(translation_bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "encoder.tflite"
    shutil.copyfile(translation_bundle / "encoder.tflite", outside)

    def point_out(m: dict[str, Any]) -> None:
        m["graphs"]["encoder"]["file"] = "../encoder.tflite"

    _model_json(translation_bundle, point_out)
    _refused_translate(translation_bundle, "graphs.encoder.file '../encoder.tflite' leaves the folder ('..')")


@pytest.mark.parametrize("how", ["absolute", "symlink", "fifo"])
def test_translate_refuses_a_tokenizer_that_is_not_a_file_of_the_bundle(translation_bundle: Path, how: str) -> None:
    tok = translation_bundle / "tokenizer.model"
    if how == "absolute":
        _model_json(translation_bundle, lambda m: m["task"].update(tokenizer="/dev/zero"))
        fragment = "task.tokenizer '/dev/zero' is an absolute path"
    elif how == "symlink":
        tok.unlink()
        tok.symlink_to("/dev/zero")
        fragment = "task.tokenizer 'tokenizer.model' goes through a symlink"
    else:
        tok.unlink()
        os.mkfifo(tok)
        fragment = "task.tokenizer 'tokenizer.model' is not a regular file"
    _refused_translate(translation_bundle, fragment)


def test_translate_refuses_a_tokenizer_over_the_size_limit(translation_bundle: Path) -> None:
    from edgeq.inputs.files import MAX_TOKENIZER

    with open(translation_bundle / "tokenizer.model", "r+b") as fh:
        fh.truncate(MAX_TOKENIZER + 1)
    _refused_translate(translation_bundle, "over the 256 MiB limit")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param(b"TFL3\0\0\0\0", "does not load in LiteRT (The model is not a valid Flatbuffer buffer)", id="8-bytes"),
        pytest.param(bytes(range(256)) * 64, "does not load in LiteRT", id="not-a-flatbuffer"),
    ],
)
def test_translate_on_a_broken_tflite(translation_bundle: Path, content: bytes, fragment: str) -> None:
    (translation_bundle / "decoder.tflite").write_bytes(content)
    _refused_translate(translation_bundle, fragment)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        pytest.param(lambda m: m["task"].pop("bos_id"), "task.bos_id is missing", id="no-bos"),
        pytest.param(lambda m: m["task"]["decoder"].pop("graph"), "task.decoder.graph is missing", id="no-decoder-graph"),
        pytest.param(lambda m: m["graphs"]["encoder"].pop("signature"), "graphs.encoder.signature is missing",
                     id="no-signature"),
        pytest.param(lambda m: m["task"].update(target_length="7"), "task.target_length has the wrong type",
                     id="length-a-string"),
        pytest.param(lambda m: m["graphs"]["decoder"]["inputs"][0].update(shape=[1, -5]), "shape is not a list of sizes",
                     id="negative-size"),
        pytest.param(lambda m: m.pop("graphs"), "graphs.", id="no-graphs"),
    ],
)
def test_translate_on_an_incomplete_model_json(translation_bundle: Path, change: Any, fragment: str) -> None:
    _model_json(translation_bundle, change)
    _refused_translate(translation_bundle, fragment)


def test_translate_on_a_model_json_nested_deep(translation_bundle: Path) -> None:
    (translation_bundle / "model.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    _refused_translate(translation_bundle, "model.json is nested too deep to be edgeq's; rebuild the bundle")


# --- edgeq verify -----------------------------------------------------------------------------


def test_verify_on_a_manifest_nested_100k_deep(bundle: Path) -> None:
    (bundle / "manifest.json").write_text('{"a": ' * 100_000 + "1" + "}" * 100_000, encoding="utf-8")
    line = _one_line(invoke_cli(["verify", str(bundle)]))
    assert "manifest.json is nested too deep to be edgeq's; rebuild the bundle" in line


def test_verify_shows_a_hostile_file_name_escaped(bundle: Path) -> None:
    (bundle / "\x1b[2J\nOK: 9 files match, ALL FILES OK").write_text("x", encoding="utf-8")
    result = invoke_cli(["verify", str(bundle)])
    assert result.exit_code == 1 and "\x1b" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert lines[0] == "extra: \\x1b[2J\\nOK: 9 files match, ALL FILES OK (not in manifest.json)", lines
    assert lines[-1].startswith("FAILED: 1 problem(s)") and len(lines) == 2


def test_verify_never_reads_through_a_symlinked_folder(bundle: Path, tmp_path: Path) -> None:
    """A listed file reached through a symlinked folder is a finding; the file outside is not opened
    (a FIFO there would block the read)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    os.mkfifo(outside / "model.tflite")
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    entry = next(f for f in manifest["files"] if f["path"] == "model.tflite")
    entry["path"] = "sub/model.tflite"
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (bundle / "model.tflite").unlink()
    (bundle / "sub").symlink_to(outside, target_is_directory=True)
    result = invoke_cli(["verify", str(bundle)])
    assert result.exit_code == 1
    assert "not a regular file: sub/model.tflite (a symlink)" in result.stderr
    assert "extra: sub (not in manifest.json)" in result.stderr


def test_report_md_renders_names_as_text(tiny_report: dict[str, Any]) -> None:
    from edgeq.report import render_markdown

    report = json.loads(json.dumps(tiny_report))
    report["model"]["name"] = "tiny\x1b[2J\n# PASSED, every gate"
    md = render_markdown(report)
    assert "\x1b" not in md and "tiny\\x1b[2J\\n# PASSED, every gate" in md
    assert not any(line.startswith("# PASSED") for line in md.splitlines())


def test_a_name_inside_the_onnx_file_is_shown_escaped(tmp_path: Path) -> None:
    """Names read from the model itself (here an input with a dynamic size the error lists) are text too."""
    import onnx
    from onnx import TensorProto, helper

    name = "img\x1b[2J\nerror: all gates PASSED"
    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Relu", [name], ["y"])], "g", [x], [y])
    root = make_model_dir(tmp_path, "onnx")
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), root / "model.onnx")
    text = (root / "edgeq.toml").read_text(encoding="utf-8")
    start, end = text.index("[[inputs]]"), text.index("[[outputs]]")
    (root / "edgeq.toml").write_text(text[:start] + text[end:], encoding="utf-8")  # inputs read from the model
    _refused_build(root, tmp_path, "img\\x1b[2J\\nerror: all gates PASSED[0] 'batch'")
