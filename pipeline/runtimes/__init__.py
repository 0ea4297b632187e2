"""Edge runtimes that run artifacts, one module each, behind one protocol.

``RUNTIMES`` maps a runtime name (as used in targets/*.toml) to ``module:Class``; the module is
imported only when a build uses it. An emulated runtime takes a CPU profile after a colon
(``litert-arm64:cortex-a53``); each runtime:profile pair is validated on its own.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from edgeq.context import Artifact

__all__ = ["EMULATED", "FORMATS", "RUNTIMES", "Runtime", "check_name", "create_runtime", "split_name"]


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
    "litert-arm64": "edgeq.runtimes.arm64:LiteRTArm64",
}

# Which artifact formats each runtime can run.
FORMATS: dict[str, str] = {"onnxruntime": "onnx", "litert": "tflite", "litert-ref": "tflite", "litert-arm64": "tflite"}

# Runtimes that run under an emulator: they need a CPU profile and `edgeq emulator setup NAME`.
EMULATED: dict[str, str] = {"litert-arm64": "arm64"}


def split_name(name: str) -> tuple[str, str | None]:
    """``litert-arm64:cortex-a53`` -> (``litert-arm64``, ``cortex-a53``); ``litert`` -> (``litert``, None)."""
    base, _, profile = name.partition(":")
    return base, (profile or None)


def check_name(name: str) -> None:
    """KeyError with the choices unless ``name`` is a known runtime (with a known profile if it needs one)."""
    from edgeq.emulator.profiles import PROFILES

    base, profile = split_name(name)
    if base not in RUNTIMES:
        raise KeyError(f"unknown runtime '{base}'; known: {', '.join(RUNTIMES)}")
    if base in EMULATED:
        if profile not in PROFILES:
            what = f"unknown CPU profile '{profile}'" if profile else "a CPU profile is needed"
            raise KeyError(f"runtime '{name}': {what}; choose one of: {', '.join(f'{base}:{p}' for p in PROFILES)}")
    elif profile is not None:
        raise KeyError(f"runtime '{name}': {base} runs on the host and takes no CPU profile; write '{base}'")


def create_runtime(name: str, **options: Any) -> Runtime:
    check_name(name)
    base, profile = split_name(name)
    module, cls = RUNTIMES[base].split(":")
    if profile is not None:
        options["profile"] = profile
    return getattr(importlib.import_module(module), cls)(**options)
