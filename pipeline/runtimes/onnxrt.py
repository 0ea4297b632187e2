"""onnxruntime on the host CPU: the float reference and the INT8 (QDQ) ONNX artifact."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq.artifacts import Artifact

__all__ = ["OnnxRuntime"]


class OnnxRuntime:
    """onnxruntime on the host CPU (CPUExecutionProvider)."""

    name = "onnxruntime"

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._session: Any = None
        self._outputs: list[str] = []

    def load(self, artifact: Artifact) -> None:
        """Open the artifact's ONNX file in an onnxruntime session and note the outputs to fetch."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(artifact.path), opts, providers=["CPUExecutionProvider"])
        self._outputs = list(artifact.meta.get("outputs") or [o.name for o in self._session.get_outputs()])

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One sample's outputs by name, as float32 arrays."""
        values = self._session.run(self._outputs, feeds)
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(self._outputs, values, strict=False)}

    def describe(self) -> dict[str, Any]:
        """The runtime's name, onnxruntime version, provider and threads, for the report."""
        import onnxruntime as ort

        return {"runtime": self.name, "version": ort.__version__, "provider": "CPUExecutionProvider",
                "threads": self.threads, "host": True}
