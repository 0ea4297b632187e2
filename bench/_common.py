"""What the benchmark jobs share: peak-memory sampling and a timed edgeq build."""

from __future__ import annotations

import threading
import time
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
                try:
                    rss += child.memory_info().rss
                except Exception:  # the child ended between listing and reading
                    pass
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


def timed_build(model_dir: Path, out: Path, keep: Path) -> tuple[Any, dict[str, Any]]:
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
    outcome = build(BuildOptions(model_dir=model_dir, target="android", out=out, keep_build_dir=keep), on_event=on_event)
    total = time.perf_counter() - t0
    peaks = mem.stop()
    return outcome, {
        "total_seconds": total,
        "stage_seconds": seconds,
        "stage_peak_rss": {k: v for k, v in peaks.items() if k in seconds},
        "peak_rss": max(peaks.values()),
    }
