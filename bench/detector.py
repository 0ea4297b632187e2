"""Benchmark: the detector sample (YOLO-style, pixel boxes and sigmoid scores in one output).

    .venv/bin/python bench/detector.py          -> the "Detector sample" section of bench/RESULTS.md,
                                                   bench/detector.json

Three jobs, each in its own child process:

* repaired: `edgeq build sample_models/detector --target android` (repair on, the default; every
  runtime of the target, the emulated arm64 cores included): mAP against the labelled boxes of the
  float model and of the shipped model on each runtime, the repair's tries, sizes, build time.
* converted: the same build with `--no-repair` on the host runtimes: the INT8 model as the TFLite
  converter writes it, and the gate it fails.
* latency: LiteRT on the host CPU, 1 thread, default kernels (XNNPACK; LiteRT runs the 16-bit ops on
  its builtin kernels), the float32 .tflite, the INT8 .tflite as converted and the repaired one, in
  interleaved rounds so that drift hits all alike.

bench/run.py rewrites RESULTS.md without this section: run this again after `make bench`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from _common import interleaved_latency, machine, timed_build, write_section

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_models" / "detector"
HEADING = "## Detector sample (YOLO-style head), android target"
COMMAND = ".venv/bin/python bench/detector.py"
LATENCY_ROUNDS = 30
LATENCY_PER_ROUND = 20


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    arts = report["artifacts"]
    shipped = arts["tflite_int8"]
    return {
        "passed": report["passed"],
        "float": report["reference"]["metrics"],
        "float32_tflite": arts["tflite_float32"]["runtimes"]["litert"]["task"],
        "shipped": {rt: e["task"] for rt, e in shipped["runtimes"].items()},
        "bytes": {k: arts[k]["bytes"] for k in ("onnx_float", "onnx_int8", "tflite_float32", "tflite_int8")},
        "gates": [{k: g.get(k) for k in ("name", "runtime", "value", "limit", "passed")} for g in report["gates"]],
        "repair": report.get("repair", {}),
        "inspection": shipped["inspection"]["model"],
        "validation_seconds": {rt: e["describe"]["validation_seconds"]["wall"] for rt, e in shipped["runtimes"].items()
                               if e["describe"].get("emulated")},
    }


def job_repaired(work: Path) -> dict[str, Any]:
    outcome, timing = timed_build(SAMPLE, work / "repaired", work / "repaired_build")
    return {**timing, **_summary(outcome.report)}


def job_converted(work: Path) -> dict[str, Any]:
    outcome, timing = timed_build(SAMPLE, work / "converted", work / "converted_build", runtimes=("litert", "litert-ref"),
                                  repair=False)
    return {**timing, **_summary(outcome.report)}


def job_latency(work: Path) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    x = np.load(SAMPLE / "data" / "eval" / "image.npy")[:1].transpose(0, 2, 3, 1)
    files = {"float32": work / "converted_build" / "model.float32.tflite",
             "INT8 as converted": work / "converted_build" / "model.int8.tflite",
             "repaired (int8 + 16-bit ops)": work / "repaired" / "model.tflite"}
    invokes = {}
    for name, path in files.items():
        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], x.astype(d["dtype"]))
        invokes[name] = it.invoke
    found = interleaved_latency(invokes, LATENCY_ROUNDS, LATENCY_PER_ROUND)
    return {n: {**m, "bytes": files[n].stat().st_size} for n, m in found.items()}


JOBS = {"repaired": job_repaired, "converted": job_converted, "latency": job_latency}


def _f(v: Any, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def section(r: dict[str, Any]) -> list[str]:
    """The RESULTS.md section for a results dict."""
    rep, conv, lat = r["repaired"], r["converted"], r["latency"]
    repair = rep["repair"]
    ref = rep["float"]
    eval_n = r["eval_images"]
    failed_conv = [g for g in conv["gates"] if not g["passed"]]
    lines = [
        HEADING, "",
        f"Produced by `{r['command']}` on {r['date']} ({r['machine']}; {r['versions']}). One run. The sample: "
        "sample_models/detector (README there), an anchor-free detector whose export concatenates pixel boxes "
        "(xywh) and sigmoid class scores (0 to 1) in one output, as YOLOv8 exports do. "
        f"mAP against the {eval_n} held-out images' labelled boxes (`boxes.npy`, `classes.npy`), "
        "computed by edgeq's detection task (score threshold and NMS from edgeq.toml).",
        "",
        "| model | runtime | mAP@0.5 | mAP@.5:.95 | F1 vs float | bytes |",
        "|---|---|---|---|---|---|",
        f"| float (ONNX reference) | onnxruntime | {_f(ref.get('map50'))} | {_f(ref.get('map'))} | - | "
        f"{rep['bytes']['onnx_float']} |",
        f"| float32 .tflite | litert | {_f(rep['float32_tflite'].get('map50'))} | {_f(rep['float32_tflite'].get('map'))} | "
        f"{_f(rep['float32_tflite'].get('detection_agreement'))} | {rep['bytes']['tflite_float32']} |",
    ]
    for rt, t in conv["shipped"].items():
        lines.append(f"| INT8 as converted (`--no-repair`) | {rt} | {_f(t.get('map50'))} | {_f(t.get('map'))} | "
                     f"{_f(t.get('detection_agreement'))} | {conv['bytes']['tflite_int8']} |")
    for rt, t in rep["shipped"].items():
        lines.append(f"| repaired (shipped) | {rt} | {_f(t.get('map50'))} | {_f(t.get('map'))} | "
                     f"{_f(t.get('detection_agreement'))} | {rep['bytes']['tflite_int8']} |")
    lines += [""]
    if failed_conv:
        lines.append("Without repair the build exits 1: " + "; ".join(
            f"{g['name']} on {g['runtime']} {_f(g['value'], 2)} (limit {_f(g['limit'], 2)})" for g in failed_conv) + ".")
    if repair.get("chosen") is not None:
        t = repair["tries"][repair["chosen"]]
        ops = [n for names in t["int16_ops"].values() for n in names]
        insp = rep["inspection"]
        drops = [float(ref["map50"]) - float(s["map50"]) for s in rep["shipped"].values() if "map50" in s]
        lines.append(
            f"With repair (the default) try {repair['chosen']} of {len(repair['tries'])} passes: {len(ops)} op(s) with 16-bit "
            f"activations ({t['int16_compute_ops']} of {repair['compute_ops']} compute ops; budget "
            f"{repair['budget_int16_compute_ops']}): {', '.join(f'`{n}`' for n in ops)}. Largest mAP@0.5 drop vs "
            f"the float model over the runtimes: {100 * max(drops):.2f} points (gate: 1.0). Compute ops in int8: "
            f"{insp['int8_compute_ops']} of {insp['compute_ops']}.")
    lines += [
        "", f"Build (repair, every runtime of the target): {rep['total_seconds']:.1f} s; validate "
        f"{rep['stage_seconds']['validate']:.1f} s, of which the emulated cores "
        + ", ".join(f"{rt} {s:.1f} s" for rt, s in rep["validation_seconds"].items()) + ".", "",
        "LiteRT latency on the host CPU (1 thread, default kernels; "
        f"{next(iter(lat.values()))['runs']} invokes each, interleaved):", "",
        "| model | bytes | median ms | p10 ms | p90 ms |", "|---|---|---|---|---|",
    ]
    for name, m in lat.items():
        lines.append(f"| {name} | {m['bytes']} | {m['median_ms']:.3f} | {m['p10_ms']:.3f} | {m['p90_ms']:.3f} |")
    lines += ["", "XNNPACK has no 16x8 kernels: LiteRT runs the repaired model's 16-bit ops on its builtin kernels. "
              "mAP@.5:.95 shows what the gate on score levels protects: with 3 score levels the detections' ranking "
              "is lost, while mAP@0.5 at a 0.25 threshold barely moves.", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", choices=sorted(JOBS), help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.job:
        (args.work / f"{args.job}.json").write_text(json.dumps(JOBS[args.job](args.work), indent=2))
        return
    results: dict[str, Any] = {
        "command": COMMAND,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": ", ".join(f"{n} {metadata.version(n)}" for n in ("ai-edge-litert", "litert-quantizer", "tensorflow-cpu")),
        "eval_images": int(np.load(SAMPLE / "data" / "eval" / "image.npy", mmap_mode="r").shape[0]),
    }
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-detector-") as tmp:
        work = Path(tmp)
        for job in ("converted", "repaired", "latency"):
            subprocess.run([sys.executable, __file__, "--job", job, "--work", str(work)], check=True)
            results[job] = json.loads((work / f"{job}.json").read_text())
            print(f"{job}: done", flush=True)
    args.out.with_name("detector.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_section(HEADING, section(results), args.out)
    print("\n".join(section(results)))


if __name__ == "__main__":
    main()
