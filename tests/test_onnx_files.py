"""ONNX files as untrusted input: external data must stay inside the model folder, be a plain
file of the right length, and size limits are checked before parsing. Each hostile case: exit 2,
one line naming the problem, --out untouched, no staging left, the file outside untouched."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest
from conftest import invoke_cli, make_fake_bundle, make_model_dir, snapshot, staging_leftovers

from edgeq.errors import ModelError
from edgeq.onnx_files import MAX_PROTOBUF, check_onnx_file, check_size, load_onnx_checked

WEIGHTS = "weights.bin"


def _externalize(model_dir: Path) -> onnx.ModelProto:
    """model.onnx rewritten with every initializer in weights.bin (what exporters do for big models)."""
    path = model_dir / "model.onnx"
    model = onnx.load_model(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=WEIGHTS,
                    size_threshold=0)
    return onnx.load_model(str(path), load_external_data=False)


def _set_location(model_dir: Path, location: str, length: int | None = None) -> None:
    path = model_dir / "model.onnx"
    model = onnx.load_model(str(path), load_external_data=False)
    t = next(t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    for e in t.external_data:
        if e.key == "location":
            e.value = location
        if e.key == "length" and length is not None:
            e.value = str(length)
    path.write_bytes(model.SerializeToString())


@pytest.fixture
def ext_dir(tmp_path: Path) -> Path:
    d = make_model_dir(tmp_path, "onnx")
    _externalize(d)
    return d


def test_external_data_is_read_into_the_model(ext_dir: Path) -> None:
    inline = load_onnx_checked(ext_dir / "model.onnx")
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in inline.graph.initializer)
    assert sum(len(t.raw_data) for t in inline.graph.initializer) == (ext_dir / WEIGHTS).stat().st_size
    onnx.checker.check_model(inline, full_check=True)


def _canary(tmp_path: Path) -> Path:
    canary = tmp_path / "canary.bin"
    canary.write_bytes(b"\0" * 4096)
    return canary


def _hostile(kind: str, d: Path, tmp_path: Path) -> str:
    """Make ``d`` hostile in one way; return what the error must say."""
    canary = _canary(tmp_path)
    if kind == "dotdot":
        _set_location(d, "../canary.bin")
        return "which leaves the model's folder ('..')"
    if kind == "nested":
        (d / "sub").mkdir()
        _set_location(d, "sub/../../canary.bin")
        return "which leaves the model's folder ('..')"
    if kind == "absolute":
        _set_location(d, str(canary))
        return "an absolute path; external data must be a file in the model's folder"
    if kind == "symlink":
        (d / "link.bin").symlink_to(canary)
        _set_location(d, "link.bin")
        return "which goes through a symlink"
    if kind == "symlinked-dir":
        (d / "dir").symlink_to(tmp_path)
        _set_location(d, "dir/canary.bin")
        return "which goes through a symlink"
    if kind == "hardlink":
        os.link(canary, d / "hard.bin")
        _set_location(d, "hard.bin")
        return "a file with 2 hard links; copy it (cp, not ln) so it has one"
    if kind == "truncated":
        data = (d / WEIGHTS).read_bytes()
        (d / WEIGHTS).write_bytes(data[: len(data) // 2])
        return "(the file is truncated)"
    if kind == "missing":
        (d / WEIGHTS).unlink()
        return "which does not exist; put the external data file next to the model"
    if kind == "length":
        _set_location(d, WEIGHTS, length=3)
        return "but its shape needs"
    if kind == "not-a-file":
        (d / "folder").mkdir()
        _set_location(d, "folder")
        return "which is not a regular file"
    raise AssertionError(kind)


KINDS = ["dotdot", "nested", "absolute", "symlink", "symlinked-dir", "hardlink", "truncated", "missing", "length",
         "not-a-file"]


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_external_data_is_refused_before_any_work(kind: str, ext_dir: Path, tmp_path: Path) -> None:
    message = _hostile(kind, ext_dir, tmp_path)
    canary_before = (tmp_path / "canary.bin").read_bytes()
    out = make_fake_bundle(tmp_path / "dist" / "bundle")
    before = snapshot(out)
    result = invoke_cli(["build", str(ext_dir), "--out", str(out), "--runtime", "litert"])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert message in result.stderr and "model.onnx: tensor '" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(out) == before
    assert staging_leftovers(out.parent) == []
    assert (tmp_path / "canary.bin").read_bytes() == canary_before


def test_hostile_external_data_is_refused_by_the_loader_too(ext_dir: Path, tmp_path: Path) -> None:
    """The export stage's loader checks again (a file could change between the checks and the stage)."""
    _hostile("dotdot", ext_dir, tmp_path)
    with pytest.raises(ModelError, match="leaves the model's folder"):
        load_onnx_checked(ext_dir / "model.onnx")


