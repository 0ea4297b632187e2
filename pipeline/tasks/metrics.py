"""Metrics every task uses: tensor-level agreement with the float reference, parity between runtimes.

All metrics are over every element of every eval sample, accumulated in one pass:

* cosine: sum(r*a) / sqrt(sum(r^2) * sum(a^2))
* sqnr_db: 10 * log10(sum(r^2) / sum((r - a)^2)) - signal-to-quantization-noise ratio
  (None when it is infinite or undefined)
* max_abs_error: max |r - a|
* mean_abs_error: mean |r - a|
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from edgeq.artifacts import Artifact

__all__ = ["Parity", "ParityMetrics", "TensorMetrics"]


class TensorMetrics:
    """How close an artifact's outputs are to the float reference's, accumulated sample by sample."""

    def __init__(self) -> None:
        self.dot = 0.0
        self.ref_sq = 0.0
        self.art_sq = 0.0
        self.err_sq = 0.0
        self.abs_sum = 0.0
        self.max_abs = 0.0
        self.n = 0

    def update(self, ref: np.ndarray, art: np.ndarray) -> None:
        """Add one sample's reference and artifact outputs to the sums."""
        r = np.asarray(ref, dtype=np.float64).ravel()
        a = np.asarray(art, dtype=np.float64).ravel()
        if r.shape != a.shape:
            raise ValueError(f"output shapes differ: reference {ref.shape}, artifact {art.shape}")
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
        return {
            "cosine": cosine,
            "sqnr_db": sqnr,
            "max_abs_error": self.max_abs,
            "mean_abs_error": self.abs_sum / self.n if self.n else 0.0,
            "identical": self.err_sq == 0,
            "elements": self.n,
        }


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
        """One sample of ``graph``: every pair's outputs; ``classify_output`` also counts top-1 agreement."""
        base = outs[(self.shipped, self.primary)]
        for rt in self.others:
            other = outs[(self.shipped, rt)]
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
