"""Benchmark: peak memory of edgeq's quantize stage (calibration + quantize_static) on the digits sample.

    .venv/bin/python bench/calibration_memory.py

The digits sample's float ONNX is exported once; then each measurement runs in a fresh child process
that quantizes it with N calibration samples and reports its RSS high-water mark (VmHWM of
/proc/self/status; ``getrusage`` ru_maxrss would include the parent's, which Linux carries across
exec). The mark is reset (``/proc/self/clear_refs``) just before quantizing, so the growth while
quantizing is measured on its own:

* ``edgeq``: the quantize stage, which feeds onnxruntime's calibrator 64 samples per collect_data.
* ``one pass``: ``quantize_static`` over the same samples in one collect_data call (samples streamed
  from the memory-mapped .npy, no ``CalibMaxIntermediateOutputs``): what every sample costs when the
  calibrator keeps them all, as edgeq's entropy and percentile did before.

200 samples are the sample's own calibration set; 2,000 are those 200 repeated ten times with
Gaussian noise (sigma 0.05, fixed seed, clipped to the sample's [-1, 1]). One pass with a histogram
method keeps every sample's activations (about 5 MiB each for digits), so it is run at 200 samples
only. Writes bench/calibration_memory.json and the "Calibration memory" section of bench/RESULTS.md
(bench/run.py rewrites RESULTS.md without it: run this again after `make bench`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine, write_section

os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # offline, like edgeq itself

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_models" / "digits"
SEED = 0
HEADING = "## Calibration memory: digits, quantize stage"
COMMAND = ".venv/bin/python bench/calibration_memory.py"
RUNS = (  # (path, method, samples)
    ("edgeq", "minmax", 200), ("edgeq", "minmax", 2000),
    ("edgeq", "entropy", 200), ("edgeq", "entropy", 2000),
    ("one pass", "minmax", 200), ("one pass", "minmax", 2000),
    ("one pass", "entropy", 200),
)


def _context(model_dir: Path, work: Path) -> Any:
    """A BuildContext for ``model_dir`` as edgeq.build makes one, without running any stage."""
    from edgeq.config import load_model_spec, load_target
    from edgeq.context import BuildContext
    from edgeq.data import ArrayDataset
    from edgeq.tasks import make_task

    spec = load_model_spec(model_dir)
    calibration = ArrayDataset.open(spec.data.calibration, spec.inputs, "calibration", limit=spec.data.calibration_samples)
    evaluation = ArrayDataset.open(spec.data.eval, spec.inputs, "eval", want_labels=spec.task.kind == "classification")
    target = load_target("android").with_io_dtype(spec.io_dtype)
    (work / "build").mkdir(parents=True)
    (work / "bundle").mkdir(parents=True)
    return BuildContext(spec=spec, target=target, build_dir=work / "build", bundle_dir=work / "bundle",
                        gates=target.gate_limits(spec.gates, {}), task=make_task(spec), calibration=calibration,
                        eval=evaluation)


def _model_dir(work: Path, samples: int) -> Path:
    """A copy of the digits sample whose calibration set has ``samples`` samples."""
    root = work / f"digits_{samples}"
    if root.exists():
        return root
    shutil.copytree(SAMPLE, root)
    x = np.load(SAMPLE / "data" / "calibration" / "image.npy")
    if samples != len(x):
        rng = np.random.default_rng(SEED)
        reps = -(-samples // len(x))
        x = np.tile(x, (reps, 1, 1, 1))[:samples]
        x = np.clip(x + rng.normal(0.0, 0.05, x.shape), -1.0, 1.0).astype(np.float32)
    np.save(root / "data" / "calibration" / "image.npy", x)
    return root


def _memory() -> dict[str, int]:
    """This process's resident set size now (VmRSS) and its high-water mark (VmHWM), in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _reset_peak() -> None:
    """Start a new high-water mark at the current RSS (Linux 4.0+)."""
    Path("/proc/self/clear_refs").write_text("5")


