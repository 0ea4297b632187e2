"""LiteRT's reference kernels prepare a model in a child process first: an abort there is one line, not the end of edgeq."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgeq.runtimes.litert as litert
from edgeq.errors import ModelError


def test_a_model_the_reference_kernels_prepare_passes_the_probe(tmp_path: Path) -> None:
    from tflite_models import fc_model  # a small valid .tflite

    path = tmp_path / "m.tflite"
    path.write_bytes(fc_model())
    litert.LiteRTReference()._probe(path)


def test_kernels_that_abort_the_process_are_a_model_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(litert, "PROBE", "import os; os.abort()")  # what LiteRT's failed checks do
    path = tmp_path / "m.tflite"
    path.write_bytes(b"TFL3")
    with pytest.raises(ModelError, match=r"\(litert-ref\) end the process \(SIGABRT\) while preparing m.tflite"):
        litert.LiteRTReference()._probe(path)
    litert.LiteRT()._probe(path)  # the default kernels load in the process, as they always did
