"""Edge runtimes that run artifacts, one module each, behind one protocol.

``RUNTIMES`` maps a runtime name (as used in targets/*.toml) to ``module:Class``; the module is
imported only when a build uses it.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from edgeq.context import Artifact

__all__ = ["RUNTIMES", "Runtime", "create_runtime"]


class Runtime(Protocol):
    """Runs one artifact.

    ``run`` takes feeds and returns outputs in the ONNX model's terms - the names, layout and
    float32 dtype of the float reference - whatever the artifact's own layout and I/O dtype. The
    runtime owns the conversions (quantizing float feeds with the artifact's scale/zero-point,
    dequantizing outputs, NCHW <-> NHWC), so metrics always compare like with like.
    """

    name: str

    def load(self, artifact: Artifact) -> None: ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...


RUNTIMES: dict[str, str] = {
    "onnxruntime": "edgeq.runtimes.onnxrt:OnnxRuntime",
    "litert": "edgeq.runtimes.litert:LiteRT",
    "litert-ref": "edgeq.runtimes.litert:LiteRTReference",
}

# Which artifact formats each runtime can run.
FORMATS: dict[str, str] = {"onnxruntime": "onnx", "litert": "tflite", "litert-ref": "tflite"}


def create_runtime(name: str, **options: Any) -> Runtime:
    if name not in RUNTIMES:
        raise KeyError(f"unknown runtime '{name}'; known: {', '.join(RUNTIMES)}")
    module, cls = RUNTIMES[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)
