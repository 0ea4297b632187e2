"""TensorFlow Lite Micro (the ``tflite-micro`` package's interpreter): what a microcontroller runs.

TFLM runs a .tflite with its reference kernels in one tensor arena it plans at load; the
interpreter records the arena it used, which is the RAM a board must give it (``arena_bytes``, the
``arena_bytes`` gate). It has no signature runner: inputs and outputs go by their index in the
subgraph, mapped from the signature's names with LiteRT's reader. Its C++ code reports why a model
cannot be prepared (an op it has no kernel for, a hybrid model) on stderr only; the engine reads
that and names the op (exit 2).
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

import numpy as np

from edgeq._fds import redirect_output
from edgeq.artifacts import Artifact
from edgeq.errors import ModelError
from edgeq.tflite_io import from_tflite, to_tflite

__all__ = ["TFLiteMicro"]

_ARENA = re.compile(r"Arena allocation total (\d+) bytes")
_WHY = re.compile(r"Didn't find op for builtin opcode '(\w+)'|Node (\w+) \(number \d+\) failed to prepare|"
                  r"(Hybrid models are not supported[^\n]*)")


def _captured(call: Any) -> tuple[Any, str]:
    """``call()``'s result (or exception) and what it wrote to fds 1 and 2."""
    with tempfile.TemporaryDirectory() as tmp:
        sink = os.path.join(tmp, "out")
        with redirect_output(sink):
            try:
                result: Any = call()
            except Exception as e:  # reported with the text, by the caller
                result = e
        with open(sink, "rb") as f:
            return result, f.read(1 << 20).decode("utf-8", "replace")


class TFLiteMicro:
    """The TFLite Micro interpreter on the host (its reference kernels); feeds and outputs in ONNX terms."""

    name = "tflm"
    kernels = "TFLite Micro reference kernels"

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads  # as asked; TFLite Micro itself runs one thread (describe says so)
        self._interp: Any = None
        self._meta: dict[str, Any] = {}
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self.arena_bytes: int | None = None

    def load(self, artifact: Artifact) -> None:
        """Load the .tflite into a TFLM interpreter, measure its arena; ModelError naming an op it lacks."""
        from ai_edge_litert.interpreter import Interpreter
        from tflite_micro.python.tflite_micro import runtime

        data = artifact.path.read_bytes()
        loaded, text = _captured(lambda: runtime.Interpreter.from_bytes(data))
        if isinstance(loaded, Exception):
            found = _WHY.search(text)
            what = next((g for g in found.groups() if g), "") if found else ""
            why = f"it has no kernel for {what}" if found and found.group(1) else (
                f"{what} cannot be prepared" if found and found.group(2) else what or str(loaded))
            raise ModelError(f"TFLite Micro cannot run {artifact.path.name}: {why}; the mcu target needs ops TFLite "
                             "Micro implements, full-integer int8")
        self._interp = loaded
        _, text = _captured(self._interp.print_allocations)
        arena = _ARENA.search(text)
        self.arena_bytes = int(arena[1]) if arena else None
        signature = artifact.meta["signature"]
        lite = Interpreter(model_content=data)  # the signature's names -> the subgraph's input and output order
        runner = lite.get_signature_runner(signature)
        by_index = {d["index"]: name for name, d in runner.get_input_details().items()}
        self._inputs = [by_index[d["index"]] for d in lite.get_input_details()]
        by_index = {d["index"]: name for name, d in runner.get_output_details().items()}
        self._outputs = [by_index[d["index"]] for d in lite.get_output_details()]
        self._meta = artifact.meta

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One sample: ONNX-named feeds in, ONNX-named float32 outputs back."""
        arrays = to_tflite(feeds, self._meta)
        for k, name in enumerate(self._inputs):
            self._interp.set_input(np.ascontiguousarray(arrays[name]), k)
        self._interp.invoke()
        return from_tflite({name: self._interp.get_output(k) for k, name in enumerate(self._outputs)}, self._meta)

    def describe(self) -> dict[str, Any]:
        """The runtime, the tflite-micro version, its kernels, and the arena it used."""
        from importlib.metadata import version

        return {"runtime": self.name, "version": version("tflite-micro"), "kernels": self.kernels, "threads": 1,
                "host": True, "arena_bytes": self.arena_bytes}
