"""Edge runtimes that run artifacts: one table of their facts, one protocol for validation.

``RUNTIMES`` maps a runtime name (as used in targets/*.toml and --runtime) to its facts: the class
that runs it (``module:Class``, imported only when a build uses it), the artifact format it runs,
and the emulator it runs under, if any. An emulated runtime takes a CPU profile after a colon
(``litert-arm64:cortex-a53``); each runtime:profile pair is validated on its own.

Two kinds of class sit behind the names. An *engine* runs one file in this process
(``load``, ``run(feeds)``, ``describe``): onnxruntime and the host LiteRT; ``create_runtime`` gives
one, and edgeq.bundle and `edgeq translate` use them directly. For validation, ``open_runtime``
gives a ``Runtime`` (edgeq.execution) over every graph of an artifact: engines are wrapped in
``InProcess``; a class that runs a whole artifact itself (the emulated LiteRT) is the Runtime.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from edgeq.artifacts import Artifact
from edgeq.config import TargetSpec
from edgeq.decode import greedy_decode
from edgeq.errors import ConfigError
from edgeq.execution import Decoded, Feeds, Runtime, Work

__all__ = [
    "RUNTIMES",
    "SUBSET_SEED",
    "Engine",
    "InProcess",
    "RuntimeFacts",
    "cannot_run",
    "check_name",
    "check_runtimes",
    "create_runtime",
    "emulators",
    "facts",
    "installed",
    "open_runtime",
    "require_emulators",
    "split_name",
    "start_all",
    "stop_all",
    "subsets",
    "with_runtimes",
]


class Engine(Protocol):
    """Runs one file of an artifact in this process, sample by sample, in ONNX terms (see
    edgeq.execution.Runtime for what that means)."""

    name: str

    def load(self, artifact: Artifact) -> None:
        """Load the artifact's file."""
        ...

    def run(self, feeds: Feeds) -> Feeds:
        """One sample's outputs."""
        ...

    def describe(self) -> dict[str, Any]:
        """Runtime, version, kernels, threads."""
        ...


@dataclass(frozen=True)
class RuntimeFacts:
    """What edgeq knows about a runtime name."""

    cls: str  # "module:Class"
    format: str  # the artifact format it runs: "onnx" or "tflite"
    emulator: str | None = None  # runs under this emulator: needs a CPU profile and `edgeq emulator setup`
    whole_artifact: bool = False  # the class is a Runtime over every graph (else an Engine per file)
    cannot_run: tuple[tuple[str, str], ...] = ()  # (precision alias, why): rungs its kernels do not compute right


# LiteRT 2.3.0's reference kernels load a model with int4 weights (dynamic range: FULLY_CONNECTED in
# blocks of 32, CONV_2D per output channel) and compute wrong outputs without an error: output SQNR
# 4.3 and 0.0 dB on the translator sample's encoder and decoder, 0.0 dB on the digits sample's
# convolutions, where XNNPACK (host and aarch64) gives 17.5, 13.6 and 20.1 dB.
_REF_INT4 = ("int4", "LiteRT's reference kernels compute int4 weights wrong (no error; output SQNR 0 to 4 dB where "
                     "XNNPACK gives 14 to 20 dB on the samples)")


RUNTIMES: dict[str, RuntimeFacts] = {
    "onnxruntime": RuntimeFacts("edgeq.runtimes.onnxrt:OnnxRuntime", "onnx"),
    "litert": RuntimeFacts("edgeq.runtimes.litert:LiteRT", "tflite"),
    "litert-ref": RuntimeFacts("edgeq.runtimes.litert:LiteRTReference", "tflite", cannot_run=(_REF_INT4,)),
    "tflm": RuntimeFacts("edgeq.runtimes.tflm:TFLiteMicro", "tflite"),
    "litert-arm64": RuntimeFacts("edgeq.runtimes.arm64:LiteRTArm64", "tflite", emulator="arm64", whole_artifact=True),
}


def split_name(name: str) -> tuple[str, str | None]:
    """``litert-arm64:cortex-a53`` -> (``litert-arm64``, ``cortex-a53``); ``litert`` -> (``litert``, None)."""
    base, _, profile = name.partition(":")
    return base, (profile or None)


