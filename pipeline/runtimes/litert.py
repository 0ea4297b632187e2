"""LiteRT (the TFLite runtime) on the host CPU, with its default XNNPACK kernels.

Feeds and outputs are in ONNX terms (see ``edgeq.runtimes.Runtime``); the artifact's ``meta``
(written by the convert stage) says how they map onto the .tflite signature.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgeq._fds import redirect_output
from edgeq._proc import die_with_parent
from edgeq.artifacts import Artifact
from edgeq.errors import ModelError
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

        self._probe(artifact.path)
        with redirect_output(stdout=False):  # LiteRT logs "INFO: Created ... delegate" on stderr
            self._interp = Interpreter(
                model_path=str(artifact.path), num_threads=self.threads,
                experimental_op_resolver_type=self._resolver(),
            )
            self._interp.allocate_tensors()
            self._runner = self._interp.get_signature_runner(artifact.meta["signature"])
        self._meta = artifact.meta

    def _probe(self, path: Path) -> None:
        """Nothing to do before loading with the default kernels."""

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

    def _probe(self, path: Path) -> None:
        """Prepare the file with these kernels in a child process first: some abort the process while they
        prepare a model (a failed check in LiteRT's C++, e.g. on MobileNetV3's and EfficientNet's int8
        graphs), which in edgeq's own process would end the build with no word. ModelError instead."""
        done = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, timeout=600, check=False,
                              preexec_fn=die_with_parent())
        if done.returncode < 0:
            try:
                how = signal.Signals(-done.returncode).name
            except ValueError:
                how = f"signal {-done.returncode}"
            raise ModelError(f"LiteRT's reference kernels ({self.name}) end the process ({how}) while preparing "
                             f"{path.name}: a LiteRT failure on this model, not a measurement; validate without them "
                             "(-r for each other runtime of the target, e.g. -r litert -r litert-arm64:cortex-a53)")


# Load and prepare a .tflite with LiteRT's reference kernels: the probe's child process (argv[1]: the file).
PROBE = ("import sys; from ai_edge_litert.interpreter import Interpreter, OpResolverType; "
         "Interpreter(model_path=sys.argv[1], experimental_op_resolver_type=OpResolverType.BUILTIN_REF).allocate_tensors()")
