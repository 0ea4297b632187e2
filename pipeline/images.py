"""Calibration and eval data from files users have: a folder of images, or an .npz archive.

Images: PNG / JPEG files, in the folder itself or (eval of a classifier) in one subfolder per
class named as in the labels file. The model's one image input declares how an image becomes a
tensor in ``[inputs.preprocessing]``, and model.json carries the same keys so the app does the same:

    resize = [H, W]           # bilinear, to exactly H x W (default: the input's own H x W)
    crop = [h, w]             # then a centre crop (optional; resize must be at least that big)
    channel_order = "RGB"     # or "BGR"; "L" for one channel
    scale = 0.00392156862745  # pixel values (0..255) are multiplied by this first (default 1/255)
    mean = [0.485, 0.456, 0.406]
    std = [0.229, 0.224, 0.225]

The tensor is laid out as the input's layout says (NCHW or NHWC). Every image is decoded and
written one at a time into a memory-mapped .npy in the build folder, so peak memory does not grow
with the number of images; the stages then read those arrays like any array data, and every
runtime is fed the same tensors. A folder larger than ``calibration_samples`` contributes that
many files: the first ones in name order, or a random subset drawn with ``subset_seed``.

.npz: one array per input name (and ``labels`` for eval), loaded without pickle.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.config import InputSpec
from edgeq.errors import DataError
from edgeq.inputs.shown import shown

__all__ = ["IMAGE_SUFFIXES", "ImageSource", "NpzSource", "image_files", "open_source"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_ENTRIES = 1_000_000  # files in one data folder (and images in a set)
PRE_KEYS = ("resize", "crop", "channel_order", "scale", "mean", "std")


def _entries(folder: Path, role: str) -> list[Path]:
    """The entries of ``folder`` in name order, at most MAX_ENTRIES of them."""
    out = []
    for k, p in enumerate(folder.iterdir()):
        if k >= MAX_ENTRIES:
            raise DataError(f"{role} data: {shown(folder.name)} holds over {MAX_ENTRIES} entries; "
                            "use fewer files (or an .npz / .npy arrays)")
        out.append(p)
    return sorted(out)


def image_files(folder: Path, role: str = "data") -> list[Path]:
    """Image files in ``folder`` and its direct subfolders, in name order (symlinks, FIFOs and
    devices skipped), at most MAX_ENTRIES entries per folder."""
    out = []
    for p in _entries(folder, role):
        if p.is_symlink():
            continue
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(p)
        elif p.is_dir():
            out += [q for q in _entries(p, role) if q.is_file() and not q.is_symlink() and q.suffix.lower() in IMAGE_SUFFIXES]
        if len(out) > MAX_ENTRIES:
            raise DataError(f"{role} data: {shown(folder.name)} holds over {MAX_ENTRIES} images; use fewer")
    return out


@dataclass(frozen=True)
class Preprocess:
    resize: tuple[int, int]
    crop: tuple[int, int] | None
    order: str
    scale: float
    mean: np.ndarray
    std: np.ndarray
    channels_first: bool

    @classmethod
    def of(cls, spec: InputSpec) -> Preprocess:
        where = f"input '{spec.name}' [inputs.preprocessing]"
        if len(spec.shape) != 4 or spec.dtype != "float32" or spec.layout not in ("NCHW", "NHWC"):
            raise DataError(f"image data feeds a 4-D float32 NCHW or NHWC input; '{spec.name}' is {spec.dtype} {spec.layout}")
        cf = spec.layout == "NCHW"
        c, h, w = (spec.shape[1], spec.shape[2], spec.shape[3]) if cf else (spec.shape[3], spec.shape[1], spec.shape[2])
        p = spec.preprocessing
        unknown = sorted(set(p) - set(PRE_KEYS))
        if unknown:
            raise DataError(f"{where}: unknown key(s) {unknown} for image data; known: {', '.join(PRE_KEYS)}")

        def pair(key: str, default: tuple[int, int] | None) -> tuple[int, int] | None:
            v = p.get(key, default)
            if v is None:
                return None
            if not (isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v)):
                raise DataError(f"{where}: {key} must be [height, width], got {v!r}")
            return int(v[0]), int(v[1])

        crop = pair("crop", None)
        resize = pair("resize", (h, w))
        assert resize is not None
        final = crop or resize
        if final != (h, w):
            raise DataError(f"{where}: images come out {final[0]}x{final[1]} but the input is {h}x{w}; fix resize/crop")
        if crop and (crop[0] > resize[0] or crop[1] > resize[1]):
            raise DataError(f"{where}: crop {list(crop)} is larger than resize {list(resize)}")
        order = str(p.get("channel_order", "RGB" if c == 3 else "L")).upper()
        if order not in ("RGB", "BGR", "L") or (order == "L") != (c == 1):
            raise DataError(f"{where}: channel_order {order!r} does not fit {c} channels; use RGB or BGR (3) or L (1)")

        def vec(key: str, default: float) -> np.ndarray:
            v = np.asarray(p.get(key, [default] * c), dtype=np.float32).reshape(-1)
            if v.size == 1:
                v = np.repeat(v, c)
            if v.size != c or not np.all(np.isfinite(v)) or (key == "std" and np.any(v == 0)):
                raise DataError(f"{where}: {key} must be {c} finite numbers{' (no zero)' if key == 'std' else ''}")
            return v

        scale = p.get("scale", 1.0 / 255.0)
        if not isinstance(scale, int | float) or not np.isfinite(scale) or scale == 0:
            raise DataError(f"{where}: scale must be a non-zero number, got {scale!r}")
        return cls(resize, crop, order, float(scale), vec("mean", 0.0), vec("std", 1.0), cf)

    def __call__(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as opened:
                im: Image.Image = opened.convert("L" if self.order == "L" else "RGB")
                im = im.resize((self.resize[1], self.resize[0]), Image.Resampling.BILINEAR)
                if self.crop:
                    top = (self.resize[0] - self.crop[0]) // 2
                    left = (self.resize[1] - self.crop[1]) // 2
                    im = im.crop((left, top, left + self.crop[1], top + self.crop[0]))
                x = np.asarray(im, dtype=np.float32)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"{path.name} is not a readable image ({type(e).__name__}); remove or replace it") from e
        if x.ndim == 2:
            x = x[:, :, None]
        if self.order == "BGR":
            x = x[:, :, ::-1]
        x = (x * self.scale - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(2, 0, 1) if self.channels_first else x)[None]


@dataclass
class ImageSource:
    """A checked folder of images, turned into arrays once the build has a folder to write them to."""

    role: str
    spec: InputSpec
    files: list[Path]
    labels: np.ndarray | None
    pre: Preprocess

    def materialize(self, folder: Path) -> Path:
        """Write the preprocessed images (and labels.npy) as arrays into a new ``folder``; returns it."""
        folder.mkdir(parents=True)
        out = np.lib.format.open_memmap(folder / f"{self.spec.name}.npy", mode="w+", dtype=np.float32,
                                        shape=(len(self.files), *self.spec.shape[1:]))
        for k, path in enumerate(self.files):
            out[k] = self.pre(path)[0]
        out.flush()
        del out
        if self.labels is not None:
            np.save(folder / "labels.npy", self.labels)
        return folder


@dataclass
class NpzSource:
    """An .npz archive: each member .npy is copied out as a stream (never loaded whole), after its
    unpacked size - from the zip directory, checked against the array header - is known to fit."""

    role: str
    path: Path
    members: dict[str, str]  # array name -> member name in the zip
    unpacked: int = 0  # bytes the members unpack to

    @classmethod
    def open(cls, path: Path, inputs: tuple[InputSpec, ...], role: str, *, max_bytes: int = 8 << 30,
             max_ratio: int = 200) -> NpzSource:
        """The .npz, checked: NAME.npy arrays for inputs or labels only, within the unpacked size and ratio limits."""
        import zipfile

        members = {}
        total = 0
        name = shown(path.name)
        try:
            with zipfile.ZipFile(path) as z:
                infos = z.infolist()
                if len(infos) > 1024:
                    raise DataError(f"{role} data: {name} holds {len(infos)} members; an .npz holds one array per input")
                for info in infos:
                    member = shown(info.filename)
                    if not info.filename.endswith(".npy") or "/" in info.filename:
                        raise DataError(f"{role} data: {name} holds {member!r}; an .npz holds NAME.npy arrays only")
                    if info.filename[:-4] in members:
                        raise DataError(f"{role} data: {name} holds {member!r} twice; save each array once")
                    with z.open(info) as fh:  # the header only, not the data
                        version = np.lib.format.read_magic(fh)
                        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                        shape, _, dtype = read(fh)
                        header = fh.tell()
                    if dtype.hasobject:
                        raise DataError(f"{role} data: {name}:{member} holds Python objects (pickle); save plain arrays")
                    size = header + math.prod(shape) * dtype.itemsize
                    if info.file_size != size:
                        raise DataError(f"{role} data: {name}:{member} says it unpacks to {info.file_size} bytes but its "
                                        f"array {list(shape)} {dtype} needs {size}; the archive is damaged, save it again")
                    ratio = info.file_size / max(info.compress_size, 1)
                    if ratio > max_ratio:
                        raise DataError(
                            f"{role} data: {name}:{member} unpacks {ratio:.0f}x ({info.compress_size} -> {info.file_size} "
                            f"bytes), over the limit of {max_ratio}x; raise [data].max_unpack_ratio if the data is real"
                        )
                    total += info.file_size
                    if total > max_bytes:
                        raise DataError(
                            f"{role} data: {name} unpacks to over {total} bytes, over the limit of {max_bytes}; "
                            "raise [data].max_unpacked_bytes or use fewer samples"
                        )
                    members[info.filename[:-4]] = info.filename
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
            raise DataError(f"{role} data: {name} is not a readable .npz ({type(e).__name__}); save it with np.savez") from e
        names = [i.name for i in inputs]
        extra = sorted(set(members) - set(names) - {"labels"})
        if extra:
            raise DataError(f"{role} data: {name} holds arrays {[shown(e) for e in extra]} that name no input; "
                            f"inputs: {names}")
        return cls(role, path, members, total)

    def materialize(self, folder: Path) -> Path:
        """Copy each array out into a new ``folder`` as NAME.npy, once the disk has room; returns it."""
        import shutil
        import zipfile

        existing = folder.parent
        while not existing.exists():
            existing = existing.parent
        free = shutil.disk_usage(existing).free
        if self.unpacked > free:
            raise DataError(f"{self.role} data: {shown(self.path.name)} unpacks to {self.unpacked} bytes, but the build "
                            f"folder's disk has {free} free; free some space")
        folder.mkdir(parents=True)
        with zipfile.ZipFile(self.path) as z:
            for name, member in self.members.items():
                with z.open(member) as src, open(folder / f"{name}.npy", "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        return folder


def open_source(path: Path, inputs: tuple[InputSpec, ...], role: str, *, class_names: list[str] | None,
                limit: int | None, seed: int | None, max_bytes: int = 8 << 30,
                max_ratio: int = 200) -> ImageSource | NpzSource | None:
    """An image folder or .npz at ``path``, checked; None for a folder of .npy arrays."""
    if path.is_file() and path.suffix == ".npz":
        return NpzSource.open(path, inputs, role, max_bytes=max_bytes, max_ratio=max_ratio)
    if not path.is_dir() or any(os.path.lexists(path / f"{i.name}.npy") for i in inputs):
        return None
    files = image_files(path, role)
    if not files:
        return None
    if len(inputs) != 1:
        raise DataError(f"{role} data: a folder of images feeds a model with one image input, this one has {len(inputs)}")
    pre = Preprocess.of(inputs[0])
    labels = None
    if class_names is not None:
        index = {n: k for k, n in enumerate(class_names)}
        ids = []
        for f in files:
            if f.parent == path:
                raise DataError(f"{role} data: {f.name} is not in a class folder; put each image in <class>/ as in labels.txt")
            if f.parent.name not in index:
                raise DataError(f"{role} data: folder '{f.parent.name}' is not a class in labels.txt; rename it or add the class")
            ids.append(index[f.parent.name])
        labels = np.asarray(ids, dtype=np.int64)
    if limit is not None and limit < len(files):
        if seed is None:
            pick = np.arange(limit)
        else:
            pick = np.sort(np.random.default_rng(seed).choice(len(files), size=limit, replace=False))
        files = [files[i] for i in pick]
        labels = labels[pick] if labels is not None else None
    return ImageSource(role, inputs[0], files, labels, pre)
