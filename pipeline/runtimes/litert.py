"""LiteRT (the TFLite runtime) on the host CPU, with its default XNNPACK kernels.

Feeds and outputs are in ONNX terms (see ``edgeq.runtimes.Runtime``); the artifact's ``meta``
(written by the convert stage) says how they map onto the .tflite signature.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq._fds import redirect_output
from edgeq.artifacts import Artifact
from edgeq.tflite_io import from_tflite, to_tflite

__all__ = ["LiteRT", "LiteRTReference"]


class LiteRT:
    """LiteRT on the host CPU with its default XNNPACK kernels; feeds and outputs in ONNX terms."""

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
        """Load the artifact's .tflite in a LiteRT interpreter and take its signature's runner."""
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
        """One sample's outputs: ONNX-named feeds in, ONNX-named float32 outputs back."""
        return from_tflite(self._runner(**to_tflite(feeds, self._meta)), self._meta)

    def describe(self) -> dict[str, Any]:
        """The runtime's name, LiteRT version, kernels and threads, for the report."""
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
