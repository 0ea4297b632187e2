"""PyTorch weights as untrusted input, through the command line: a pickle with a payload (also with
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1), random and truncated bytes. Each: exit 2, one error line naming
the file, --out untouched, no staging left, and the payload's canary never written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke_cli, make_fake_bundle, make_model_dir, snapshot, staging_leftovers


class _OpenOnLoad:
    """Pickles to a call of open(path, "w"): loading it without weights_only creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def _refused(d: Path, tmp_path: Path, message: str) -> None:
    out = make_fake_bundle(tmp_path / "dist" / "bundle")
    before = snapshot(out)
    result = invoke_cli(["build", str(d), "--out", str(out), "--runtime", "litert"])
    assert result.exit_code == 2, result.stdout + result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert snapshot(out) == before and staging_leftovers(out.parent) == []


@pytest.mark.parametrize("force_unsafe", [False, True], ids=["plain", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"])
def test_a_pickle_payload_never_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, force_unsafe: bool) -> None:
    import torch

    if force_unsafe:  # makes torch.load unpickle anything when weights_only is not passed; the export child inherits it
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    d = make_model_dir(tmp_path, model={"weights": "weights.pt"})
    canary = tmp_path / "canary"
    torch.save({"conv1.weight": _OpenOnLoad(canary)}, d / "weights.pt")
    _refused(d, tmp_path, "weights.pt could not be loaded without running pickled code (UnpicklingError); "
                          "save the weights with safetensors")
    assert not canary.exists()
    torch.load(d / "weights.pt", weights_only=False)  # the payload is live: an unsafe load runs it
    assert canary.exists()


@pytest.mark.parametrize("damage", ["random", "truncated", "empty"])
@pytest.mark.parametrize("weights", ["weights.safetensors", "weights.pt"])
def test_weights_that_are_not_weights(tmp_path: Path, weights: str, damage: str) -> None:
    import torch
    from safetensors.torch import load_file

    d = make_model_dir(tmp_path, model={"weights": weights})
    path = d / weights
    if weights.endswith(".pt"):
        torch.save(load_file(str(d / "weights.safetensors")), path)
    data = path.read_bytes()
    path.write_bytes({"random": os.urandom(4096), "truncated": data[: len(data) // 2], "empty": b""}[damage])
    message = ("is not a readable safetensors file" if weights.endswith(".safetensors")
               else "weights.pt could not be loaded without running pickled code")
    _refused(d, tmp_path, message)
