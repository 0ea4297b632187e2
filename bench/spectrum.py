"""Benchmark: the precision ladder of the samples, every rung built and validated side by side.

    .venv/bin/python bench/spectrum.py [--runtimes litert,litert-ref] [SAMPLE ...]
        -> bench/SPECTRUM.md, bench/spectrum.json

For each sample (digits, translator by default): `edgeq build sample_models/SAMPLE --precision all
--json` with the runtimes given (default: the host ones, LiteRT with XNNPACK and LiteRT's reference
kernels; the emulated arm64 cores take minutes per rung for the translator), in a child process.
The report's ladder is the table: every rung's bytes and ratio to fp32, the task metric and its drop
against the float ONNX reference on host LiteRT, the lowest output SQNR over the runtimes, host LiteRT
latency against fp32 (one sample, 1 thread, median of 50 invokes per graph), the runtimes that ran
it and the gates it passed with the android target's limits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import edgeq_build, machine

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ("digits", "translator")


def ladder(sample: str, runtimes: list[str]) -> dict[str, Any]:
    """One `edgeq build --precision all` of a sample: its ladder, the float reference, the build's time."""
    with tempfile.TemporaryDirectory() as tmp:
        done, seconds = edgeq_build([str(ROOT / "sample_models" / sample), "--precision", "all", "--out",
                                     str(Path(tmp) / "bundle"), "--json", *(a for r in runtimes for a in ("-r", r))],
                                    label=sample)
    report = json.loads(done.stdout)
    return {"sample": sample, "seconds": round(seconds, 1), "exit": done.returncode, "ladder": report["ladder"],
            "reference": report["reference"]["metrics"], "rungs": report.get("rungs", {}),
            "command": " ".join(["edgeq build", f"sample_models/{sample}", "--precision all --json",
                                 *(f"-r {r}" for r in runtimes)])}


def _num(x: Any, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(result: dict[str, Any]) -> list[str]:
    """SPECTRUM.md rows for one sample's ladder."""
    rows = result["ladder"]
    title = next((r["metric_title"] for r in rows if r.get("metric_title")), "metric")
    digits = 2 if title == "BLEU" else 4
    lines = [f"| rung | name | bytes | x fp32 | {title} | drop | min SQNR dB | latency x fp32 | runtimes | gates |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['rung']} | {r['name']} | {r.get('bytes', '-')} | - | - | - | - | - | - | could not run: "
                         f"{r['error']} |")
            continue
        ran = ", ".join(r["kernels"]) + "".join(f"; not {rt}" for rt in r.get("not_run", {}))
        gates = f"{r['gates_passed']} of {r['gates']}" + (f" (failed: {', '.join(r['failed'])})" if r["failed"] else "")
        lines.append(f"| {r['rung']} | `{r['name']}` | {r['bytes']:,} | {r['ratio_to_fp32']:.3f} | {_num(r['value'], digits)} | "
                     f"{_num(r['drop'], digits)} | {_num(r['min_sqnr_db'], 1)} | {_num(r['latency_ratio_to_fp32'], 2)} | "
                     f"{ran} | {gates} |")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", nargs="*", default=list(SAMPLES))
    parser.add_argument("--runtimes", default="litert,litert-ref")
    args = parser.parse_args(argv)
    runtimes = args.runtimes.split(",")
    results = [ladder(s, runtimes) for s in args.samples]
    (ROOT / "bench" / "spectrum.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    lines = ["# The precision ladder of the samples", "",
             f"Measured {dt.date.today().isoformat()} on {machine()} with `.venv/bin/python bench/spectrum.py"
             f"{'' if args.runtimes == 'litert,litert-ref' else ' --runtimes ' + args.runtimes}"
             f"{'' if args.samples == list(SAMPLES) else ' ' + ' '.join(args.samples)}` (one run; the numbers below "
             "are its output, bench/spectrum.json the raw rows). Each sample is one `edgeq build --precision all`: "
             "every rung the android target allows, made from the same float32 .tflite and calibration data, "
             "validated on the eval set against the float ONNX reference with the android target's gates.", "",
             "Columns: bytes of the .tflite files (encoder + decoder for the translator) and their ratio to the "
             "float32 files; the task metric on host LiteRT (XNNPACK) and its drop from the float reference; the "
             "lowest SQNR of any output over the runtimes; host LiteRT latency of one sample against the float32 "
             "model (1 thread, median of 50 invokes per graph; the translator's is one encoder and one decoder "
             "step); the runtimes that ran the rung; the gates it passed.", ""]
    for r in results:
        ref = r["reference"]
        metric = next((k for k in ("bleu", "top1_accuracy") if k in ref), None)
        lines += [f"## {r['sample']}", "", f"`{r['command']}`: {r['seconds']} s for the whole ladder (exit {r['exit']}); "
                  f"float reference {metric} {ref.get(metric, float('nan')):.4g}.", "", *table(r), ""]
    lines += ["Latency ratios come from one sample on a shared 2-core machine: differences under about 10% are "
              "noise. int16x8 runs on LiteRT's builtin 16x8 kernels (XNNPACK has none), which is why it is slow on "
              "the host; int4 is not validated on LiteRT's reference kernels, which compute int4 weights wrong "
              "(README, \"Precisions\").", ""]
    (ROOT / "bench" / "SPECTRUM.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
