"""Benchmark: edgeq on its samples vs the pipelines a user would otherwise script by hand.

    .venv/bin/python bench/run.py            (or: make bench)

Writes bench/RESULTS.md (and bench/results.json) from one run on this machine:

* edgeq: `edgeq build sample_models/digits --target android`, per-stage wall time and peak RSS.
* baseline 1: onnxruntime `quantize_static` with its defaults on the same float ONNX and the same
  calibration data, evaluated on onnxruntime.
* baseline 2: `onnx2tf -oiqt` on the same float ONNX with the same calibration data (`-cind`),
  its `*_integer_quant.tflite` (float I/O, like edgeq's default) evaluated on LiteRT.
* LiteRT latency (1 thread, XNNPACK, median of many invokes, float32 and INT8 interleaved in
  the same run) of edgeq's float32 and INT8 .tflite and of the onnx2tf baseline's INT8 file.

* the translator sample, and onnxruntime's dynamic INT8 quantization of the same graphs
  (bench/translator.py).

Every job runs in its own child process so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from _common import PeakRSS, interleaved_latency, machine, mb, runtime_summary, runtime_table, stage_table, timed_build

# Offline, like edgeq itself: onnxruntime sends telemetry from Linux unless this is set first.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_models" / "digits"
LATENCY_ROUNDS = 40  # rounds of (float32 x N, int8 x N, baseline x N), interleaved
LATENCY_PER_ROUND = 25


def _eval_set() -> tuple[np.ndarray, np.ndarray]:
    x = np.load(SAMPLE / "data" / "eval" / "image.npy")
    y = np.load(SAMPLE / "data" / "eval" / "labels.npy")
    return x, y


def _reference_logits(work: Path) -> np.ndarray:
    import onnxruntime as ort

    x, _ = _eval_set()
    sess = ort.InferenceSession(str(work / "build" / "model.float.onnx"), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"image": x[i : i + 1]})[0] for i in range(len(x))])


def _scores(logits: np.ndarray, work: Path) -> dict[str, float]:
    """Top-1 accuracy, top-1 agreement with the float reference, and SQNR (dB) of the logits."""
    _, y = _eval_set()
    ref = _reference_logits(work)
    sqnr = 10 * np.log10(float((ref.astype(np.float64) ** 2).sum()) / float(((ref - logits).astype(np.float64) ** 2).sum()))
    return {"accuracy": float((logits.argmax(1) == y).mean()),
            "agreement": float((logits.argmax(1) == ref.argmax(1)).mean()), "sqnr_db": float(sqnr)}


def job_edgeq(work: Path) -> dict[str, Any]:
    outcome, timing = timed_build(SAMPLE, work / "bundle", work / "build")
    r = outcome.report
    shipped = r["artifacts"]["tflite_int8"]["runtimes"]["litert"]["task"]
    sq = {k: r["artifacts"][k]["runtimes"][rt]["outputs"]["model"]["logits"]["sqnr_db"]
          for k, rt in (("tflite_int8", "litert"), ("onnx_int8", "onnxruntime"))}
    onnx_task = r["artifacts"]["onnx_int8"]["runtimes"]["onnxruntime"]["task"]
    return {
        **timing,
        "float_accuracy": r["reference"]["metrics"]["top1_accuracy"],
        "int8_onnx": {"accuracy": onnx_task["top1_accuracy"], "agreement": onnx_task["top1_agreement"],
                      "sqnr_db": sq["onnx_int8"]},
        "int8_tflite": {"accuracy": shipped["top1_accuracy"], "agreement": shipped["top1_agreement"],
                        "sqnr_db": sq["tflite_int8"]},
        "float32_tflite_bytes": r["size"]["float32_tflite_bytes"],
        "int8_tflite_bytes": r["size"]["shipped_tflite_bytes"],
        "size_ratio": r["size"]["shipped_to_float32_ratio"],
        "passed": r["passed"],
        "runtimes": runtime_summary(r),
    }


def job_edgeq_host_only(work: Path) -> dict[str, Any]:
    """The same build validated on the host runtimes only: what the emulated cores add."""
    outcome, timing = timed_build(SAMPLE, work / "bundle_host", work / "build_host", runtimes=("litert", "litert-ref"))
    return {**timing, "passed": outcome.report["passed"]}


def job_ort_baseline(work: Path) -> dict[str, Any]:
    """What the onnxruntime docs show: quantize_static with its defaults."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    calib = np.load(SAMPLE / "data" / "calibration" / "image.npy")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib[i : i + 1] for i in range(len(calib)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {"image": x}

    mem = PeakRSS()
    t0 = time.perf_counter()
    out = work / "ort_default.int8.onnx"
    quantize_static(str(work / "build" / "model.float.onnx"), str(out), Reader())
    seconds = time.perf_counter() - t0
    peak = max(mem.stop().values())
    x, _ = _eval_set()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(None, {"image": x[i : i + 1]})[0] for i in range(len(x))])
    return {"seconds": seconds, "peak_rss": peak, "int8_onnx": _scores(logits, work), "bytes": out.stat().st_size}


