"""Metrics every task uses: tensor-level agreement with the float reference, parity between runtimes.

All metrics are over every element of every eval sample, accumulated in one pass:

* cosine: sum(r*a) / sqrt(sum(r^2) * sum(a^2))
* sqnr_db: 10 * log10(sum(r^2) / sum((r - a)^2)) - signal-to-quantization-noise ratio
  (None when it is infinite or undefined)
* max_abs_error: max |r - a|
* mean_abs_error: mean |r - a|
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from edgeq.artifacts import Artifact
from edgeq.errors import ConfigError
from edgeq.inputs.shown import shown

__all__ = ["ChannelStats", "Parity", "ParityMetrics", "TensorMetrics", "check_declared_slices"]


class TensorMetrics:
    """How close an artifact's outputs are to the float reference's, accumulated sample by sample."""

    def __init__(self, name: str = "", declared: tuple[int | None, tuple[tuple[str, int, int | None], ...]] = (None, ())) -> None:
        """``declared``: the axis and named slices edgeq.toml gives the output (none: found from the ranges)."""
        self.name = name
        self.declared = declared
        self.dot = 0.0
        self.ref_sq = 0.0
        self.art_sq = 0.0
        self.err_sq = 0.0
        self.abs_sum = 0.0
        self.max_abs = 0.0
        self.n = 0
        self.channels: list[ChannelStats] | None = None  # outputs of rank >= 3: per index of each short axis
        self.n_samples = 0

    def update(self, ref: np.ndarray, art: np.ndarray) -> None:
        """Add one sample's reference and artifact outputs to the sums."""
        ref, art = np.asarray(ref), np.asarray(art)
        if ref.shape != art.shape:
            raise ValueError(f"output shapes differ: reference {ref.shape}, artifact {art.shape}")
        if self.channels is None:  # the shape of the first sample decides (a shape that changes: no slices)
            self.channels = self._channels(ref.shape)
            self._shape = ref.shape
        if ref.shape != self._shape:
            self.channels = []
        for stats in self.channels:
            stats.update(ref, art)
        if self.n_samples == PRUNE_AFTER and not self.declared[1]:  # axes without slices by now: stop measuring them
            self.channels = [s for s in self.channels if len(s.slices()) > 1]
        self.n_samples += 1
        r = ref.astype(np.float64).ravel()
        a = art.astype(np.float64).ravel()
        d = r - a
        self.dot += float(r @ a)
        self.ref_sq += float(r @ r)
        self.art_sq += float(a @ a)
        self.err_sq += float(d @ d)
        self.abs_sum += float(np.abs(d).sum())
        self.max_abs = max(self.max_abs, float(np.abs(d).max(initial=0.0)))
        self.n += r.size

    def result(self) -> dict[str, Any]:
        """Cosine, SQNR (dB), max and mean absolute error, whether identical, and the number of elements."""
        denom = math.sqrt(self.ref_sq * self.art_sq)
        cosine = self.dot / denom if denom > 0 else (1.0 if self.err_sq == 0 else 0.0)
        # JSON has no infinity: SQNR is None for identical outputs (infinite) and for an all-zero
        # reference (undefined); ``identical`` tells the two apart.
        sqnr = None if self.err_sq == 0 or self.ref_sq == 0 else 10.0 * math.log10(self.ref_sq / self.err_sq)
        out: dict[str, Any] = {
            "cosine": cosine,
            "sqnr_db": sqnr,
            "max_abs_error": self.max_abs,
            "mean_abs_error": self.abs_sum / self.n if self.n else 0.0,
            "identical": self.err_sq == 0,
            "elements": self.n,
        }
        declared = self.declared[1]
        for stats in self.channels or ():  # the declared slices, or the first axis whose float ranges fall into slices
            if declared:
                out["slices"] = [stats.result(start, stats.size if stop is None else stop, name)
                                 for name, start, stop in declared]
                break
            cuts = stats.slices()
            if len(cuts) > 1:
                out["slices"] = [stats.result(start, stop) for start, stop in cuts]
                break
        return out

    def _channels(self, shape: tuple[int, ...]) -> list[ChannelStats]:
        axis, declared = self.declared
        if not declared:
            return [ChannelStats(a, n) for a, n in enumerate(shape) if a > 0 and len(shape) >= 3 and 2 <= n <= MAX_AXIS]
        check_declared_slices(self.name, self.declared, shape)
        return [ChannelStats(axis, shape[axis])] if axis is not None else []


