"""``litert-arm64:<profile>``: the aarch64 LiteRT, run under qemu-user on an emulated phone CPU.

It implements the Runtime protocol (edgeq.execution) as a batch: ``start(work)`` records every
announced feed to files (once, shared by every emulated runtime of a validation) and starts one
emulator process per artifact and profile, which runs them all (and, for translation, decodes
every eval sentence with the shared loop) and writes the outputs to files (see
``edgeq.emulator.worker`` for the file protocol). Start-up - about 3.5 s of host wall time for
qemu, Python, numpy and LiteRT, whose bytecode `edgeq emulator setup` compiled into the root - is
paid once per artifact, not per sample.

``run(graph, feeds)`` then waits for the process (on its first call) and replays the recorded
outputs of each sample in turn, checking that it is fed exactly what was recorded, so validation
scores the emulated runtime with the same code as every other.

Wall time under emulation is not device latency: it is reported only as the cost of validation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edgeq._proc import die_with_parent
from edgeq.artifacts import Artifact
from edgeq.emulator import ARM64, find_qemu, guest_command, guest_env, profile_root, require
from edgeq.emulator.profiles import PROFILES, CpuProfile
from edgeq.errors import EdgeqError
from edgeq.execution import Decoded, FeedRecorder, Feeds, Work
from edgeq.tflite_io import from_tflite

__all__ = ["EmulatorRunError", "FeedRecorder", "LiteRTArm64"]  # FeedRecorder: edgeq.execution's

PROTOCOL = 1
PACKAGE = Path(__file__).resolve().parent.parent
WORKER = PACKAGE / "emulator" / "worker.py"
LIB = {"tflite_io": PACKAGE / "tflite_io.py", "decode": PACKAGE / "decode.py"}


class EmulatorRunError(EdgeqError):
    """The emulated runtime crashed or failed on an artifact."""


class LiteRTArm64:
    """One artifact (every graph of it) on one emulated CPU profile."""

    emulated = True
    background = True  # one qemu process per artifact and profile, running while the host works
    base = "litert-arm64"

    def __init__(self, profile: str | None = None, threads: int = 1, workdir: Path | None = None) -> None:
        if profile is None or profile not in PROFILES:
            raise KeyError(f"{self.base} needs a CPU profile: {', '.join(f'{self.base}:{p}' for p in PROFILES)}")
        self.profile: CpuProfile = PROFILES[profile]
        self.name = f"{self.base}:{profile}"
        self.threads = threads
        self.graphs: dict[str, Artifact] = {}
        self.runs: list[dict[str, Any]] = []
        self.decode: dict[str, Any] | None = None
        self.result: dict[str, Any] = {}
        self.wall_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._job: Path | None = None
        self._t0 = 0.0
        self._timer: threading.Thread | None = None
        self.workdir = workdir  # the job folder of ``start(work)``
        self._replays: dict[str, _Replay] | None = None

    def load(self, artifact: Artifact) -> None:
        """Add the artifact to the job as its graph (the emulator runs it later)."""
        self.graphs[artifact.graph] = artifact

    # -- the Runtime protocol (edgeq.execution) -------------------------------------------------

    def start(self, work: Work) -> None:
        """Record the work's feeds (once, shared by every emulated runtime of the validation; only the
        work's subset of samples when it has one) and start the emulator process on all of it."""
        assert self.workdir is not None, "open_runtime gives the job folder"
        for graph in work.feeds:
            if graph in self.graphs:
                samples = work.feeds[graph].samples if work.subset is None else len(work.subset)
                self.add_run(graph, samples, work.record(graph))
        if work.decode is not None:
            job = work.decode
            sources = job.sources.record(work.folder / job.sources.graph, work.subset)[job.spec.source_ids]
            self.add_decode(job.encoder, job.decoder, asdict(job.spec), sources)
        self.launch(self.workdir)

    def run(self, graph: str, feeds: Feeds) -> Feeds:
        """The next recorded sample's outputs of ``graph`` (the process is waited for on the first call)."""
        if self._replays is None:
            self.wait()
            self._replays = {r["graph"]: self.replay(r["graph"]) for r in self.runs}
        return self._replays[graph].run(feeds)

    def decoded(self) -> Decoded:
        """The token rows the worker decoded (no speed: an emulator's says nothing about a device)."""
        if not self.result:
            self.wait()
        tokens, _ = self.decoded_arrays()
        return Decoded([[int(i) for i in row if i >= 0] for row in tokens], None)

    # -- the job --------------------------------------------------------------------------------

    def add_run(self, graph: str, samples: int, feeds: dict[str, Path]) -> None:
        """Run ``samples`` recorded samples of ``graph`` (``feeds``: input name -> stacked .npy)."""
        self.runs.append({"graph": graph, "samples": samples, "feeds": dict(feeds)})

    def add_decode(self, encoder: str, decoder: str, spec: dict[str, Any], sources: Path) -> None:
        """Decode every source row of ``sources`` ([N, 1, S] int32) with the encoder and decoder graphs."""
        self.decode = {"encoder": encoder, "decoder": decoder, "spec": spec, "sources": sources}

    # -- the emulator process -------------------------------------------------------------------

    def launch(self, job: Path, launcher: Callable[[Path], list[str]] | None = None) -> None:
        """Write the job folder and start the emulator (returns at once; ``wait`` collects).

        ``launcher`` (tests) gives the command that runs worker.py in ``job`` instead of qemu.
        """
        job.mkdir(parents=True)
        (job / "lib").mkdir()
        for src in LIB.values():
            shutil.copyfile(src, job / "lib" / src.name)
        shutil.copyfile(WORKER, job / "worker.py")
        (job / "models").mkdir()
        graphs = {}
        for g, art in self.graphs.items():
            model = job / "models" / f"{g}.tflite"
            model.symlink_to(_rel(art.path.resolve(), model.parent.resolve()))
            graphs[g] = {"model": f"models/{g}.tflite", "meta": art.meta}
        spec = {
            "protocol": PROTOCOL, "threads": self.threads,
            "lib": {name: f"lib/{src.name}" for name, src in LIB.items()},
            "graphs": graphs,
            "runs": [{"graph": r["graph"], "samples": r["samples"],
                      "feeds": {n: _rel(p, job) for n, p in r["feeds"].items()}, "outputs": f"out/{r['graph']}"}
                     for r in self.runs],
            "decode": None if self.decode is None else {
                **{k: self.decode[k] for k in ("encoder", "decoder", "spec")},
                "sources": _rel(self.decode["sources"], job), "tokens": "out/tokens.npy", "steps": "out/steps.npy",
            },
        }
        (job / "out").mkdir()
        (job / "job.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
        if launcher is None:
            proot = profile_root(require(ARM64, self.name), self.profile, job)
            cmd = guest_command(ARM64, find_qemu(ARM64), proot, self.profile, ["worker.py"])
        else:
            cmd = launcher(job)
        self._job = job
        self._t0 = time.monotonic()
        with open(job / "stderr.log", "wb") as err:
            self._proc = subprocess.Popen(cmd, cwd=job, env=guest_env(), stdin=subprocess.DEVNULL,
                                          stdout=err, stderr=subprocess.STDOUT, preexec_fn=die_with_parent())
        # The process's own wall time, taken when it ends, whatever the host is doing meanwhile.
        self._timer = threading.Thread(target=self._time, args=(self._proc,), daemon=True)
        self._timer.start()

    def _time(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self.wall_seconds = time.monotonic() - self._t0

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """The worker's result.json once the process ends; EmulatorRunError if it failed or ran past ``timeout``."""
        assert self._proc is not None and self._job is not None, "launch() first"
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            raise EmulatorRunError(f"{self.name} did not finish within {timeout:.0f} s; see {self._job / 'stderr.log'}") from None
        assert self._timer is not None
        self._timer.join()
        result_file = self._job / "result.json"
        result = json.loads(result_file.read_text(encoding="utf-8")) if result_file.is_file() else None
        if result is None or not result.get("ok"):
            why = result["error"] if result else _describe_exit(code, self._job / "stderr.log")
            raise EmulatorRunError(f"{self.name} failed on {', '.join(a.path.name for a in self.graphs.values())}: {why}")
        self.result = result
        return result

    def stop(self) -> None:
        """Kill the emulator process if it is still running."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    # -- results --------------------------------------------------------------------------------

    def replay(self, graph: str) -> _Replay:
        """A runtime that replays the outputs recorded for ``graph``, one sample per call."""
        assert self._job is not None and self.result, "wait() first"
        run = next(r for r in self.runs if r["graph"] == graph)
        return _Replay(self, graph, run, self._job / "out" / graph)

    def decoded_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Token ids [N, T] (-1 padded) and decoder steps [N] of every decoded sentence."""
        assert self._job is not None and self.result, "wait() first"
        return np.load(self._job / "out" / "tokens.npy"), np.load(self._job / "out" / "steps.npy")

    def describe(self) -> dict[str, Any]:
        """What the report shows of this runtime: CPU profile, LiteRT version, kernels, guest, validation time."""
        guest = self.result.get("guest", {})
        seconds = self.result.get("seconds", {})
        return {
            "runtime": self.base, "profile": self.profile.name, "cpu": self.profile.description,
            "qemu_cpu": self.profile.qemu_cpu, "version": guest.get("litert"),
            "kernels": "XNNPACK (default op resolver), aarch64",
            "threads": self.threads, "host": False, "emulated": True,
            "guest": guest,
            # The cost of validating under emulation on this host - never a device latency.
            "validation_seconds": {"wall": self.wall_seconds, "startup": seconds.get("start"),
                                   **{k: v for k, v in seconds.items() if k not in ("start",)}},
        }


class _Replay:
    """A Runtime over the recorded outputs: ``run`` returns sample k's outputs on its k-th call."""

    def __init__(self, owner: LiteRTArm64, graph: str, run: dict[str, Any], outputs: Path) -> None:
        self.name = owner.name
        self._owner = owner
        self._meta = owner.graphs[graph].meta
        self._feeds = {n: np.load(p, mmap_mode="r") for n, p in run["feeds"].items()}
        self._outs = [np.load(outputs / f"{i}.npy", mmap_mode="r") for i in range(len(self._meta["outputs"]))]
        self._samples = run["samples"]
        self._k = 0

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        k = self._k
        if k >= self._samples:
            raise RuntimeError(f"{self.name}: more runs than the {self._samples} recorded samples")
        for name, recorded in self._feeds.items():
            if not np.array_equal(np.asarray(feeds[name]), recorded[k]):
                raise RuntimeError(f"{self.name}: sample {k} is fed '{name}' differently from what was recorded")
        self._k += 1
        raw = {m["tflite_name"]: np.asarray(o[k]) for m, o in zip(self._meta["outputs"], self._outs, strict=True)}
        return from_tflite(raw, self._meta)

    def describe(self) -> dict[str, Any]:
        return self._owner.describe()


def _rel(path: Path, base: Path) -> str:
    return os.path.relpath(path, base)


def _describe_exit(code: int, log: Path) -> str:
    tail = ""
    if log.is_file():
        lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        tail = lines[-1] if lines else ""
    if code < 0:
        import signal

        what = f"killed by {signal.Signals(-code).name}"
    elif code in (128 + 11, 139):
        what = "crashed (SIGSEGV)"
    else:
        what = f"exit code {code}"
    return f"the emulator process {what}" + (f" ({tail})" if tail else "")