def job(path: str, method: str, samples: int, work: Path, float_onnx: Path) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    from dataclasses import replace

    import onnxruntime  # noqa: F401  (loaded before the 'before' mark: both paths need it)
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeq.artifacts import Artifact
    from edgeq.results import CalibrationResult
    from edgeq.stages.quantize import STAGE as QUANTIZE
    from edgeq.stages.quantize import _reader

    ctx = _context(_model_dir(work, samples), work / f"run_{path.replace(' ', '_')}_{method}_{samples}")
    ctx.spec = replace(ctx.spec, quantization=replace(ctx.spec.quantization, method=method))
    assert len(ctx.calibration) == samples
    setup = _memory()
    _reset_peak()
    t0 = time.perf_counter()
    if path == "edgeq":
        ctx.add(Artifact("onnx_float", float_onnx, "onnx", "float32", {"outputs": ["logits"]}))
        ctx.put(CalibrationResult({"model": ctx.calibration}))
        QUANTIZE.run(ctx)
    else:
        pre = ctx.build_dir / "model.preprocessed.onnx"
        quant_pre_process(str(float_onnx), str(pre), skip_symbolic_shape=True)
        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}
        quantize_static(str(pre), str(ctx.build_dir / "model.int8.onnx"), _reader(ctx.calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=methods[method],
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    seconds = time.perf_counter() - t0
    peak = _memory()["VmHWM"]
    return {"path": path, "method": method, "samples": samples, "seconds": round(seconds, 2),
            "rss_before": setup["VmRSS"], "peak_while_quantizing": peak, "process_peak": max(peak, setup["VmHWM"])}


def _export(work: Path) -> Path:
    from edgeq.stages.export import STAGE as EXPORT

    ctx = _context(SAMPLE, work / "export")
    EXPORT.run(ctx)
    return ctx.artifacts["onnx_float"]["model"].path


def _mib(b: int) -> str:
    return f"{b / 2**20:.0f}"


def section(r: dict[str, Any]) -> list[str]:
    """The RESULTS.md section for a results dict."""
    lines = [
        HEADING,
        "",
        f"Produced by `{r['command']}` on {r['date']} - {r['machine']}. Versions: {r['versions']}.",
        "Each row is a fresh child process quantizing the digits sample's float ONNX (pre-process, calibration,",
        "`quantize_static`): its RSS high-water mark (VmHWM), and the growth while quantizing (the mark, reset",
        "just before, minus the RSS then: Python, onnxruntime and edgeq loaded, data memory-mapped).",
        "edgeq feeds onnxruntime's calibrator 64 samples per `collect_data` (entropy: plus one streaming pass",
        "for each tensor's range); one pass is `quantize_static` with every sample in one `collect_data` (how",
        "edgeq's entropy and percentile calibrated before; its minmax kept memory flat by dropping all but the",
        "last chunk of samples).",
        f"2,000 samples: the 200 calibration samples repeated with Gaussian noise (sigma 0.05, seed {SEED}).",
        f"The machine is shared (1-minute load average {r['load_average_1min_at_start']} at the start): wall times are",
        "indicative, memory is not affected.",
        "",
        "| path | method | samples | wall time (s) | process peak RSS (MiB) | growth while quantizing (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["runs"]:
        lines.append(f"| {row['path']} | {row['method']} | {row['samples']} | {row['seconds']:.2f} | "
                     f"{_mib(row['process_peak'])} | {_mib(row['peak_while_quantizing'] - row['rss_before'])} |")
    lines += ["", "One pass with entropy keeps every sample's activations until it builds the histograms; it was not",
              "run at 2,000 samples.", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", nargs=3, metavar=("PATH", "METHOD", "SAMPLES"), help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--float-onnx", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = ap.parse_args()
    if args.job:
        path, method, samples = args.job
        print(json.dumps(job(path, method, int(samples), args.work, args.float_onnx)))
        return
    results: dict[str, Any] = {
        "command": COMMAND,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": ", ".join(f"{n} {metadata.version(n)}" for n in ("onnx", "onnxruntime", "numpy")),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="edgeq-calibration-memory-") as tmp:
        work = Path(tmp)
        float_onnx = _export(work)
        for samples in sorted({n for _, _, n in RUNS}):
            _model_dir(work, samples)  # here, not in the children: their memory is what quantizing takes
        for path, method, samples in RUNS:  # one child at a time: each peak is its own
            proc = subprocess.run([sys.executable, __file__, "--job", path, method, str(samples), "--work", str(work),
                                   "--float-onnx", str(float_onnx)], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"{path} {method} {samples}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            print(row, flush=True)
            results["runs"].append(row)
    args.out.with_name("calibration_memory.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    write_section(HEADING, section(results), args.out)
    print("\n".join(section(results)))


if __name__ == "__main__":
    main()
