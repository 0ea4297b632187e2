"""Feeds and outputs of a .tflite signature in the ONNX model's terms, numpy only.

The convert stage writes, for every graph, how the .tflite signature maps onto the ONNX model
(``Artifact.meta``: per input and output the ONNX name, the .tflite name, the axis permutation,
the dtype and the int8 scale / zero-point). These functions apply that map. They are shared by
the host LiteRT runtime and by the worker that runs inside the arm64 emulator, so every runtime
quantizes feeds and dequantizes outputs the same way; this module imports numpy and nothing else.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["QUANTIZED", "dequantize", "from_tflite", "quantize", "to_tflite"]

QUANTIZED = ("int8", "uint8", "int16")


def quantize(x: np.ndarray, q: dict[str, Any], dtype: str) -> np.ndarray:
    """``x`` quantized to ``dtype`` with the scale and zero-point of ``q``, rounded and clipped to its range."""
    info = np.iinfo(dtype)
    scale = np.asarray(q["scale"], dtype=np.float32)
    zp = np.asarray(q["zero_point"], dtype=np.float32)
    return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dtype)


def dequantize(y: np.ndarray, q: dict[str, Any]) -> np.ndarray:
    """``y`` as float32: (y - zero_point) * scale."""
    scale = np.asarray(q["scale"], dtype=np.float32)
    zp = np.asarray(q["zero_point"], dtype=np.float32)
    return ((y.astype(np.float32) - zp) * scale).astype(np.float32)


def to_tflite(feeds: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """ONNX-named feeds -> the signature's arguments (layout, dtype, quantized where int8)."""
    args = {}
    for m in meta["inputs"]:
        x = np.asarray(feeds[m["name"]]).transpose(m["perm"])
        if m["dtype"] in QUANTIZED and m["quantization"]:
            x = quantize(x.astype(np.float32), m["quantization"], m["dtype"])  # a float tensor, quantized
        else:
            x = x.astype(m["dtype"])  # float32 stays float32; token ids stay integers
        args[m["tflite_name"]] = np.ascontiguousarray(x)
    return args


def from_tflite(raw: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """The signature's outputs -> ONNX-named float32 outputs in the ONNX layout."""
    out = {}
    for m in meta["outputs"]:
        y = raw[m["tflite_name"]]
        y = dequantize(y, m["quantization"]) if m["dtype"] in QUANTIZED else y.astype(np.float32)
        out[m["name"]] = y.transpose(np.argsort(m["perm"]))
    return out
