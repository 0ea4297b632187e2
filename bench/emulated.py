"""Benchmark: what the emulated cores cost per eval sample, and both samples' builds with every eval sample
on them against the default seeded subset.

    .venv/bin/python bench/emulated.py [SAMPLE ...]  -> a section of bench/RESULTS.md, bench/emulated.json

For each sample (digits and translator by default), two `edgeq build sample_models/SAMPLE --target android
--no-cache` child processes, one after the other: `--emulated-samples all` (every eval sample on the
emulated Cortex-A53 and Cortex-A76, as edgeq did before the subset) and the default (64 seeded samples
each; host LiteRT and its reference kernels run every sample either way). Per build: the wall time of
the process, the validate stage's, and per emulated core the samples it ran and its host wall time
under qemu (report.json's validation_seconds): that divided by the samples is the cost per sample.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import edgeq_build, machine, write_section

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ("digits", "translator")
MODES = (("every sample", ("--emulated-samples", "all")), ("default subset", ()))
HEADING = "## Emulated cores: every eval sample against the seeded subset"


def one_build(sample: str, extra: tuple[str, ...]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        done, seconds = edgeq_build([str(ROOT / "sample_models" / sample), "--target", "android", "--no-cache", "--out",
                                     str(Path(tmp) / "bundle"), "--json", *extra], label=sample)
    report = json.loads(done.stdout)
    validate = re.search(r"validate done in ([\d.]+) s", done.stderr)
    cores = {}
    for rt, entry in report["artifacts"][report["shipped"]]["runtimes"].items():
        cost = entry["describe"].get("validation_seconds")
        if cost:
            n = entry["samples"]["count"]
            cores[rt] = {"samples": n, "of": entry["samples"]["of"], "wall_seconds": cost["wall"],
                         "seconds_per_sample": cost["wall"] / n}
    gates = report["gates"]
    return {"command": " ".join(["edgeq build", f"sample_models/{sample}", "--target android --no-cache", *extra]),
            "seconds": round(seconds, 1), "validate_seconds": float(validate[1]) if validate else None,
            "exit": done.returncode, "cores": cores, "gates_passed": sum(g["passed"] for g in gates), "gates": len(gates)}


def main(argv: list[str]) -> int:
    samples = argv or list(SAMPLES)
    results = {s: {mode: one_build(s, extra) for mode, extra in MODES} for s in samples}
    (ROOT / "bench" / "emulated.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    lines = [HEADING, "",
             f"Measured {dt.date.today().isoformat()} on {machine()} with `.venv/bin/python bench/emulated.py"
             f"{'' if samples == list(SAMPLES) else ' ' + ' '.join(samples)}` (one run; bench/emulated.json has the raw "
             "rows). Each build is an `edgeq build --target android --no-cache` child process with all four runtimes; "
             "\"every sample\" adds `--emulated-samples all` (what every build did before the subset), \"default "
             "subset\" runs 64 seeded eval samples on each emulated core. Host LiteRT and its reference kernels run "
             "every sample in both. Cost per sample: the core's host wall time under qemu (start-up included) over "
             "the samples it ran.", "",
             "| sample | emulated samples | build wall (s) | validate (s) | cortex-a53: samples, s, s/sample | "
             "cortex-a76: samples, s, s/sample | gates passed | exit |", "|---|---|---|---|---|---|---|---|"]
    for sample, modes in results.items():
        for mode, r in modes.items():
            cells = []
            for profile in ("cortex-a53", "cortex-a76"):
                c = r["cores"].get(f"litert-arm64:{profile}")
                cells.append(f"{c['samples']} of {c['of']}, {c['wall_seconds']:.1f}, {c['seconds_per_sample']:.3f}" if c else "-")
            lines.append(f"| {sample} | {mode} | {r['seconds']:.1f} | {r['validate_seconds']:.1f} | {cells[0]} | {cells[1]} | "
                         f"{r['gates_passed']} of {r['gates']} | {r['exit']} |")
    lines.append("")
    write_section(HEADING, lines, ROOT / "bench" / "RESULTS.md")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