def test_size_limits_are_checked_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 2 GB checks use the sizes the file system reports; tested with a smaller limit, not a 2 GB file."""
    d = make_model_dir(tmp_path, "onnx")
    monkeypatch.setattr("edgeq.onnx_files.MAX_PROTOBUF", 1000)
    with pytest.raises(ModelError, match=r"model file model.onnx is \d+ bytes, over the 2 GB protobuf limit"):
        check_size(d / "model.onnx")
    model = _externalize(d)
    size = (d / "model.onnx").stat().st_size
    largest = max(int(next(e.value for e in t.external_data if e.key == "length")) for t in model.graph.initializer)
    assert (d / WEIGHTS).stat().st_size + size > max(size, largest) + 1
    monkeypatch.setattr("edgeq.onnx_files.MAX_PROTOBUF", max(size, largest) + 1)  # each part fits, not the sum
    with pytest.raises(ModelError, match=r"with its external data is .* bytes, over the 2 GB protobuf limit"):
        check_onnx_file(d / "model.onnx")
    assert MAX_PROTOBUF == 2**31 - 1


def test_a_sparse_huge_file_is_refused_by_size_without_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.onnx"
    with open(big, "wb") as f:
        f.truncate(MAX_PROTOBUF + 1)  # sparse: no 2 GB written to disk
    with pytest.raises(ModelError, match="over the 2 GB protobuf limit"):
        check_onnx_file(big)


@pytest.mark.parametrize("data", [b"", b"\x00" * 64, os.urandom(256), b"\x08\x07" + b"garbage" * 10])
def test_truncated_or_random_bytes_are_not_an_onnx_model(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelError, match=r"model\.onnx (is not a readable ONNX file|has an empty graph)"):
        check_onnx_file(path)


def test_a_truncated_real_model_is_refused(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path, "onnx")
    data = (d / "model.onnx").read_bytes()
    (d / "model.onnx").write_bytes(data[: len(data) // 3])
    result = invoke_cli(["build", str(d), "--out", str(tmp_path / "out"), "--runtime", "litert"])
    assert result.exit_code == 2
    assert "model.onnx" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_task_output_the_model_does_not_have(tmp_path: Path) -> None:
    from conftest import DELETE

    d = make_model_dir(tmp_path, "onnx", outputs=DELETE, task={"output": "scores"})
    result = invoke_cli(["build", str(d), "--out", str(tmp_path / "out"), "--runtime", "litert"])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "[task].output 'scores' is not an output of model.onnx; its outputs: logits" in result.stderr
    assert not (tmp_path / "out").exists()


def test_pytorch_weights_over_the_2gb_limit_are_refused_by_size(tmp_path: Path) -> None:
    d = make_model_dir(tmp_path)
    with open(d / "weights.safetensors", "r+b") as f:
        f.truncate(MAX_PROTOBUF + 1)  # sparse: nothing written, nothing read
    result = invoke_cli(["build", str(d), "--out", str(tmp_path / "out"), "--runtime", "litert"])
    assert result.exit_code == 2
    assert "weights file weights.safetensors is 2147483648 bytes, over the 2 GB protobuf limit" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_weights_a_tflite_cannot_hold_are_refused_before_the_onnx_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exported model's tensors are added up before float.onnx is written or anything converted
    (tested with a smaller limit: TinyNet's weights are about 3 KB)."""
    d = make_model_dir(tmp_path)
    monkeypatch.setattr("edgeq.onnx_files.MAX_FLATBUFFER", 1000)
    out = make_fake_bundle(tmp_path / "dist" / "bundle")
    before = snapshot(out)
    keep = tmp_path / "keep"
    result = invoke_cli(["build", str(d), "--out", str(out), "--runtime", "litert", "--keep-build", str(keep)])
    assert result.exit_code == 2
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    line = errors[0]
    assert "model.py: the model's tensors come to" in line and "over the 2 GB limit of a .tflite flatbuffer" in line
    assert snapshot(out) == before and staging_leftovers(out.parent) == []
    assert not (keep / "model.float.onnx").exists() and not (keep / "model.int8.tflite").exists()