def check_declared_slices(output: str, declared: tuple[int | None, tuple[tuple[str, int, int | None], ...]],
                          shape: tuple[int, ...]) -> None:
    """ConfigError when edgeq.toml's axis or slices for ``output`` do not fit its shape (a size of 0 or
    less: not known, not checked). The export stage checks with the ONNX shapes, before any
    conversion; the metrics again with the values."""
    axis, slices = declared
    if not slices:
        return
    if axis is None or axis >= len(shape):
        raise ConfigError(f"[[outputs]] {shown(output)}: axis {axis} is not an axis of the output (shape "
                          f"{list(shape)}); fix axis in edgeq.toml")
    if shape[axis] <= 0:
        return
    for name, start, stop in slices:
        if start >= shape[axis] or (stop is not None and stop > shape[axis]):
            raise ConfigError(f"[[outputs]] {shown(output)}: slice {shown(name)} = {start}:{'' if stop is None else stop} "
                              f"is outside axis {axis} of size {shape[axis]}; fix it in edgeq.toml")


class ParityMetrics:
    """How far one runtime's outputs are from another's on the same artifact, in quantization steps.

    ``step`` is one quantization step of the output (its int8 scale, in output units). Differences
    larger than one step are divergences: kernels that implement the same int8 arithmetic should
    differ by rounding only. The first ``keep`` divergences are listed (sample, flat element index).
    """

    def __init__(self, step: float | None, keep: int = 10) -> None:
        self.step = step
        self.keep = keep
        self.max_abs = 0.0
        self.over = 0
        self.n = 0
        self.samples = 0
        self.divergences: list[dict[str, Any]] = []

    def update(self, primary: np.ndarray, other: np.ndarray) -> None:
        """Add one sample's outputs of both runtimes, noting the elements more than one step apart."""
        d = np.abs(np.asarray(primary, dtype=np.float64).ravel() - np.asarray(other, dtype=np.float64).ravel())
        self.max_abs = max(self.max_abs, float(d.max(initial=0.0)))
        if self.step:
            over = np.flatnonzero(d > self.step * 1.001)  # dequantized values carry float rounding
            self.over += int(over.size)
            for i in over[: max(0, self.keep - len(self.divergences))]:
                self.divergences.append({"sample": self.samples, "element": int(i), "steps": float(d[i] / self.step)})
        self.n += d.size
        self.samples += 1

    def result(self) -> dict[str, Any]:
        """The largest difference (also in steps), the elements over one step, the element count, the divergences."""
        return {
            "max_abs_diff": self.max_abs,
            "step": self.step,
            "max_steps": self.max_abs / self.step if self.step else None,
            "elements_over_one_step": self.over if self.step else None,
            "elements": self.n,
            "divergences": self.divergences,
        }


class Parity:
    """The shipped artifact on each of the target's other runtimes vs its first runtime (host LiteRT)."""

    def __init__(self, runtimes: tuple[str, ...], shipped: dict[str, Artifact], validated: Iterable[tuple[str, str]]) -> None:
        """``runtimes``: the target's, the first the reference; ``shipped``: graph -> the shipped
        artifact's file; ``validated``: the (artifact, runtime) pairs that ran."""
        pairs = set(validated)
        self.shipped = next(iter(shipped.values())).key
        self.primary = runtimes[0]
        self.others = [rt for rt in runtimes[1:] if (self.shipped, rt) in pairs]
        self.steps = {g: {m["name"]: m.get("step") for m in art.meta["outputs"]} for g, art in shipped.items()}
        self.acc: dict[str, dict[str, dict[str, ParityMetrics]]] = {rt: {} for rt in self.others}
        self.agree = {rt: [0, 0] for rt in self.others}

    def update(self, graph: str, outs: dict[tuple[str, str], dict[str, Any]], classify_output: str | None = None) -> None:
        """One sample of ``graph``: the outputs of every pair that ran it; ``classify_output`` also counts top-1 agreement."""
        base = outs.get((self.shipped, self.primary))
        if base is None:  # the first runtime did not run this sample
            return
        for rt in self.others:
            other = outs.get((self.shipped, rt))
            if other is None:  # a runtime that runs a subset of the samples, not this one
                continue
            for name, value in other.items():
                acc = self.acc[rt].setdefault(graph, {}).setdefault(name, ParityMetrics(self.steps[graph].get(name)))
                acc.update(base[name], value)
            if classify_output is not None:
                a = np.asarray(base[classify_output]).reshape(len(other[classify_output]), -1).argmax(1)
                b = np.asarray(other[classify_output]).reshape(len(other[classify_output]), -1).argmax(1)
                self.agree[rt][0] += int((a == b).sum())
                self.agree[rt][1] += len(a)

    def result(self) -> dict[str, Any]:
        """Runtime -> its distance to the first runtime, per graph and output."""
        out = {}
        for rt in self.others:
            entry: dict[str, Any] = {
                "vs": self.primary,
                "outputs": {g: {n: m.result() for n, m in outs.items()} for g, outs in self.acc[rt].items()},
            }
            if self.agree[rt][1]:
                entry["top1_agreement"] = self.agree[rt][0] / self.agree[rt][1]
            out[rt] = entry
        return out