def facts(name: str) -> RuntimeFacts:
    """The facts of a runtime name (with or without a profile)."""
    return RUNTIMES[split_name(name)[0]]


def cannot_run(name: str, alias: str) -> str | None:
    """Why runtime ``name`` does not validate precision ``alias`` (None: it does)."""
    return dict(facts(name).cannot_run).get(alias)


def check_name(name: str) -> None:
    """KeyError with the choices unless ``name`` is a known runtime (with a known profile if it needs one)."""
    from edgeq.emulator.profiles import PROFILES

    base, profile = split_name(name)
    if base not in RUNTIMES:
        raise KeyError(f"unknown runtime '{base}'; known: {', '.join(RUNTIMES)}")
    if RUNTIMES[base].emulator is not None:
        if profile not in PROFILES:
            what = f"unknown CPU profile '{profile}'" if profile else "a CPU profile is needed"
            raise KeyError(f"runtime '{name}': {what}; choose one of: {', '.join(f'{base}:{p}' for p in PROFILES)}")
    elif profile is not None:
        raise KeyError(f"runtime '{name}': {base} runs on the host and takes no CPU profile; write '{base}'")


def check_runtimes(runtimes: tuple[str, ...], fmt: str, where: str) -> tuple[str, ...]:
    """Every name known (emulated ones with a CPU profile), none twice, the first a host runtime of
    the target's format: it is the reference the others' parity is measured against."""
    if not runtimes:
        raise ConfigError(f"{where}: no runtimes; name at least one, e.g. litert")
    for r in runtimes:
        try:
            check_name(r)
        except KeyError as e:
            raise ConfigError(f"{where}: {e.args[0]}") from None
        if facts(r).format != fmt:
            raise ConfigError(f"{where}: runtime '{r}' does not run {fmt} files; choose a {fmt} runtime")
    dup = next((r for k, r in enumerate(runtimes) if r in runtimes[:k]), None)
    if dup is not None:
        raise ConfigError(f"{where}: runtime '{dup}' is named twice; name each once")
    if facts(runtimes[0]).emulator is not None:
        raise ConfigError(
            f"{where}: the first runtime is the reference for parity and must run on the host, "
            f"not '{runtimes[0]}'; put litert first"
        )
    return runtimes


def with_runtimes(target: TargetSpec, runtimes: Iterable[str] | None = None, where: str = "--runtime") -> TargetSpec:
    """``target`` validating on ``runtimes`` instead of its own list (None: its own), every name checked."""
    if runtimes:
        return replace(target, runtimes=check_runtimes(tuple(runtimes), target.format, where))
    check_runtimes(target.runtimes, target.format, f"targets/{target.name}.toml: runtimes")
    return target


def emulators(target: TargetSpec) -> list[tuple[str, str]]:
    """(runtime, emulator) for every runtime of the target that runs under an emulator."""
    return [(r, e) for r in target.runtimes if (e := facts(r).emulator) is not None]


def installed(names: Iterable[str]) -> dict[str, str]:
    """What each runtime runs with beyond this host's libraries (part of a measurement's cache key): the
    SHA-256 of its emulator root's manifest (the aarch64 LiteRT and numpy in it), "" for a host runtime."""
    from edgeq.emulator import EMULATORS, emulator_dir
    from edgeq.hashing import sha256_file

    out = {}
    for name in names:
        emulator = facts(name).emulator
        manifest = emulator_dir(EMULATORS[emulator]) / "manifest.json" if emulator else None
        out[name] = sha256_file(manifest) if manifest is not None and manifest.is_file() else ""
    return out


def require_emulators(target: TargetSpec, setup: bool, log: Any = None) -> None:
    """Every emulator the target's runtimes need: qemu installed, the root set up (or set up now)."""
    from edgeq.emulator import EMULATORS, EmulatorMissing, require
    from edgeq.emulator import setup as run_setup

    for runtime, name in emulators(target):
        spec = EMULATORS[name]
        try:
            require(spec, runtime)
        except EmulatorMissing:
            if not setup:
                raise
            run_setup(spec, log=log or (lambda line: None))


