"""LiteRT (the TFLite runtime) on the host CPU, with its default XNNPACK kernels.

Feeds and outputs are in ONNX terms (see ``edgeq.runtimes.Runtime``); the artifact's ``meta``
(written by the convert stage) says how they map onto the .tflite signature.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq._fds import redirect_output
from edgeq.context import Artifact

__all__ = ["LiteRT", "LiteRTReference", "dequantize", "quantize"]


def quantize(x: np.ndarray, q: dict[str, Any], dtype: str) -> np.ndarray:
    info = np.iinfo(dtype)
    scale = np.asarray(q["scale"], dtype=np.float32)
    zp = np.asarray(q["zero_point"], dtype=np.float32)
    return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dtype)


def dequantize(y: np.ndarray, q: dict[str, Any]) -> np.ndarray:
    scale = np.asarray(q["scale"], dtype=np.float32)
    zp = np.asarray(q["zero_point"], dtype=np.float32)
    return ((y.astype(np.float32) - zp) * scale).astype(np.float32)


class LiteRT:
    name = "litert"
    kernels = "XNNPACK (default op resolver)"

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._runner: Any = None
        self._meta: dict[str, Any] = {}

    def _resolver(self) -> Any:
        from ai_edge_litert.interpreter import OpResolverType

        return OpResolverType.AUTO

    def load(self, artifact: Artifact) -> None:
        from ai_edge_litert.interpreter import Interpreter

        with redirect_output(stdout=False):  # LiteRT logs "INFO: Created ... delegate" on stderr
            self._interp = Interpreter(
                model_path=str(artifact.path), num_threads=self.threads,
                experimental_op_resolver_type=self._resolver(),
            )
            self._interp.allocate_tensors()
            self._runner = self._interp.get_signature_runner(artifact.meta["signature"])
        self._meta = artifact.meta

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = {}
        for m in self._meta["inputs"]:
            x = np.asarray(feeds[m["name"]]).transpose(m["perm"])
            if m["dtype"] in ("int8", "uint8", "int16") and m["quantization"]:
                x = quantize(x.astype(np.float32), m["quantization"], m["dtype"])  # a float tensor, quantized
            else:
                x = x.astype(m["dtype"])  # float32 stays float32; token ids stay integers
            args[m["tflite_name"]] = np.ascontiguousarray(x)
        raw = self._runner(**args)
        out = {}
        for m in self._meta["outputs"]:
            y = raw[m["tflite_name"]]
            y = dequantize(y, m["quantization"]) if m["dtype"] in ("int8", "uint8", "int16") else y.astype(np.float32)
            out[m["name"]] = y.transpose(np.argsort(m["perm"]))
        return out

    def describe(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {"runtime": self.name, "version": version("ai-edge-litert"), "kernels": self.kernels,
                "threads": self.threads, "host": True}


class LiteRTReference(LiteRT):
    """LiteRT with its reference kernels (no XNNPACK, no optimized kernels): the semantics the
    optimized kernels of every device should match, to compare them against."""

    name = "litert-ref"
    kernels = "reference kernels (BUILTIN_REF)"

    def _resolver(self) -> Any:
        from ai_edge_litert.interpreter import OpResolverType

        return OpResolverType.BUILTIN_REF
