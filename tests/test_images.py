"""Calibration and eval data from image folders (with the preprocessing declared in edgeq.toml)
and from .npz archives; seeded subsets; bad images and archives refused with one line."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASS_NAMES, INPUT, SHAPE, invoke_cli, make_fake_bundle, make_model_dir, snapshot, staging_leftovers
from PIL import Image

from edgeq.config import InputSpec
from edgeq.errors import DataError
from edgeq.images import NpzSource, Preprocess, open_source

PRE = {"scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def _spec(layout: str = "NCHW", **pre: object) -> InputSpec:
    shape = (1, 3, 4, 4) if layout == "NCHW" else (1, 4, 4, 3)
    return InputSpec("image", shape, "float32", layout, dict(pre))


def _png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def test_preprocessing_is_exact_for_each_layout_and_channel_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 4, 3))
    path = _png(tmp_path / "a.png", pixels)
    want = (pixels.astype(np.float32) / 255 - 0.5) / 0.25
    nchw = Preprocess.of(_spec("NCHW", **PRE))(path)
    nhwc = Preprocess.of(_spec("NHWC", **PRE))(path)
    np.testing.assert_allclose(nchw[0], want.transpose(2, 0, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nhwc[0], want, rtol=1e-5, atol=1e-6)
    bgr = Preprocess.of(_spec("NHWC", channel_order="BGR", **PRE))(path)
    np.testing.assert_allclose(bgr[0], want[:, :, ::-1], rtol=1e-5, atol=1e-6)


def test_resize_then_centre_crop(tmp_path: Path) -> None:
    pixels = np.arange(8 * 8 * 3).reshape(8, 8, 3) % 256
    path = _png(tmp_path / "a.png", pixels)
    x = Preprocess.of(_spec("NHWC", resize=[8, 8], crop=[4, 4], scale=1.0))(path)
    np.testing.assert_array_equal(x[0], pixels[2:6, 2:6].astype(np.float32))


@pytest.mark.parametrize(("pre", "message"), [
    ({"flip": True}, "unknown key(s) ['flip']"),
    ({"resize": [4]}, "resize must be [height, width]"),
    ({"resize": [8, 8]}, "images come out 8x8 but the input is 4x4"),
    ({"resize": [4, 4], "crop": [6, 6]}, "images come out 6x6"),
    ({"resize": [3, 3], "crop": [4, 4]}, "crop [4, 4] is larger than resize [3, 3]"),
    ({"channel_order": "L"}, "channel_order 'L' does not fit 3 channels"),
    ({"std": [1, 0, 1]}, "std must be 3 finite numbers (no zero)"),
    ({"mean": [1, 2]}, "mean must be 3 finite numbers"),
    ({"scale": 0}, "scale must be a non-zero number"),
])
def test_bad_preprocessing_is_refused(pre: dict, message: str) -> None:
    with pytest.raises(DataError) as e:
        Preprocess.of(_spec(**pre))
    assert message in str(e.value)


def _image_model_dir(tmp_path: Path, n_cal: int = 24, per_class_eval: int = 0, **overrides: object) -> Path:
    """TinyNet fed from PNG folders: eval images sorted into the class their float top-1 names."""
    from conftest import tiny_logits

    d = make_model_dir(tmp_path, inputs=[{"name": INPUT, "shape": list(SHAPE), "layout": "NCHW", "preprocessing": PRE}],
                       data={"calibration": "images/calibration", "eval": "images/eval"}, **overrides)
    rng = np.random.default_rng(1)
    pre = Preprocess.of(InputSpec(INPUT, SHAPE, "float32", "NCHW", PRE))
    for k in range(n_cal):
        _png(d / "images" / "calibration" / f"c{k:03d}.png", rng.integers(0, 256, (8, 8, 3)))
    tmp = d / "tmp.png"
    for k in range(32):
        pixels = rng.integers(0, 256, (8, 8, 3))
        _png(tmp, pixels)
        label = int(tiny_logits(pre(tmp)).argmax())
        _png(d / "images" / "eval" / CLASS_NAMES[label] / f"e{k:03d}.png", pixels)
    tmp.unlink()
    shutil.rmtree(d / "data")
    return d


def test_a_build_from_image_folders(tmp_path: Path) -> None:
    d = _image_model_dir(tmp_path)
    out = tmp_path / "out"
    result = invoke_cli(["build", str(d), "--out", str(out), "--runtime", "litert", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["reference"]["samples"] == 32
    assert report["reference"]["metrics"]["top1_accuracy"] == 1.0  # labels from the folders = the float top-1
    model = json.loads((out / "model.json").read_text())
    assert model["inputs"][0]["preprocessing"] == PRE  # the app does the same
    assert report["passed"]


def test_a_seeded_subset_of_a_large_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cal"
    for k in range(30):
        _png(folder / f"{k:02d}.png", np.full((4, 4, 3), k))
    spec = _spec(**PRE)

    def files(seed: int | None) -> list[str]:
        src = open_source(folder, (spec,), "calibration", class_names=None, limit=10, seed=seed)
        return [p.name for p in src.files]  # type: ignore[union-attr]

    assert files(None) == [f"{k:02d}.png" for k in range(10)]
    assert files(3) == files(3) and files(3) != files(4) and len(set(files(3))) == 10
    src = open_source(folder, (spec,), "calibration", class_names=None, limit=10, seed=3)
    out = src.materialize(tmp_path / "m")  # type: ignore[union-attr]
    arr = np.load(out / "image.npy", mmap_mode="r")
    assert arr.shape == (10, 3, 4, 4) and arr.dtype == np.float32


def _refused(d: Path, tmp_path: Path, message: str) -> None:
    out = make_fake_bundle(tmp_path / "dist" / "bundle")
    before = snapshot(out)
    result = invoke_cli(["build", str(d), "--out", str(out), "--runtime", "litert"])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert snapshot(out) == before and staging_leftovers(out.parent) == []


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    return _image_model_dir(tmp_path, n_cal=6)


def test_an_unreadable_image_is_named(image_dir: Path, tmp_path: Path) -> None:
    (image_dir / "images" / "calibration" / "c001.png").write_bytes(b"\x89PNG not really")
    _refused(image_dir, tmp_path, "c001.png is not a readable image")


def test_an_eval_image_outside_a_class_folder(image_dir: Path, tmp_path: Path) -> None:
    _png(image_dir / "images" / "eval" / "stray.png", np.zeros((8, 8, 3)))
    _refused(image_dir, tmp_path, "stray.png is not in a class folder")


def test_an_unknown_class_folder(image_dir: Path, tmp_path: Path) -> None:
    _png(image_dir / "images" / "eval" / "triangle" / "x.png", np.zeros((8, 8, 3)))
    _refused(image_dir, tmp_path, "folder 'triangle' is not a class in labels.txt")


def test_constant_calibration_images(image_dir: Path, tmp_path: Path) -> None:
    for p in (image_dir / "images" / "calibration").iterdir():
        _png(p, np.full((8, 8, 3), 7))
    _refused(image_dir, tmp_path, "a constant input gives nothing to calibrate on")


# -- .npz ---------------------------------------------------------------------------------------


def _npz_dir(tmp_path: Path) -> Path:
    d = make_model_dir(tmp_path, data={"calibration": "cal.npz", "eval": "eval.npz"})
    np.savez(d / "cal.npz", image=np.load(d / "data" / "calibration" / "image.npy"))
    np.savez_compressed(d / "eval.npz", image=np.load(d / "data" / "eval" / "image.npy"),
                        labels=np.load(d / "data" / "eval" / "labels.npy"))
    shutil.rmtree(d / "data")
    return d


def test_a_build_from_npz_archives(tmp_path: Path) -> None:
    d = _npz_dir(tmp_path)
    result = invoke_cli(["build", str(d), "--out", str(tmp_path / "out"), "--runtime", "litert", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["reference"]["samples"] == 32


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: np.savez(p, image=np.array([{"x": 1}] * 3, dtype=object)), "holds Python objects (pickle)"),
    (lambda p: np.savez(p, image=np.zeros((24, 3, 8, 8), np.float32), extra=np.zeros(3)),
     "holds arrays ['extra'] that name no input"),
    (lambda p: p.write_bytes(b"PK\x03\x04 truncated"), "is not a readable .npz"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("../image.npy", b"x"), "an .npz holds NAME.npy arrays only"),
])
def test_bad_npz_is_refused(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    d = _npz_dir(tmp_path)
    (d / "cal.npz").unlink()
    make(d / "cal.npz")
    _refused(d, tmp_path, message)


def test_npz_header_only_is_read_when_checking(tmp_path: Path) -> None:
    d = _npz_dir(tmp_path)
    src = NpzSource.open(d / "cal.npz", (InputSpec(INPUT, SHAPE, "float32", "NCHW"),), "calibration")
    assert src.members == {"image": "image.npy"}
