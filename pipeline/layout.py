"""Tensor layouts and names between the ONNX model and the converted TFLite model.

onnx2tf turns channels-first inputs and outputs (NCHW, NCW, NCDHW) channels-last, the layout
TFLite kernels and Android camera buffers use; inputs that edgeq.toml declares channels-last
(a layout starting with N and ending in C, e.g. NHWC) are kept as they are. An input of rank 3 or
more whose layout does not start with N (a recurrent state [layers, batch, hidden]: "DNC") is no
batch of channels at all: it keeps the model's shape exactly, and onnx2tf is told so. onnx2tf also
renames tensors it cannot use as TF names.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["channels_last_perm", "input_perm", "keeps_shape", "match_name"]


def channels_last_perm(rank: int) -> tuple[int, ...]:
    """ONNX channels-first -> TFLite channels-last: (0, 2, ..., rank-1, 1); identity below rank 3."""
    if rank < 3:
        return tuple(range(rank))
    return (0, *range(2, rank), 1)


def keeps_shape(spec: Any) -> bool:
    """An input of rank >= 3 that is not batch-first (its layout does not start with N): kept exactly."""
    return len(spec.shape) >= 3 and not spec.layout.startswith("N")


def input_perm(spec: Any) -> tuple[int, ...]:
    """The permutation from an input's ONNX layout to its TFLite layout (an ``InputSpec``)."""
    rank = len(spec.shape)
    if (spec.layout.endswith("C") and rank >= 3) or keeps_shape(spec):
        return tuple(range(rank))
    return channels_last_perm(rank)


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def match_name(onnx_name: str, candidates: list[str]) -> str | None:
    """The candidate that is ``onnx_name``, exactly or after TF's renaming of odd characters."""
    if onnx_name in candidates:
        return onnx_name
    return next((c for c in candidates if _sanitize(c) == _sanitize(onnx_name)), None)
