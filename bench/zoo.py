"""The zoo: every sample and every coverage model, built for every built-in target through the CI matrix.

    make zoo                                   (.venv/bin/python bench/zoo.py)
    .venv/bin/python bench/zoo.py [--only NAME ...] [--target T ...]

The model folders go to zoo/models (the samples copied from sample_models/, the coverage models of
bench/model_coverage.py made in code once and kept, so that their content hash and the stage cache
carry over from one run to the next); `edgeq matrix zoo/models --target ...` lists one entry per
model and target, as a CI job would get them; each entry is built as the CI templates build it, in
its own process:

    edgeq build PATH --target TARGET --out zoo/dist/MODEL-TARGET-{precision} --junit zoo/results/MODEL-TARGET.xml

and one table is printed (and written to bench/ZOO.md, where `--only` replaces those models' rows; to
zoo/ZOO.md for a run of other targets): per model and target the exit code, the rung
shipped and its size against float32, the task metric on the target's first runtime, the gates passed,
the build's wall time and which stages the stage cache gave back; or edgeq's one-line error. The
built-in targets by default (android, linux-arm64, mcu); `--only` keeps the models whose name contains
one of the words (the others in zoo/models stay, unbuilt).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "zoo"
SAMPLES = ("digits", "translator", "detector")
EDGEQ = [sys.executable, "-m", "edgeq"]


def models(only: list[str]) -> tuple[Path, set[str]]:
    """zoo/models: the samples (copied again each run) and the coverage models (made once); the folder
    names asked for."""
    import model_coverage

    folder = ZOO / "models"
    folder.mkdir(parents=True, exist_ok=True)
    wanted = [n for n in [*SAMPLES, *model_coverage.MODELS, *model_coverage.onnx_models.CASES]
              if not only or any(o.lower() in n.lower() for o in only)]
    for name in wanted:
        if name in SAMPLES:
            shutil.copytree(ROOT / "sample_models" / name, folder / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif not (folder / model_coverage.slug(name) / "edgeq.toml").is_file():
            shutil.rmtree(folder / model_coverage.slug(name), ignore_errors=True)
            print(f"making {name} ...", flush=True)
            model_coverage.make_folder(name, folder)
    return folder, {n if n in SAMPLES else model_coverage.slug(n) for n in wanted}


def build(entry: dict[str, Any]) -> dict[str, Any]:
    """One matrix entry built as a CI job builds it."""
    name = f"{entry['model']}-{entry['target_name']}"
    (ZOO / "results").mkdir(parents=True, exist_ok=True)
    cmd = [*EDGEQ, "build", entry["path"], "--target", entry["target"], "--out", str(ZOO / "dist" / f"{name}-{{precision}}"),
           "--junit", str(ZOO / "results" / f"{name}.xml"), "--json"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=7200)
    row: dict[str, Any] = {"model": entry["model"], "folder": Path(entry["path"]).name, "target": entry["target_name"],
                           "exit": done.returncode, "seconds": round(time.perf_counter() - t0, 1),
                           "cached": re.findall(r"\] (\w+) reused from the stage cache", done.stderr)}
    if done.returncode in (0, 1):
        r = json.loads(done.stdout)
        first = r["target"]["runtimes"][0]
        task = r["artifacts"][r["shipped"]]["runtimes"].get(first, {}).get("task", {})
        metric = next((k for k in ("top1_accuracy", "bleu", "map50", "detection_agreement") if k in task), None)
        row.update(rung=r["precision"]["rung"], bytes=r["size"]["shipped_tflite_bytes"],
                   ratio=r["size"]["shipped_to_float32_ratio"], metric=metric, value=task.get(metric) if metric else None,
                   gates=f"{sum(g['passed'] for g in r['gates'])}/{len(r['gates'])}",
                   failed=[f"{g['name']}{' on ' + g['runtime'] if g.get('runtime') else ''}" for g in r["gates"]
                           if not g["passed"]])
    else:
        row["error"] = (done.stderr.strip().splitlines() or ["?"])[-1][:300]
    return row


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| model | target | exit | rung | bytes | x fp32 | metric | gates passed | s | reused from the cache |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['folder']} | {r['target']} | {r['exit']} | - | - | - | {r['error'].replace('|', '/')} | - | "
                         f"{r['seconds']} | - |")
            continue
        metric = f"{r['metric']} {r['value']:.4g}" if r["metric"] and r["value"] is not None else "-"
        gates = r["gates"] + (f" (failed: {', '.join(r['failed'])})" if r["failed"] else "")
        lines.append(f"| {r['folder']} | {r['target']} | {r['exit']} | {r['rung']} | {r['bytes']:,} | {r['ratio']:.3f} | "
                     f"{metric} | {gates} | {r['seconds']} | {', '.join(r['cached']) or 'none'} |")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="models whose name contains one of these words")
    parser.add_argument("--target", action="append", default=None, help="targets (default: the built-in ones)")
    args = parser.parse_args(argv)
    targets = args.target or ["android", "linux-arm64", "mcu"]
    folder, wanted = models(args.only)
    matrix = subprocess.run([*EDGEQ, "matrix", str(folder), *(a for t in targets for a in ("--target", t))],
                            capture_output=True, text=True, check=False)
    if matrix.returncode != 0:
        print(matrix.stderr, file=sys.stderr)
        return matrix.returncode
    rows = []
    for entry in json.loads(matrix.stdout)["include"]:
        if Path(entry["path"]).name not in wanted:  # a model of an earlier run, not asked for this time
            continue
        print(f"{entry['model']} for {entry['target_name']} ...", flush=True)
        rows.append(build(entry))
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    where = ZOO
    if args.target is None and (not args.only or (ROOT / "bench" / "zoo.json").is_file()):
        where = ROOT / "bench"  # a whole run's table is committed; some models again replace their rows in it
        if args.only:
            old = json.loads((ROOT / "bench" / "zoo.json").read_text(encoding="utf-8"))
            again = {(r["folder"], r["target"]): r for r in rows}
            rows = [again.pop((r["folder"], r["target"]), r) for r in old["rows"]] + list(again.values())
            stamp = f"{old['date']}; rows of {', '.join(repr(o) for o in args.only)} again on {stamp}"
    lines = ["# The zoo", "", f"`make zoo` on {stamp}: "
             f"`edgeq matrix zoo/models {' '.join('--target ' + t for t in targets)}`, each entry built in its own process "
             "as the CI templates build it (zoo/dist, zoo/results).", "", *table(rows), ""]
    (where / "ZOO.md").write_text("\n".join(lines), encoding="utf-8")
    (where / "zoo.json").write_text(json.dumps({"date": stamp, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