# -- slices of an output ---------------------------------------------------------------------------

MAX_AXIS = 1024  # an axis longer than this is not a channel axis (anchors, pixels, positions)
PRUNE_AFTER = 8  # samples after which an axis whose float ranges show no slices is no longer measured
LEVEL_CAP = 64  # distinct values counted per index, at most (enough to tell "a few" from "many")
SLICE_CONTRAST = 10.0  # indices whose float range is under 1/10 of the output's widest form their own slices
VARIES = 16  # a slice whose float values take at least this many distinct values varies


class ChannelStats:
    """Per index along one axis of an output, over the eval set: the float reference's range and
    distinct values, the artifact's range, distinct values and error. At the end the indices are cut
    into slices where their float ranges differ by ``SLICE_CONTRAST`` or more (box coordinates in
    pixels next to class scores in 0..1, as a YOLO export concatenates them), and each slice gets its
    own metrics: one int8 scale for the whole output can leave a narrow slice with a single level."""

    def __init__(self, axis: int, size: int) -> None:
        self.axis = axis
        self.size = size
        self.ref_lo = np.full(size, np.inf)
        self.ref_hi = np.full(size, -np.inf)
        self.art_lo = np.full(size, np.inf)
        self.art_hi = np.full(size, -np.inf)
        self.ref_sq = np.zeros(size)
        self.art_sq = np.zeros(size)
        self.dot = np.zeros(size)
        self.err_sq = np.zeros(size)
        self.ref_levels: list[set[float]] = [set() for _ in range(size)]
        self.art_levels: list[set[float]] = [set() for _ in range(size)]

    def update(self, ref: np.ndarray, art: np.ndarray) -> None:
        """One sample's outputs (the same shape)."""
        r = np.moveaxis(np.asarray(ref, dtype=np.float64), self.axis, 0).reshape(self.size, -1)
        a = np.moveaxis(np.asarray(art, dtype=np.float64), self.axis, 0).reshape(self.size, -1)
        self.ref_lo = np.minimum(self.ref_lo, r.min(axis=1))
        self.ref_hi = np.maximum(self.ref_hi, r.max(axis=1))
        self.art_lo = np.minimum(self.art_lo, a.min(axis=1))
        self.art_hi = np.maximum(self.art_hi, a.max(axis=1))
        self.ref_sq += (r * r).sum(axis=1)
        self.art_sq += (a * a).sum(axis=1)
        self.dot += (r * a).sum(axis=1)
        self.err_sq += ((r - a) ** 2).sum(axis=1)
        for sets, values in ((self.ref_levels, r), (self.art_levels, a)):
            open_ = [c for c in range(self.size) if len(sets[c]) <= LEVEL_CAP]  # channels still counting
            if not open_:
                continue
            ordered = np.sort(values[open_], axis=1)
            new = np.ones(ordered.shape, dtype=bool)
            new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
            for row, c in enumerate(open_):
                sets[c].update(ordered[row][new[row]][: LEVEL_CAP + 1].tolist())

    def slices(self) -> list[tuple[int, int]]:
        """(start, stop) of each run of indices on one side of the contrast; one run: no slices."""
        ranges = self.ref_hi - self.ref_lo
        widest = float(ranges.max(initial=0.0))
        if not widest > 0:
            return [(0, self.size)]
        wide = ranges * SLICE_CONTRAST >= widest
        cuts = [0] + [c for c in range(1, self.size) if wide[c] != wide[c - 1]] + [self.size]
        return list(itertools.pairwise(cuts))

    def result(self, start: int, stop: int, name: str | None = None) -> dict[str, Any]:
        """Metrics of indices start..stop-1 of the axis (a declared slice has a name)."""
        s = slice(start, stop)
        ref_sq, err_sq = float(self.ref_sq[s].sum()), float(self.err_sq[s].sum())
        denom = math.sqrt(ref_sq * float(self.art_sq[s].sum()))
        ref_levels = set().union(*self.ref_levels[s])
        art_levels = set().union(*self.art_levels[s])
        return {
            "name": name or f"{start}:{stop}", "axis": self.axis, "start": start, "stop": stop,
            "float_range": [float(self.ref_lo[s].min()), float(self.ref_hi[s].max())],
            "range": [float(self.art_lo[s].min()), float(self.art_hi[s].max())],
            "float_levels": min(len(ref_levels), LEVEL_CAP + 1),
            "levels": min(len(art_levels), LEVEL_CAP + 1),
            "cosine": float(self.dot[s].sum()) / denom if denom > 0 else (1.0 if err_sq == 0 else 0.0),
            "sqnr_db": None if err_sq == 0 or ref_sq == 0 else 10.0 * math.log10(ref_sq / err_sq),
        }