def _class(name: str) -> Any:
    module, cls = facts(name).cls.split(":")
    return getattr(importlib.import_module(module), cls)


def create_runtime(name: str, **options: Any) -> Any:
    """The class behind ``name``, constructed: an Engine, or for an emulated name its Runtime."""
    check_name(name)
    profile = split_name(name)[1]
    if profile is not None:
        options["profile"] = profile
    return _class(name)(**options)


def open_runtime(name: str, artifacts: dict[str, Artifact], threads: int, workdir: Path) -> Runtime:
    """A Runtime over every graph of an artifact (``artifacts``: graph -> file); ``workdir`` is a
    folder of its own for a runtime that needs one (not created unless used)."""
    if facts(name).whole_artifact:
        rt = create_runtime(name, threads=threads, workdir=workdir)
    else:
        rt = InProcess(name, {g: create_runtime(name, threads=threads) for g in artifacts})
    for art in artifacts.values():
        rt.load(art)
    return rt  # type: ignore[no-any-return]


class InProcess:
    """The Runtime of engines that run in this process: one engine per graph, each sample run when
    asked; a decode job is decoded in ``start`` (timed: host tokens per second)."""

    background = False

    def __init__(self, name: str, engines: dict[str, Engine]) -> None:
        self.name = name
        self.engines = engines
        self._decoded: Decoded | None = None

    def load(self, artifact: Artifact) -> None:
        """Load the artifact's file of one graph."""
        self.engines[artifact.graph].load(artifact)

    def start(self, work: Work) -> None:
        """Decode the work's sentences now (nothing else needs doing in advance)."""
        job = work.decode
        if job is None:
            return
        enc, dec = self.engines[job.encoder], self.engines[job.decoder]
        tokens: list[list[int]] = []
        steps = 0
        t0 = time.perf_counter()
        for feeds in job.sources:
            ids, n = greedy_decode(enc.run, dec.run, feeds[job.spec.source_ids], job.spec)
            tokens.append(ids)
            steps += n
        seconds = time.perf_counter() - t0
        self._decoded = Decoded(tokens, {"decoder_steps": steps, "seconds": seconds,
                                         "tokens_per_second": steps / seconds if seconds else 0.0})

    def run(self, graph: str, feeds: Feeds) -> Feeds:
        """One sample of ``graph``."""
        return self.engines[graph].run(feeds)

    def decoded(self) -> Decoded:
        """What ``start`` decoded."""
        if self._decoded is None:
            raise RuntimeError(f"{self.name}: no decode job was started")
        return self._decoded

    def describe(self) -> dict[str, Any]:
        """The first graph's engine's description (every graph runs on the same engine)."""
        return next(iter(self.engines.values())).describe()

    def stop(self) -> None:
        """Nothing runs in the background."""


SUBSET_SEED = 0  # the seed of the subset of eval samples background runtimes run


def subsets(runners: dict[tuple[str, str], Runtime], total: int,
            limit: int | None) -> dict[tuple[str, str], tuple[int, ...] | None]:
    """The eval samples each (artifact, runtime) pair runs: every one (None) on a runtime in this process;
    on one that runs in the background (under an emulator: seconds a sample for a large model), ``limit``
    of them drawn with ``SUBSET_SEED``, sorted, the same for all of them (None: every one, or fewer than
    ``limit`` in the set)."""
    import numpy as np

    chosen = None
    if limit is not None and limit < total:
        chosen = tuple(sorted(int(i) for i in np.random.default_rng(SUBSET_SEED).choice(total, size=limit, replace=False)))
    return {pair: chosen if rt.background else None for pair, rt in runners.items()}


def start_all(runtimes: Iterable[Runtime], work: Work) -> None:
    """Start every runtime on ``work``: the foreground ones first, so that what they measure (host
    decoding speed) is not measured against background processes competing for the CPU."""
    for rt in sorted(runtimes, key=lambda r: r.background):
        rt.start(work)


def stop_all(runtimes: Iterable[Runtime]) -> None:
    """Stop every runtime (background processes killed if still running)."""
    for rt in runtimes:
        rt.stop()