def _tflite_logits(path: Path, x: np.ndarray | None = None) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    x = _eval_set()[0] if x is None else x
    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    rows = []
    for i in range(len(x)):
        xi = x[i : i + 1].transpose(0, 2, 3, 1)
        if inp["dtype"] != np.float32:
            s, z = inp["quantization"]
            xi = np.clip(np.round(xi / s) + z, -128, 127).astype(inp["dtype"])
        it.set_tensor(inp["index"], xi)
        it.invoke()
        rows.append(it.get_tensor(outp["index"]).astype(np.float32))
    return np.concatenate(rows)


def job_onnx2tf_baseline(work: Path) -> dict[str, Any]:
    """The hand-scripted path: `onnx2tf -oiqt` with the same calibration data (NHWC for -cind)."""
    import psutil

    calib = np.load(SAMPLE / "data" / "calibration" / "image.npy").transpose(0, 2, 3, 1)
    cind = work / "calib_nhwc.npy"
    np.save(cind, calib)
    out = work / "onnx2tf_out"
    exe = Path(sys.executable).with_name("onnx2tf")
    # The sample's data is already normalized: mean 0, std 1 leaves it as it is.
    cmd = [str(exe), "-i", str(work / "build" / "model.float.onnx"), "-o", str(out), "-oiqt",
           "-cind", "image", str(cind), "[[[[0.0]]]]", "[[[[1.0]]]]", "-n"]
    t0 = time.perf_counter()
    with open(work / "onnx2tf.log", "wb") as log:
        proc = psutil.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        peak = 0
        while proc.poll() is None:
            try:
                peak = max(peak, proc.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.005)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"onnx2tf failed with exit {proc.returncode}; see {work / 'onnx2tf.log'}")
    f32 = out / "model.float_float32.tflite"
    i8 = out / "model.float_integer_quant.tflite"
    return {"seconds": seconds, "peak_rss": peak, "int8_tflite": _scores(_tflite_logits(i8), work),
            "float32_tflite_bytes": f32.stat().st_size, "int8_tflite_bytes": i8.stat().st_size,
            "size_ratio": i8.stat().st_size / f32.stat().st_size, "int8_path": str(i8)}


SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1), (2, 0), (-2, 0), (0, 2), (0, -2))


def _shifted_set() -> tuple[np.ndarray, np.ndarray]:
    """The eval images moved by 1 and 2 pixels in each direction (background -1 filled in): a
    larger, harder set whose borderline samples show quantization error that 360 samples hide."""
    x, y = _eval_set()
    h, w = x.shape[2:]
    xs = []
    for dy, dx in SHIFTS:
        s = np.full_like(x, -1.0)
        s[:, :, max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)] = \
            x[:, :, max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
        xs.append(s)
    return np.concatenate(xs), np.tile(y, len(SHIFTS))


def _onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"image": x[i : i + 1]})[0] for i in range(len(x))])


def job_shifted(work: Path, baseline_int8: str) -> dict[str, Any]:
    x, y = _shifted_set()
    ref = _onnx_logits(work / "build" / "model.float.onnx", x)
    runs = {
        "edgeq INT8 .tflite (LiteRT)": _tflite_logits(work / "build" / "model.int8.tflite", x),
        "edgeq INT8 ONNX (onnxruntime)": _onnx_logits(work / "build" / "model.int8.onnx", x),
        "quantize_static defaults (onnxruntime)": _onnx_logits(work / "ort_default.int8.onnx", x),
        "onnx2tf -oiqt (LiteRT)": _tflite_logits(Path(baseline_int8), x),
    }
    out = {"samples": len(x), "float_accuracy": float((ref.argmax(1) == y).mean())}
    for name, logits in runs.items():
        err = float(((ref.astype(np.float64) - logits) ** 2).sum())
        out[name] = {"accuracy": float((logits.argmax(1) == y).mean()),
                     "agreement": float((logits.argmax(1) == ref.argmax(1)).mean()),
                     "sqnr_db": float(10 * np.log10(float((ref.astype(np.float64) ** 2).sum()) / err))}
    return out


