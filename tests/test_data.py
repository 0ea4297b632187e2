"""edgeq.data: calibration/eval folders are checked up front and read one sample at a time."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgeq.config import InputSpec
from edgeq.data import ArrayDataset
from edgeq.errors import DataError

IMAGE = InputSpec("image", (1, 3, 4, 4), "float32", "NCHW")
PAIR = InputSpec("pair", (2, 3, 4, 4), "float32", "NCHW")  # batch 2: two rows per sample
MASK = InputSpec("mask", (1, 5), "float32", "NC")
WIDE = InputSpec("x", (1, 4), "float32", "NC")


def _images(n: int, dtype: type = np.float32, shape: tuple[int, ...] = (3, 4, 4)) -> np.ndarray:
    return np.arange(n * int(np.prod(shape)), dtype=np.float64).reshape(n, *shape).astype(dtype)


def files(_dir: str = "set", **arrays: np.ndarray | bytes) -> Callable[[Path], Path]:
    """A folder ``_dir`` holding ``<name>.npy`` per keyword (an array, or raw bytes)."""

    def make(tmp: Path) -> Path:
        folder = tmp / _dir
        folder.mkdir()
        for name, value in arrays.items():
            if isinstance(value, np.ndarray):
                np.save(folder / f"{name}.npy", value)
            else:
                (folder / f"{name}.npy").write_bytes(value)
        return folder

    return make


def _with(arr: np.ndarray, row: int, value: float) -> np.ndarray:
    arr = arr.copy()
    arr[row].flat[0] = value
    return arr


def _missing(tmp: Path) -> Path:
    return tmp / "nowhere"


def _a_file(tmp: Path) -> Path:
    (tmp / "set").write_text("x")
    return tmp / "set"


def _pickled_objects(tmp: Path) -> Path:
    folder = tmp / "set"
    folder.mkdir()
    np.save(folder / "image.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return folder


def _truncated(tmp: Path) -> Path:
    folder = files(image=_images(10))(tmp)
    data = (folder / "image.npy").read_bytes()
    (folder / "image.npy").write_bytes(data[:300])
    return folder


# (folder maker, inputs, want_labels, message fragment)
BAD_SETS = [
    pytest.param(_missing, (IMAGE,), False, "calibration data folder", id="missing-folder"),
    pytest.param(_a_file, (IMAGE,), False, "is not a folder", id="folder-is-a-file"),
    pytest.param(files(), (IMAGE,), False, "image.npy missing in", id="missing-input-npy"),
    pytest.param(
        files(image=_images(4), mask=_images(4, shape=(5,))),
        (IMAGE,),
        False,
        "mask.npy matches no model input (inputs: image); rename or remove it",
        id="unknown-npy",
    ),
    pytest.param(
        files(image=_images(4, shape=(3, 4))),
        (IMAGE,),
        False,
        "image.npy has shape [4, 3, 4], input 'image' needs [N, 3, 4, 4]",
        id="wrong-rank",
    ),
    pytest.param(
        files(image=_images(4, shape=(4, 4, 3))),
        (IMAGE,),
        False,
        "has shape [4, 4, 4, 3]",
        id="channels-last-data",
    ),
    pytest.param(
        files(image=_images(4, np.float64)),
        (IMAGE,),
        False,
        "image.npy is float64, input 'image' is float32; save it with .astype(np.float32)",
        id="float64",
    ),
    pytest.param(files(image=_images(4, np.uint8)), (IMAGE,), False, "image.npy is uint8", id="uint8"),
    pytest.param(
        files(pair=_images(5)),
        (PAIR,),
        False,
        "has 5 rows, not a multiple of the batch size 2",
        id="rows-not-multiple-of-batch",
    ),
    pytest.param(
        files(image=_images(4), mask=_images(3, shape=(5,))),
        (IMAGE, MASK),
        False,
        "mask.npy has 3 samples but image.npy has 4",
        id="different-sample-counts",
    ),
    pytest.param(files(image=_images(0)), (IMAGE,), False, "has no samples", id="zero-samples"),
    pytest.param(
        files(image=_with(_images(6), 4, np.nan)),
        (IMAGE,),
        False,
        "image.npy has NaN values (first at row 4)",
        id="nan",
    ),
    pytest.param(
        files(image=_with(_images(6), 2, -np.inf)),
        (IMAGE,),
        False,
        "has inf values (first at row 2)",
        id="inf",
    ),
    pytest.param(
        files(x=_with(_images(600, shape=(4,)), 513, np.nan)),
        (WIDE,),
        False,
        "first at row 513",
        id="nan-past-the-first-chunk",
    ),
    pytest.param(
        files(image=b"this is not a numpy file at all"),
        (IMAGE,),
        False,
        "is not a readable .npy file",
        id="corrupt-bytes",
    ),
    pytest.param(files(image=b""), (IMAGE,), False, "is not a readable .npy file", id="empty-file"),
    pytest.param(_truncated, (IMAGE,), False, "is not a readable .npy file", id="truncated"),
    pytest.param(_pickled_objects, (IMAGE,), False, "is not a readable .npy file", id="pickled-objects"),
    pytest.param(files(image=_images(4)), (IMAGE,), True, "labels.npy missing", id="missing-labels"),
    pytest.param(
        files(image=_images(4), labels=np.zeros(4, np.float32)),
        (IMAGE,),
        True,
        "labels.npy must be a 1-D integer array, got float32 [4]",
        id="labels-float",
    ),
    pytest.param(
        files(image=_images(4), labels=np.zeros((4, 1), np.int64)),
        (IMAGE,),
        True,
        "must be a 1-D integer array, got int64 [4, 1]",
        id="labels-2d",
    ),
    pytest.param(
        files(image=_images(4), labels=np.zeros(5, np.int64)),
        (IMAGE,),
        True,
        "has 5 labels for 4 samples",
        id="labels-too-many",
    ),
    pytest.param(
        files(pair=_images(4), labels=np.zeros(2, np.int64)),
        (PAIR,),
        True,
        "has 2 labels for 4 samples",
        id="labels-one-per-row-not-per-batch",
    ),
    pytest.param(
        files(image=_images(4), labels=b"garbage"),
        (IMAGE,),
        True,
        "labels.npy is not a readable .npy file",
        id="labels-corrupt",
    ),
]


@pytest.mark.parametrize(("make", "inputs", "want_labels", "fragment"), BAD_SETS)
def test_bad_data_is_refused_with_one_line(
    tmp_path: Path, make, inputs, want_labels: bool, fragment: str
) -> None:
    folder = make(tmp_path)
    with pytest.raises(DataError) as info:
        ArrayDataset.open(folder, inputs, "calibration", want_labels=want_labels)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_role_names_the_set_in_messages(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^eval data: image.npy missing"):
        ArrayDataset.open(files()(tmp_path), (IMAGE,), "eval")


def test_first_non_finite_value_is_named_by_its_own_kind(tmp_path: Path) -> None:
    arr = _with(_with(_images(6), 1, np.inf), 4, np.nan)
    with pytest.raises(DataError, match=r"has inf values \(first at row 1\)"):
        ArrayDataset.open(files(image=arr)(tmp_path), (IMAGE,), "calibration")


def test_arrays_are_memory_mapped_and_samples_are_copies(tmp_path: Path) -> None:
    data = _images(5)
    ds = ArrayDataset.open(files(image=data)(tmp_path), (IMAGE,), "calibration")
    assert isinstance(ds.arrays["image"], np.memmap)
    assert len(ds) == 5 and ds.labels is None
    s = ds.sample(3)
    assert list(s) == ["image"]
    assert type(s["image"]) is np.ndarray and s["image"].shape == (1, 3, 4, 4)
    np.testing.assert_array_equal(s["image"], data[3:4])
    s["image"][:] = -1  # a fresh array: writing to it changes neither the data set nor the file
    np.testing.assert_array_equal(ds.sample(3)["image"], data[3:4])
    rows = [x["image"] for x in ds]
    assert len(rows) == 5
    np.testing.assert_array_equal(np.concatenate(rows), data)


def test_batched_input_takes_batch_rows_per_sample(tmp_path: Path) -> None:
    data = _images(6)
    labels = np.array([0, 1, 2, 3, 4, 5], np.int32)
    ds = ArrayDataset.open(files(pair=data, labels=labels)(tmp_path), (PAIR,), "eval", want_labels=True)
    assert len(ds) == 3
    np.testing.assert_array_equal(ds.sample(1)["pair"], data[2:4])
    assert ds.sample_labels().dtype == np.int64
    np.testing.assert_array_equal(ds.sample_labels(), labels)


def test_two_inputs_are_read_in_step(tmp_path: Path) -> None:
    img, mask = _images(3), _images(3, shape=(5,))
    ds = ArrayDataset.open(files(image=img, mask=mask)(tmp_path), (IMAGE, MASK), "eval")
    s = ds.sample(2)
    np.testing.assert_array_equal(s["image"], img[2:3])
    np.testing.assert_array_equal(s["mask"], mask[2:3])


def test_limit_caps_samples_and_the_finite_check(tmp_path: Path) -> None:
    # rows past the limit are never read, so a NaN there is not an error
    data = _with(_images(6), 5, np.nan)
    labels = np.arange(6, dtype=np.uint8)
    ds = ArrayDataset.open(
        files(image=data, labels=labels)(tmp_path), (IMAGE,), "eval", want_labels=True, limit=2
    )
    assert len(ds) == 2 and len(list(ds)) == 2
    np.testing.assert_array_equal(ds.sample_labels(), [0, 1])
    big = ArrayDataset.open(files("big", image=_images(3))(tmp_path), (IMAGE,), "calibration", limit=10)
    assert len(big) == 3


def test_sample_labels_without_labels_is_an_error(tmp_path: Path) -> None:
    ds = ArrayDataset.open(files(image=_images(2))(tmp_path), (IMAGE,), "calibration")
    with pytest.raises(DataError, match=r"has no labels\.npy"):
        ds.sample_labels()


def test_sha256_is_stable_and_covers_every_file(tmp_path: Path) -> None:
    folder = files(image=_images(4), labels=np.arange(4))(tmp_path)
    first = ArrayDataset.open(folder, (IMAGE,), "eval", want_labels=True).sha256()
    assert first == ArrayDataset.open(folder, (IMAGE,), "eval", want_labels=True).sha256()

    expected = hashlib.sha256()
    for name in ("image", "labels"):
        expected.update(name.encode() + b"\0")
        expected.update((folder / f"{name}.npy").read_bytes())
    assert first == expected.hexdigest()

    moved = shutil.copytree(folder, tmp_path / "moved")  # the hash is of contents, not of where they are
    assert ArrayDataset.open(moved, (IMAGE,), "eval", want_labels=True).sha256() == first

    np.save(moved / "labels.npy", np.array([0, 1, 2, 2]))
    assert ArrayDataset.open(moved, (IMAGE,), "eval", want_labels=True).sha256() != first
    without_labels = ArrayDataset.open(
        files("nolabels", image=_images(4))(tmp_path), (IMAGE,), "eval"
    ).sha256()
    assert without_labels != first


def test_labels_beside_calibration_inputs_are_ignored(tmp_path: Path) -> None:
    """One folder may serve as both sets: labels.npy is read only where labels are wanted."""
    ds = ArrayDataset.open(files(image=_images(4), labels=np.zeros(4, np.int64))(tmp_path), (IMAGE,), "calibration")
    assert len(ds) == 4 and ds.labels is None


# --- inputs of any rank; samples on a new first axis ----------------------------------------------

SR = InputSpec("sr", (), "int32", "")
GAIN = InputSpec("gain", (), "float32", "")
STATE = InputSpec("state", (2, 1, 8), "float32", "DNC")


def test_a_scalar_input_takes_one_value_per_sample(tmp_path: Path) -> None:
    folder = files(sr=np.array([8000, 16000, 16000], np.int32), gain=np.array([0.5, 1.0, 2.0], np.float32))(tmp_path)
    ds = ArrayDataset.open(folder, (SR, GAIN), "calibration")
    assert len(ds) == 3
    sample = ds.sample(1)
    assert sample["sr"].shape == () and sample["sr"] == 16000 and sample["sr"].dtype == np.int32
    assert sample["gain"].shape == () and sample["gain"] == 1.0


def test_samples_may_be_stacked_on_a_new_first_axis(tmp_path: Path) -> None:
    """A state [2, 1, 8] whose first axis is not a batch: its data file is [N, 2, 1, 8]."""
    states = np.arange(4 * 16, dtype=np.float32).reshape(4, 2, 1, 8)
    folder = files(state=states, image=_images(4).reshape(4, 1, 3, 4, 4))(tmp_path)
    ds = ArrayDataset.open(folder, (STATE, IMAGE), "eval")
    assert len(ds) == 4
    np.testing.assert_array_equal(ds.sample(3)["state"], states[3])
    np.testing.assert_array_equal(ds.sample(2)["image"], _images(4)[2:3])


@pytest.mark.parametrize(("array", "spec", "fragment"), [
    (np.zeros((3, 1), np.int32), SR, "sr.npy has shape [3, 1], input 'sr' needs [N], one value per sample"),
    (np.zeros((3, 2, 8), np.float32), STATE, "state.npy has shape [3, 2, 8], input 'state' needs [N*2, 1, 8] or "
                                              "[N, 2, 1, 8]"),
])
def test_a_scalar_or_state_file_of_the_wrong_shape_is_refused(tmp_path: Path, array: np.ndarray, spec: InputSpec,
                                                              fragment: str) -> None:
    folder = files(**{spec.name: array})(tmp_path)
    with pytest.raises(DataError) as info:
        ArrayDataset.open(folder, (spec,), "calibration")
    assert fragment in str(info.value)
