"""End to end: `edgeq build sample_models/translator --target android` on host LiteRT, then the bundle
on its own.

The build validates on host LiteRT only (`-r litert`): not on LiteRT's reference kernels, whose
decoding of the 300 sentences takes 28 s of this suite's time, nor on the target's two emulated
arm64 cores (about 4.5 minutes). Neither checks code that the tiny translator's build
(tests/test_translation_build.py: every eval sentence decoded on the reference kernels and inside
qemu on both profiles, the BLEU gate between runtimes) does not. The sample's numbers on every
runtime are measured by `make bench` (bench/RESULTS.md) and `make demo-translator`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_models" / "translator"
EDGEQ = [sys.executable, "-m", "edgeq"]
HOST_RUNTIMES = ["-r", "litert"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("translator") / "bundle"
    proc = subprocess.run([*EDGEQ, "build", str(SAMPLE), "--target", "android", "--out", str(out), *HOST_RUNTIMES],
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return out


def test_bundle_files_and_manifest(bundle: Path) -> None:
    names = sorted(p.name for p in bundle.iterdir())
    assert names == ["attribution.png", "decoder.tflite", "encoder.tflite", "manifest.json", "model.json", "report.json",
                     "report.md", "tokenizer.model"]
    assert (bundle / "attribution.png").read_bytes()[:4] == b"\x89PNG"  # a panel per graph: encoder, decoder
    report = json.loads((bundle / "report.json").read_text())
    assert set(report["attribution_tflite"]["tflite_int8"]) == {"encoder", "decoder"}
    manifest = json.loads((bundle / "manifest.json").read_text())
    for f in manifest["files"]:
        data = (bundle / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"]
    model = json.loads((bundle / "model.json").read_text())
    task = model["task"]
    assert (task["kind"], task["bos_id"], task["eos_id"], task["pad_id"]) == ("translation", 1, 2, 0)
    assert (task["source_length"], task["target_length"]) == (32, 32)
    assert {g: v["file"] for g, v in model["graphs"].items()} == {"encoder": "encoder.tflite", "decoder": "decoder.tflite"}


def test_int8_translates_as_well_as_float(bundle: Path) -> None:
    report = json.loads((bundle / "report.json").read_text())
    assert report["passed"] is True
    ref = report["reference"]["metrics"]
    assert ref["bleu"] >= 80 and ref["sentences"] == 300
    int8 = report["artifacts"]["tflite_int8"]["runtimes"]["litert"]["task"]
    assert ref["bleu"] - int8["bleu"] <= 1.0
    assert report["size"]["shipped_to_float32_ratio"] <= 0.35
    for insp in report["artifacts"]["tflite_int8"]["inspection"].values():
        assert insp["compute_ops"] > 0 and insp["non_int8_compute_ops"] == []
        assert {"FULLY_CONNECTED", "BATCH_MATMUL"} <= set(insp["ops"])


def test_the_bundle_alone_decodes_the_test_set(bundle: Path) -> None:
    """`edgeq translate` uses only the bundle (model.json, tokenizer, .tflite files) on LiteRT."""
    import sacrebleu

    proc = subprocess.run([*EDGEQ, "translate", str(bundle), "--file", str(SAMPLE / "data" / "test" / "source.txt")],
                          capture_output=True, text=True, timeout=600, check=True)
    hyps = proc.stdout.splitlines()
    refs = (SAMPLE / "data" / "test" / "target.txt").read_text(encoding="utf-8").splitlines()
    assert len(hyps) == len(refs) == 300
    report = json.loads((bundle / "report.json").read_text())
    bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
    assert bleu == pytest.approx(report["artifacts"]["tflite_int8"]["runtimes"]["litert"]["task"]["bleu"])


def test_validated_on_host_litert(bundle: Path) -> None:
    report = json.loads((bundle / "report.json").read_text())
    runtimes = report["artifacts"]["tflite_int8"]["runtimes"]
    assert sorted(runtimes) == ["litert"]
    assert runtimes["litert"]["task"]["sentences"] == 300
