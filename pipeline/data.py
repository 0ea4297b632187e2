"""Calibration and evaluation data readers.

A data set is a folder with one ``<input name>.npy`` per model input, and for evaluation of a
classifier a ``labels.npy`` of integer class ids, one per sample. Samples are stacked one of two
ways: on a new first axis (``[N, *shape]``: a scalar input's file is ``[N]``, one value per
sample), or along the input's own first axis (``[N * B, *shape[1:]]``: a model whose input has
batch size B takes B rows per sample). Arrays are memory-mapped and
read one sample at a time, so memory does not grow with the size of the set.

``ArrayDataset.open`` checks everything a stage would trip over later - names, shapes, dtypes,
sample counts, NaN/inf - and raises ``DataError`` with one line naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeq.config import InputSpec
from edgeq.errors import DataError
from edgeq.hashing import update_from_file
from edgeq.inputs.files import regular_file

__all__ = ["LABELS_FILE", "ArrayDataset", "check_token_ids"]

LABELS_FILE = "labels.npy"
_SCAN_ROWS = 256  # rows per chunk when scanning for NaN/inf


@dataclass
class ArrayDataset:
    """A checked data set: one memory-mapped array per model input, and the labels if wanted."""

    role: str
    folder: Path
    inputs: tuple[InputSpec, ...]
    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    count: int
    stacked: dict[str, bool] = field(default_factory=dict)  # input -> samples on a new first axis

    @classmethod
    def open(
        cls,
        folder: Path,
        inputs: tuple[InputSpec, ...],
        role: str,
        *,
        want_labels: bool = False,
        limit: int | None = None,
        also: tuple[str, ...] = (),
    ) -> ArrayDataset:
        """Open and check a data folder. ``role`` ("calibration" or "eval") is used in messages; ``also``
        names other .npy files a task reads from it (a detector's labelled boxes)."""
        folder = Path(folder)
        if not folder.exists():
            raise DataError(f"{role} data folder {str(folder)!r} does not exist; fix [data].{role} in edgeq.toml")
        if not folder.is_dir():
            raise DataError(
                f"{role} data {str(folder)!r} is not a folder; put one <input name>.npy per model input in a folder"
            )
        # labels.npy may sit beside the inputs even where it is not used (one folder for both sets).
        expected = {i.name for i in inputs} | {LABELS_FILE[:-4], *also}
        present = {p.stem: p for p in sorted(folder.glob("*.npy"))}
        for stem in sorted(set(present) - expected):
            raise DataError(
                f"{role} data: {present[stem].name} matches no model input (inputs: "
                f"{', '.join(i.name for i in inputs)}); rename or remove it"
            )
        arrays: dict[str, np.ndarray] = {}
        stacked: dict[str, bool] = {}  # samples on a new first axis (else B rows each)
        count: int | None = None
        count_from = ""
        for spec in inputs:
            path = folder / f"{spec.name}.npy"
            if not os.path.lexists(path):
                raise DataError(f"{role} data: {path.name} missing in {folder}; save input '{spec.name}' there with np.save")
            arr = _load(path, role)
            if arr.ndim == len(spec.shape) + 1 and tuple(arr.shape[1:]) == spec.shape:
                batch = 1  # one sample per row of a new first axis
            elif spec.shape and arr.ndim == len(spec.shape) and tuple(arr.shape[1:]) == spec.shape[1:]:
                batch = spec.shape[0]  # B rows of the input's own first axis per sample
            else:
                stacked_form = "[" + ", ".join(map(str, ["N", *spec.shape])) + "]"
                if spec.shape:
                    n = "N" if spec.shape[0] == 1 else f"N*{spec.shape[0]}"
                    rows_form = "[" + ", ".join(map(str, [n, *spec.shape[1:]])) + "]"
                    want = f"{rows_form} or {stacked_form}"
                else:
                    want = f"{stacked_form}, one value per sample"
                raise DataError(
                    f"{role} data: {path.name} has shape {list(arr.shape)}, input '{spec.name}' needs {want} "
                    f"(samples stacked on the first axis; the input is {list(spec.shape)})"
                )
            if arr.dtype != np.dtype(spec.dtype):
                raise DataError(
                    f"{role} data: {path.name} is {arr.dtype}, input '{spec.name}' is {spec.dtype}; "
                    f"save it with .astype(np.{spec.dtype})"
                )
            if arr.shape[0] % batch:
                raise DataError(
                    f"{role} data: {path.name} has {arr.shape[0]} rows, not a multiple of the batch size {batch}"
                )
            n = arr.shape[0] // batch
            if count is None:
                count, count_from = n, path.name
            elif n != count:
                raise DataError(
                    f"{role} data: {path.name} has {n} samples but {count_from} has {count}; "
                    "give every input the same samples"
                )
            arrays[spec.name] = arr
            stacked[spec.name] = batch == 1 and arr.ndim == len(spec.shape) + 1
        assert count is not None  # inputs is never empty (ModelSpec checks)
        if count == 0:
            raise DataError(f"{role} data in {folder} has no samples; add at least one")
        labels = None
        if want_labels:
            path = folder / LABELS_FILE
            if not os.path.lexists(path):
                raise DataError(
                    f"{role} data: {LABELS_FILE} missing in {folder}; save the integer class id of every sample there"
                )
            labels = _load(path, role)
            if labels.ndim != 1 or labels.dtype.kind not in "iu":
                raise DataError(
                    f"{role} data: {LABELS_FILE} must be a 1-D integer array, got {labels.dtype} {list(labels.shape)}"
                )
            if labels.shape[0] != count * _batch(inputs[0]):
                raise DataError(
                    f"{role} data: {LABELS_FILE} has {labels.shape[0]} labels for {count * _batch(inputs[0])} samples"
                )
            labels = np.asarray(labels, dtype=np.int64)
        if limit is not None:
            count = min(count, limit)
        ds = cls(role, folder, inputs, arrays, labels, count, stacked)
        ds._check_finite()
        return ds

    def _rows_per_sample(self, name: str) -> int:
        return 1 if self.stacked.get(name) else _batch(self._spec(name))

    def _rows(self, name: str) -> np.ndarray:
        """The rows of ``name``'s array that the ``count`` samples use."""
        return self.arrays[name][: self.count * self._rows_per_sample(name)]

    def _spec(self, name: str) -> InputSpec:
        return next(i for i in self.inputs if i.name == name)

    def _check_finite(self) -> None:
        """No NaN/inf in float inputs; calibration data must also vary (a constant input has no range
        to calibrate: every activation scale would be made up). Scanned in chunks: memory stays flat."""
        for spec in self.inputs:
            if spec.dtype.startswith("float"):
                arr = self._rows(spec.name)
                lo, hi = np.inf, -np.inf
                for start in range(0, arr.shape[0], _SCAN_ROWS):
                    chunk = np.asarray(arr[start : start + _SCAN_ROWS])
                    bad = ~np.isfinite(chunk)
                    if bad.any():
                        first = tuple(np.argwhere(bad)[0])
                        row = start + int(first[0])
                        what = "NaN" if np.isnan(chunk[first]) else "inf"
                        raise DataError(
                            f"{self.role} data: {spec.name}.npy has {what} values (first at row {row}); "
                            "remove or fix those samples"
                        )
                    if chunk.size:
                        lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
                if self.role == "calibration" and lo == hi:
                    raise DataError(
                        f"calibration data: every value of {spec.name}.npy is {lo:g}; a constant input gives nothing to "
                        "calibrate on, use real samples of what the model will see"
                    )

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for k in range(self.count):
            yield self.sample(k)

    def sample(self, k: int) -> dict[str, np.ndarray]:
        """Sample ``k`` as feeds with the model's input shapes (a fresh array per input)."""
        out = {}
        for spec in self.inputs:
            if self.stacked.get(spec.name):
                out[spec.name] = np.array(self.arrays[spec.name][k]).reshape(spec.shape)
            else:
                b = _batch(spec)
                out[spec.name] = np.array(self.arrays[spec.name][k * b : (k + 1) * b])
        return out

    def sample_labels(self) -> np.ndarray:
        """The labels of the samples in use (B per sample for a batch-B input); DataError with no labels.npy."""
        if self.labels is None:
            raise DataError(f"{self.role} data has no {LABELS_FILE}")
        return self.labels[: self.count * _batch(self.inputs[0])]

    def sha256(self) -> str:
        """Hash of every file the data set is read from, in a fixed order."""
        h = hashlib.sha256()
        names = [i.name for i in self.inputs] + ([LABELS_FILE[:-4]] if self.labels is not None else [])
        for name in names:
            path = self.folder / f"{name}.npy"
            h.update(name.encode() + b"\0")
            update_from_file(h, path)
        return h.hexdigest()


def _batch(spec: InputSpec) -> int:
    """Rows of the input's first axis in one sample (1 for a scalar input)."""
    return spec.shape[0] if spec.shape else 1


def _load(path: Path, role: str) -> np.ndarray:
    regular_file(path, f"{role} data:", DataError)  # no symlink out of the folder, no FIFO or device
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{role} data: {path.name} is not a readable .npy file ({e}); re-save it with np.save") from e


def check_token_ids(ds: ArrayDataset, rows: dict[str, int]) -> None:
    """Token ids must index a row of their embedding table (an out-of-range Gather is undefined)."""
    for name, n in rows.items():
        arr = ds._rows(name)
        for start in range(0, arr.shape[0], 1024):
            chunk = np.asarray(arr[start : start + 1024])
            bad = (chunk < 0) | (chunk >= n)
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                raise DataError(
                    f"{ds.role} data: {name}.npy holds token id {int(chunk[where])} at row {start + where[0]}, "
                    f"outside the model's vocabulary (ids 0..{n - 1}); fix the data or the tokenizer"
                )
