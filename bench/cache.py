"""Benchmark: the stage cache. An unchanged rebuild and a rebuild with another gate limit, against the first build.

    .venv/bin/python bench/cache.py [SAMPLE ...]  -> bench/CACHE.md, bench/cache.json

For each sample (digits by default; the translator too if named), in one run, three `edgeq build
sample_models/SAMPLE --target android` child processes (as a user or a CI job runs edgeq) share a
stage cache that starts empty (a temporary EDGEQ_CACHE_DIR; the arm64 emulator's root is linked in
from the user's cache, so all four android runtimes run): the first build fills the cache, the second
is the same build again, the third changes one gate limit (`--gate output_cosine=0.995`). Each build's
wall time is measured around the whole process (start-up included); the bundles' files are compared
byte for byte with the first's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import edgeq_build, machine

ROOT = Path(__file__).resolve().parent.parent
RUNS = (("first", ()), ("unchanged", ()), ("gate changed", ("--gate", "output_cosine=0.995")))


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def sample_runs(sample: str) -> dict[str, Any]:
    """The three builds of one sample, sharing an empty stage cache."""
    from edgeq.emulator import cache_dir

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        emulators = cache_dir() / "emulators"
        if emulators.is_dir():
            (cache / "emulators").symlink_to(emulators)
        env = {**os.environ, "EDGEQ_CACHE_DIR": str(cache)}
        env.pop("EDGEQ_NO_CACHE", None)
        rows = []
        first: dict[str, str] = {}
        for name, extra in RUNS:
            out = Path(tmp) / name.replace(" ", "-")
            done, seconds = edgeq_build([str(ROOT / "sample_models" / sample), "--target", "android", "--out", str(out),
                                         *extra], env=env, label=f"{sample} {name}")
            files = _files(out)
            first = first or files
            stages = {m[1]: ("cached" if m[2].startswith("reused") else "ran") for m in
                      re.finditer(r"^\[\d+/\d+\] (\w+) (reused|done|failed)", done.stderr, re.MULTILINE)}
            rows.append({"build": name, "command": " ".join(["edgeq build", f"sample_models/{sample}", "--target android",
                                                             *extra]),
                         "seconds": round(seconds, 2), "exit": done.returncode, "stages": stages,
                         "identical_files": sorted(f for f in files if first.get(f) == files[f]),
                         "different_files": sorted(f for f in files if first.get(f) != files[f])})
    return {"sample": sample, "runs": rows}


def main(argv: list[str]) -> int:
    samples = argv or ["digits"]
    results = [sample_runs(s) for s in samples]
    (ROOT / "bench" / "cache.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    lines = ["# The stage cache: a rebuild against the first build", "",
             f"Measured {dt.date.today().isoformat()} on {machine()} with `.venv/bin/python bench/cache.py"
             f"{'' if samples == ['digits'] else ' ' + ' '.join(samples)}` (one run; bench/cache.json has the raw rows). "
             "Each build is an `edgeq build` child process (wall time from start to exit, start-up included), with "
             "every runtime of the android target (host LiteRT, its reference kernels, the emulated Cortex-A53 and "
             "Cortex-A76); the three share a stage cache that is empty before the first.", ""]
    for r in results:
        base = r["runs"][0]["seconds"]
        lines += [f"## {r['sample']}", "", "| build | wall time (s) | x first | exit | stages reused | files as the first's |",
                  "|---|---|---|---|---|---|"]
        for run in r["runs"]:
            reused = ", ".join(s for s, how in run["stages"].items() if how == "cached") or "none"
            same = len(run["identical_files"])
            total = same + len(run["different_files"])
            differ = f" (differ: {', '.join(run['different_files'])})" if run["different_files"] else ""
            lines.append(f"| {run['build']} (`{run['command']}`) | {run['seconds']:.2f} | {run['seconds'] / base:.3f} | "
                         f"{run['exit']} | {reused} | {same} of {total} byte-identical{differ} |")
        lines.append("")
    lines += ["A rebuild runs calibrate (the user's arrays, opened again), validate (its measurements come from the "
              "cache: the same artifacts, eval data, runtimes and edgeq; the gates are evaluated again) and package. "
              "With another gate limit the model files are the same and the report, manifest and summary say how "
              "the new limit decided.", ""]
    (ROOT / "bench" / "CACHE.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
