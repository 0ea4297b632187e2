"""Keras (.keras) and TF SavedModel inputs, converted to ONNX with tf2onnx in a child process; and
.keras files as untrusted input: Lambda layers, configs naming other modules, legacy .h5, bytes
that are not a .keras archive. Each refusal: exit 2, one line, --out untouched, canary untouched."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
from conftest import invoke_cli, make_fake_bundle, snapshot, staging_leftovers
from tf_models import make_tf_dir

HOST = ["--runtime", "litert"]  # these tests are about the input formats, not the runtimes


@pytest.mark.parametrize("kind", ["keras", "saved_model"])
def test_keras_and_saved_model_build_and_pass(kind: str, tmp_path: Path) -> None:
    d = make_tf_dir(tmp_path, kind)
    out = tmp_path / "out"
    result = invoke_cli(["build", str(d), "--out", str(out), "--json", *HOST])
    assert result.exit_code == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["model"]["format"] == kind and report["passed"]
    shipped = report["artifacts"]["tflite_int8"]["runtimes"]["litert"]["task"]
    assert shipped["top1_agreement"] >= 0.9
    assert report["artifacts"]["tflite_int8"]["inspection"]["model"]["int8_compute_ops"] >= 2  # conv + dense
    model = json.loads((out / "model.json").read_text())
    assert [i["name"] for i in model["inputs"]] == ["image"] and model["inputs"][0]["shape"] == [1, 8, 8, 3]


def _refused(d: Path, tmp_path: Path, message: str, *extra: str, in_stage: bool = False) -> None:
    """Exit 2, one error line with ``message``, --out untouched, no staging left. Refused by the input
    checks: stderr is that line alone; ``in_stage``: found by a stage, after its progress lines."""
    out = make_fake_bundle(tmp_path / "dist" / "bundle")
    before = snapshot(out)
    result = invoke_cli(["build", str(d), "--out", str(out), *HOST, *extra])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len([ln for ln in lines if ln.startswith("error:")]) == 1 and lines[-1].startswith("error:")
    assert in_stage or len(lines) == 1
    assert snapshot(out) == before and staging_leftovers(out.parent) == []


def test_a_lambda_layer_is_refused_and_its_code_never_runs(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    d = make_tf_dir(tmp_path, "lambda", canary)
    assert not canary.exists()
    _refused(d, tmp_path, "layer 'sneaky' is a Lambda layer, whose Python code would run when it loads")
    assert not canary.exists()


def _rewrite_config(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    cfg = json.loads(members["config.json"])
    edit(cfg)
    members["config.json"] = json.dumps(cfg).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)


@pytest.mark.parametrize(("module", "name"), [("os", "system"), ("subprocess", "check_call"), ("builtins", "eval")])
def test_a_config_naming_other_modules_is_refused_even_with_trust(tmp_path: Path, module: str, name: str) -> None:
    canary = tmp_path / "canary"
    d = make_tf_dir(tmp_path)

    def poison(cfg: dict) -> None:
        conv = cfg["config"]["layers"][1]["config"]
        conv["activation"] = {"module": module, "class_name": name, "config": f"touch {canary}", "registered_name": None}

    _rewrite_config(d / "model.keras", poison)
    for extra in ((), ("--trust-model",)):
        _refused(d, tmp_path / ("t" if extra else "u"), f"config.json names '{module}.{name}' (module '{module}')", *extra)
    assert not canary.exists()


def test_a_custom_object_is_refused_without_trust(tmp_path: Path) -> None:
    d = make_tf_dir(tmp_path)

    def custom(cfg: dict) -> None:
        cfg["config"]["layers"][1]["registered_name"] = "MyPackage>FancyConv"

    _rewrite_config(d / "model.keras", custom)
    _refused(d, tmp_path, "'MyPackage>FancyConv' is a custom object")


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is not a .keras file (not a zip archive)"),
    (os.urandom(512), "is not a .keras file (not a zip archive)"),
    ("truncate", "model.keras"),
])
def test_bytes_that_are_not_a_keras_file(tmp_path: Path, content: bytes | str, message: str) -> None:
    d = make_tf_dir(tmp_path)
    path = d / "model.keras"
    if content == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)  # type: ignore[arg-type]
    _refused(d, tmp_path, message)


def test_legacy_h5_is_refused_with_the_fix(tmp_path: Path) -> None:
    d = make_tf_dir(tmp_path)
    (d / "model.keras").rename(d / "model.h5")
    cfg = (d / "edgeq.toml").read_text().replace('"model.keras"', '"model.h5"')
    (d / "edgeq.toml").write_text(cfg)
    _refused(d, tmp_path, "model.h5 is a legacy HDF5 Keras file")
    out = invoke_cli(["build", str(d), "--out", str(tmp_path / "x"), *HOST])
    assert "re-save with model.save('model.keras')" in out.stderr


def test_a_saved_model_with_a_symlink_is_refused(tmp_path: Path) -> None:
    d = make_tf_dir(tmp_path, "saved_model")
    (d / "saved" / "assets").mkdir(exist_ok=True)
    (d / "saved" / "assets" / "vocab.txt").symlink_to("/etc/hostname")
    _refused(d, tmp_path, "is a symlink; a SavedModel must be plain files")


@pytest.mark.parametrize("damage", ["random", "truncate", "empty"])
def test_a_saved_model_pb_that_is_not_one_is_refused(tmp_path: Path, damage: str) -> None:
    d = make_tf_dir(tmp_path, "saved_model")
    pb = d / "saved" / "saved_model.pb"
    data = pb.read_bytes()
    pb.write_bytes({"random": os.urandom(512), "truncate": data[: len(data) // 2], "empty": b""}[damage])
    _refused(d, tmp_path, "saved/saved_model.pb")  # read before TensorFlow loads it (edgeq.saved_model_ops)


def test_a_saved_model_over_the_2gb_limit_is_refused_by_size(tmp_path: Path) -> None:
    d = make_tf_dir(tmp_path, "saved_model")
    variables = next((d / "saved" / "variables").glob("*.data-*"))
    with open(variables, "r+b") as f:
        f.truncate(2**31)  # sparse: nothing written, nothing read
    _refused(d, tmp_path, "bytes, over the 2 GB limit of an ONNX model and a .tflite file")