def job_latency(work: Path, baseline_int8: str) -> dict[str, Any]:
    """LiteRT, 1 thread, default (XNNPACK) kernels; the models take turns so drift hits all alike."""
    from ai_edge_litert.interpreter import Interpreter

    x, _ = _eval_set()
    files = {"edgeq float32": work / "build" / "model.float32.tflite", "edgeq int8": work / "build" / "model.int8.tflite",
             "onnx2tf -oiqt int8": Path(baseline_int8)}
    invokes = {}
    for name, path in files.items():
        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], x[:1].transpose(0, 2, 3, 1).astype(d["dtype"]))
        invokes[name] = it.invoke
    return interleaved_latency(invokes, LATENCY_ROUNDS, LATENCY_PER_ROUND, warmup=50)


def _child(job: str, work: Path, *extra: str) -> dict[str, Any]:
    out = work / f"{job}.json"
    subprocess.run([sys.executable, __file__, "--job", job, "--work", str(work), *extra], check=True)
    return json.loads(out.read_text())


def _versions() -> str:
    names = ("onnx", "onnxruntime", "onnx2tf", "tensorflow-cpu", "ai-edge-litert", "torch")
    return ", ".join(f"{n} {metadata.version(n)}" for n in names)


def _s(m: dict[str, float]) -> str:
    return f"{m['accuracy']:.4f} | {m['agreement']:.4f} | {m['sqnr_db']:.1f}"


def write_results(r: dict[str, Any], path: Path) -> None:
    e, ob, tb, lat, sh = r["edgeq"], r["ort_baseline"], r["onnx2tf_baseline"], r["latency"], r["shifted"]
    host = r["edgeq_host_only"]
    f32, i8, b8 = lat["edgeq float32"], lat["edgeq int8"], lat["onnx2tf -oiqt int8"]
    lines = [
        "# edgeq benchmark: the samples, android target",
        "",
        f"Produced by `{r['command']}` on {r['date']} - {r['machine']}. Versions: {r['versions']}.",
        "All numbers below come from that one run; rerun the command to reproduce them.",
        "",
        "## Digits sample: edgeq build, per stage",
        "",
        *stage_table(e, "**total** (incl. input checks)"),
    ]
    lines += [
        "## Accuracy and size (360 held-out eval samples)",
        "",
        "Agreement is the share of samples whose top-1 class equals the float model's; SQNR compares the",
        "logits with the float model's (higher is closer).",
        "",
        "| pipeline | artifact | runtime | top-1 | agreement | SQNR dB | INT8 / float32 bytes | wall time (s) | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| float reference | float ONNX | onnxruntime | {e['float_accuracy']:.4f} | 1 | - | - | - | - |",
        f"| edgeq | INT8 .tflite (shipped) | LiteRT | {_s(e['int8_tflite'])} | "
        f"{e['int8_tflite_bytes']} / {e['float32_tflite_bytes']} = **{e['size_ratio']:.3f}** | "
        f"{e['total_seconds']:.1f} (whole build) | {mb(e['peak_rss'])} |",
        f"| edgeq | INT8 ONNX (QDQ, per-channel) | onnxruntime | {_s(e['int8_onnx'])} | - | (in build) | - |",
        f"| baseline: `quantize_static` defaults | INT8 ONNX | onnxruntime | {_s(ob['int8_onnx'])} | - | "
        f"{ob['seconds']:.1f} | {mb(ob['peak_rss'])} |",
        f"| baseline: `onnx2tf -oiqt -cind` | `*_integer_quant.tflite` | LiteRT | {_s(tb['int8_tflite'])} | "
        f"{tb['int8_tflite_bytes']} / {tb['float32_tflite_bytes']} = {tb['size_ratio']:.3f} | {tb['seconds']:.1f} | "
        f"{mb(tb['peak_rss'])} |",
        "",
        f"Top-1 accuracy, edgeq's shipped INT8 .tflite minus the float model: "
        f"{100 * (e['int8_tflite']['accuracy'] - e['float_accuracy']):+.2f} points; minus the onnx2tf baseline's "
        f"INT8 .tflite: {100 * (e['int8_tflite']['accuracy'] - tb['int8_tflite']['accuracy']):+.2f} points. "
        f"edgeq's INT8 ONNX minus the quantize_static baseline's INT8 ONNX: "
        f"{100 * (e['int8_onnx']['accuracy'] - ob['int8_onnx']['accuracy']):+.2f} points "
        f"(one sample is {100 / 360:.2f} points).",
        "The baselines do no validation: their accuracy was measured by this script, not by the tools.",
        "",
        f"### The same pipelines on {sh['samples']} shifted eval images",
        "",
        "The 360 eval images moved by 1 and 2 pixels up, down, left and right: a larger and harder set, with",
        "more samples near a decision boundary, where quantization error shows as changed answers.",
        "",
        "| pipeline | top-1 | agreement with float | SQNR dB |",
        "|---|---|---|---|",
        f"| float reference (onnxruntime) | {sh['float_accuracy']:.4f} | 1 | - |",
        *[f"| {name} | {_s(m)} |" for name, m in sh.items() if isinstance(m, dict)],
        "",
        f"## LiteRT latency (host CPU, 1 thread, XNNPACK; {f32['runs']} invokes each, interleaved)",
        "",
        "| model | median (ms) | p10 (ms) | p90 (ms) |",
        "|---|---|---|---|",
    ]
    for name, v in lat.items():
        lines.append(f"| {name} | {v['median_ms']:.4f} | {v['p10_ms']:.4f} | {v['p90_ms']:.4f} |")
    lines += [
        "",
        f"edgeq INT8 / float32 median latency: **{i8['median_ms'] / f32['median_ms']:.3f}**; "
        f"onnx2tf baseline INT8 / edgeq float32: {b8['median_ms'] / f32['median_ms']:.3f}.",
        "These are x86 host numbers, not phone latency.",
        "",
        "## Digits: the shipped model on every runtime of the android target",
        "",
        "Host LiteRT (XNNPACK), its reference kernels, and the aarch64 LiteRT under qemu-user on a low-end",
        "(Cortex-A53, no dot product) and a recent (Cortex-A76, dot product) phone core. Differences are",
        "measured against host LiteRT in quantization steps of the logits. Wall time under emulation is",
        "what validating there cost on this host, not the latency of a phone.",
        "",
        *runtime_table(e["runtimes"], translation=False),
        f"Whole build with the emulated cores: {e['total_seconds']:.1f} s (validate {e['stage_seconds']['validate']:.1f} s); "
        f"validated on host runtimes only (`--runtime litert --runtime litert-ref`): {host['total_seconds']:.1f} s "
        f"(validate {host['stage_seconds']['validate']:.1f} s). The two arm64 profiles add "
        f"**{e['stage_seconds']['validate'] - host['stage_seconds']['validate']:.1f} s** to validation.",
        "",
    ]
    if "translator" in r:
        import translator

        lines += translator.section(r["translator"], r["translator_dynamic"])
    text = "\n".join(lines)
    # Sections other scripts write (bench/calibration_memory.py) are kept as they are.
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    kept = old.find(KEPT_SECTION)
    if kept >= 0:
        text = text.rstrip("\n") + "\n\n" + old[kept:]
    path.write_text(text, encoding="utf-8")


