"""What the benchmark scripts share: peak-memory sampling, a timed edgeq build, interleaved LiteRT
latency, the machine's CPU name, and replacing one section of RESULTS.md."""

from __future__ import annotations

import contextlib
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class PeakRSS:
    """Samples the resident set size of this process plus its children (edgeq converts in a child
    process) every few ms; ``mark`` starts a new segment."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.current = "start"
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss = self.proc.memory_info().rss
            for child in self.proc.children(recursive=True):
                with contextlib.suppress(Exception):  # the child ended between listing and reading
                    rss += child.memory_info().rss
            self.peaks[self.current] = max(self.peaks.get(self.current, 0), rss)
            time.sleep(0.005)

    def mark(self, name: str) -> None:
        self.current = name
        self.peaks[name] = max(self.peaks.get(name, 0), self.proc.memory_info().rss)  # even a short stage gets a sample

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._t.join()
        return self.peaks


def mb(b: int) -> str:
    return f"{b / 2**20:.0f} MiB"


def stage_table(timing: dict[str, Any], total_label: str) -> list[str]:
    """RESULTS.md rows: wall time and peak memory of each stage of a timed build."""
    lines = ["| stage | wall time (s) | peak RSS (process + children) |", "|---|---|---|"]
    for stage, s in timing["stage_seconds"].items():
        lines.append(f"| {stage} | {s:.2f} | {mb(timing['stage_peak_rss'].get(stage, 0))} |")
    return [*lines, f"| {total_label} | {timing['total_seconds']:.2f} | {mb(timing['peak_rss'])} |", ""]


def runtime_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The shipped model on each of the target's runtimes: task metric, parity with host LiteRT
    (largest difference of any output in quantization steps, share of elements over one step) and,
    for emulated ones, the host wall time the emulator took (validation cost, not latency)."""
    shipped = report["artifacts"]["tflite_int8"]
    out = {}
    for rt in report["target"]["runtimes"]:
        entry, parity = shipped["runtimes"][rt], shipped.get("parity", {}).get(rt)
        row: dict[str, Any] = {"task": entry["task"], "describe": entry["describe"]}
        if parity is not None:
            outs = [m for g in parity["outputs"].values() for m in g.values()]
            row["max_steps"] = max((m["max_steps"] or 0.0) for m in outs)
            row["over_one_step"] = sum(m["elements_over_one_step"] or 0 for m in outs) / sum(m["elements"] for m in outs)
            row["vs_first"] = parity.get("top1_agreement", parity.get("bleu_diff"))
        out[rt] = row
    return out


def runtime_table(summary: dict[str, Any], translation: bool) -> list[str]:
    """RESULTS.md rows for ``runtime_summary``."""
    metric, vs = ("BLEU", "BLEU diff vs litert") if translation else ("top-1", "top-1 agreement vs litert")
    lines = [f"| runtime | where | {metric} | {vs} | max diff vs litert (quantization steps) | elements > 1 step | "
             "validation cost (host wall s) |", "|---|---|---|---|---|---|---|"]
    for rt, row in summary.items():
        d = row["describe"]
        where = f"qemu-user, {d['cpu']}" if d.get("emulated") else "host x86"
        value = row["task"]["bleu" if translation else "top1_accuracy"]
        cost = f"{d['validation_seconds']['wall']:.1f}" if d.get("emulated") else "-"
        if "max_steps" in row:
            lines.append(f"| {rt} | {where} | {value:.{2 if translation else 4}f} | {row['vs_first']:.4f} | "
                         f"{row['max_steps']:.0f} | {100 * row['over_one_step']:.2f}% | {cost} |")
        else:
            lines.append(f"| {rt} | {where} | {value:.{2 if translation else 4}f} | (reference) | - | - | {cost} |")
    return [*lines, ""]


def timed_build(model_dir: Path, out: Path, keep: Path, runtimes: tuple[str, ...] | None = None,
                repair: bool = True) -> tuple[Any, dict[str, Any]]:
    """`edgeq build --target android` with per-stage wall time and peak RSS (process + children)."""
    from edgeq.build import BuildOptions, build

    mem = PeakRSS()
    seconds: dict[str, float] = {}
    starts: dict[str, float] = {}

    def on_event(name: str, k: int, total: int, status: str, s: float) -> None:
        if status == "start":
            mem.mark(name)
            starts[name] = time.perf_counter()
        else:
            seconds[name] = time.perf_counter() - starts[name]
            mem.mark("between")

    t0 = time.perf_counter()
    outcome = build(BuildOptions(model_dir=model_dir, target="android", out=out, keep_build_dir=keep, runtimes=runtimes,
                                 repair=repair), on_event=on_event)
    total = time.perf_counter() - t0
    peaks = mem.stop()
    return outcome, {
        "total_seconds": total,
        "stage_seconds": seconds,
        "stage_peak_rss": {k: v for k, v in peaks.items() if k in seconds},
        "peak_rss": max(peaks.values()),
    }


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    """The machine a result was measured on, for RESULTS.md."""
    import os

    return (f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}")


def edgeq_build(args: list[str], env: dict[str, str] | None = None, label: str = "edgeq build") -> tuple[Any, float]:
    """`edgeq build ARGS` of this checkout's venv in a child process, as a user runs it: the finished process
    and its wall time (s). Exit 0 or 1 (a gate failed) is a result; anything else stops the bench."""
    import subprocess

    cmd = [str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "edgeq"), "build", *args]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 1):
        raise SystemExit(f"{label}: edgeq build exited {done.returncode}: {done.stderr[-2000:]}")
    return done, seconds


def write_section(heading: str, lines: list[str], path: Path) -> None:
    """Replace the section of RESULTS.md that starts with ``heading`` by ``lines`` (or add them at the
    end), keeping everything else."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    old = text.splitlines()
    if heading in old:
        start = old.index(heading)
        end = next((k for k in range(start + 1, len(old)) if old[k].startswith("## ")), len(old))
        old[start:end] = lines
    else:
        old += ["", *lines] if old and old[-1] else lines
    path.write_text("\n".join(old).rstrip("\n") + "\n", encoding="utf-8")


def interleaved_latency(invokes: dict[str, Callable[[], Any]], rounds: int, per_round: int,
                        warmup: int = 30) -> dict[str, dict[str, float]]:
    """Median / p10 / p90 milliseconds of each callable; they take turns, ``per_round`` calls each per
    round, so that drift in the machine's speed hits all alike."""
    import numpy as np

    for invoke in invokes.values():
        for _ in range(warmup):
            invoke()
    times: dict[str, list[float]] = {n: [] for n in invokes}
    for _ in range(rounds):
        for name, invoke in invokes.items():
            for _ in range(per_round):
                t0 = time.perf_counter_ns()
                invoke()
                times[name].append((time.perf_counter_ns() - t0) / 1e6)
    return {n: {"median_ms": statistics.median(t), "p10_ms": float(np.percentile(t, 10)),
                "p90_ms": float(np.percentile(t, 90)), "runs": len(t)} for n, t in times.items()}