KEPT_SECTION = "## Calibration memory"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", choices=["edgeq", "edgeq-host-only", "ort", "onnx2tf", "latency", "shifted", "translator",
                                      "translator-dynamic"])
    ap.add_argument("--work", type=Path)
    ap.add_argument("--baseline-int8")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.job:
        fn = {"edgeq": job_edgeq, "edgeq-host-only": job_edgeq_host_only, "ort": job_ort_baseline,
              "onnx2tf": job_onnx2tf_baseline}.get(args.job)
        if args.job.startswith("translator"):
            import translator

            job = translator.job_translator_edgeq if args.job == "translator" else translator.job_translator_dynamic
            result = job(args.work, PeakRSS)
        elif fn:
            result = fn(args.work)
        else:
            result = (job_latency if args.job == "latency" else job_shifted)(args.work, args.baseline_int8)
        (args.work / f"{args.job}.json").write_text(json.dumps(result, indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-") as tmp:
        work = Path(tmp)
        results = {
            "command": "make bench  (.venv/bin/python bench/run.py)",
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "versions": _versions(),
        }
        results["edgeq"] = _child("edgeq", work)
        results["edgeq_host_only"] = _child("edgeq-host-only", work)
        results["ort_baseline"] = _child("ort", work)
        results["onnx2tf_baseline"] = _child("onnx2tf", work)
        results["latency"] = _child("latency", work, "--baseline-int8", results["onnx2tf_baseline"]["int8_path"])
        results["shifted"] = _child("shifted", work, "--baseline-int8", results["onnx2tf_baseline"]["int8_path"])
        results["onnx2tf_baseline"].pop("int8_path")
        results["translator"] = _child("translator", work)
        results["translator_dynamic"] = _child("translator-dynamic", work)
    write_results(results, args.out)
    args.out.with_name("results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
