"""``edgeq build``: check every input, run the stages in a staging folder, then swap the bundle in.

Everything that can be checked before work starts (edgeq.toml, the target and its runtimes,
--out, the model files, the data, the emulators) is checked first, so bad input fails in well
under a second with nothing written. Where the bundle is staged and how it replaces --out:
edgeq.bundle.staging; the model files' checks: edgeq.model_files; the data: the task's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeq.bundle.layout import STAGING_PREFIX
from edgeq.bundle.staging import (
    check_keep_dir,
    check_out_dir,
    keep_build,
    make_parents,
    remove_stale_staging,
    swap_into_place,
)
from edgeq.cache import OFF_ENV, StageCache, canonical, digest
from edgeq.config import CONFIG_FILE, ModelSpec, TargetSpec, load_model_spec, load_target
from edgeq.context import BuildContext
from edgeq.errors import ConfigError
from edgeq.hashing import tree_sha256
from edgeq.model_files import check_model_files
from edgeq.precisions import SELECTORS
from edgeq.results import PackageResult
from edgeq.runner import EventHook, run_stages
from edgeq.runtimes import cannot_run, require_emulators, with_runtimes
from edgeq.tasks import make_task

__all__ = ["BuildOptions", "BuildOutcome", "build"]


PRECISION_FIELD = "{precision}"  # in --out: the rung shipped (`edgeq build` defaults to dist/<model>-<target>-{precision})
EMULATED_SAMPLES = 64  # a seeded subset for the emulated cores' parity check (--emulated-samples N|all)
CONVERT_TIMEOUT = 1800.0  # seconds the converter child may run for one graph, unless --convert-timeout says


@dataclass(frozen=True)
class BuildOptions:
    """What `edgeq build` was asked to do (the command line's options)."""

    model_dir: Path
    target: str
    out: Path
    io_dtype: str | None = None
    gates: dict[str, float] | None = None
    keep_build_dir: Path | None = None
    runtimes: tuple[str, ...] | None = None  # instead of the target's list (--runtime)
    setup_emulator: bool = False  # set up a missing emulator instead of failing (--setup-emulator)
    trust_model: bool = False  # let Keras load Lambda layers / custom objects (--trust-model)
    input_shapes: dict[str, tuple[int, ...]] | None = None  # --input-shape NAME=D1,D2,...
    input_values: dict[str, Any] | None = None  # --input-value NAME=VALUE: inputs frozen into the graph
    allow_float_ops: tuple[str, ...] = ()  # --allow-float-op: added to [quantization].allow_float_ops
    repair: bool = True  # False: --no-repair (overrides [quantization].repair)
    convert_timeout: float = CONVERT_TIMEOUT  # --convert-timeout: seconds the converter may run per graph
    precision: str | None = None  # --precision: a rung (alias or name), "auto" or "all"; None: edgeq.toml's, the target's
    cache: Path | None = None  # the stage cache's folder (edgeq.cache); None: no cache (--no-cache)
    emulated_samples: int | None = EMULATED_SAMPLES  # eval samples a runtime under an emulator runs; None: all
    log: Any = None  # where set-up messages go (a callable taking one line)


@dataclass(frozen=True)
class BuildOutcome:
    """Where the bundle went and its report."""

    out: Path
    report: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)  # each stage's wall time in this build
    cached: tuple[str, ...] = ()  # what the stage cache gave back: stages and validate's measurements
    notes: tuple[str, ...] = ()  # what the cache has to say (an entry that changed and was made again ...)

    @property
    def passed(self) -> bool:
        """Every gate passed."""
        return bool(self.report["passed"])


def _resolve_target(opts: BuildOptions, model_io: str | None, model_precision: str | None) -> tuple[TargetSpec, str | None]:
    """The target with its I/O dtype and the rung it ships; "auto" / "all" (or None) as the ladder asked."""
    target = with_runtimes(load_target(opts.target), opts.runtimes)
    io_dtype = opts.io_dtype or model_io
    if io_dtype is not None and io_dtype not in target.io_dtypes:
        raise ConfigError(
            f"io dtype '{io_dtype}' is not supported by target '{target.name}'; "
            f"choose one of: {', '.join(target.io_dtypes)}"
        )
    asked = opts.precision or model_precision
    ladder = asked if asked in SELECTORS else None
    target = target.with_io_dtype(io_dtype).with_precision(None if ladder else asked)
    if target.io_dtype != "float32" and (ladder or target.precision != "int8"):
        raise ConfigError(f"int8 inputs and outputs come with the int8 precision only; drop --io-dtype int8 or "
                          f"build --precision int8 (asked: {asked})")
    for alias in target.precisions if ladder else (target.precision,):
        if all(cannot_run(rt, alias) for rt in target.runtimes):
            if ladder:
                continue
            raise ConfigError(f"no runtime of the target runs precision '{alias}' "
                              f"({cannot_run(target.runtimes[0], alias)}); add -r litert")
    return target, ladder


# The target's fields that decide no artifact before the precision stage: the gates, where and how it is
# validated, what the bundle holds, the rungs (the precision stage's cache_inputs).
_VALIDATION_ONLY = ("name", "description", "gates", "runtimes", "threads", "model_file", "c_array", "precision",
                    "precisions")


def _relative(obj: Any, root: str) -> Any:
    if isinstance(obj, str) and (obj == root or obj.startswith(root + "/")):
        return "$MODEL" + obj[len(root):]
    if isinstance(obj, dict):
        return {k: _relative(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative(v, root) for v in obj]
    return obj


def _data_sha(data: Any) -> str:
    """Every file of the folder a data set is read from (a superset of what its own sha256() hashes)."""
    return tree_sha256(Path(data.folder))


def cache_keys(spec: ModelSpec, target: TargetSpec, trust_model: bool) -> tuple[str, str] | None:
    """(model key, the stages' base key): the model folder's files (edgeq.toml and the data folders aside),
    edgeq.toml as parsed without its gates and repair settings (paths relative to the folder), --trust-model; then the
    target without what only validation uses and without the rungs (the precision stage's own key).
    None when the folder holds too many files to hash (the build goes on without the cache)."""
    root = os.path.abspath(spec.root)
    skip = {os.path.abspath(p) for p in (spec.root / CONFIG_FILE, spec.data.calibration, spec.data.eval)}
    try:
        files = tree_sha256(spec.root, skip=lambda p: os.path.abspath(p) in skip)
    except ValueError:
        return None
    # what decides no artifact and no measurement: the gates, the rung asked for, whether and how far to repair
    decides = replace(spec, gates={}, precision=None, quantization=replace(spec.quantization, repair=True, max_int16_ops=None))
    model = digest(files, _relative(canonical(decides), root), trust_model)
    made_by = {k: v for k, v in canonical(target).items() if k not in _VALIDATION_ONLY}
    return model, digest(model, made_by)


def _outs(out: Path, rungs: tuple[str, ...]) -> dict[str, Path]:
    """The bundle folder for each rung the build may ship: ``PRECISION_FIELD`` in --out's last part is
    replaced by the rung shipped (``--precision auto`` learns it at the end of validation)."""
    if PRECISION_FIELD in str(out.parent):
        raise ConfigError(f"--out: {PRECISION_FIELD} may stand in the bundle folder's own name only, not in its parents")
    return {r: out.with_name(out.name.replace(PRECISION_FIELD, r)) for r in rungs}


def build(opts: BuildOptions, on_event: EventHook | None = None) -> BuildOutcome:
    """Check every input, run every stage, swap the bundle into --out (exit codes: edgeq.errors)."""
    if opts.emulated_samples is not None and opts.emulated_samples < 1:
        raise ConfigError(f"--emulated-samples must be 1 or more, or all; got {opts.emulated_samples}")
    spec = load_model_spec(opts.model_dir, opts.input_shapes, opts.input_values)
    if opts.allow_float_ops:
        q = spec.quantization
        allowed = tuple(dict.fromkeys(q.allow_float_ops + opts.allow_float_ops))
        spec = replace(spec, quantization=replace(q, allow_float_ops=allowed))
    if not opts.repair:
        spec = replace(spec, quantization=replace(spec.quantization, repair=False))
    target, ladder = _resolve_target(opts, spec.io_dtype, spec.precision)
    gates = target.gate_limits(spec.gates, opts.gates or {})
    out = Path(os.path.abspath(opts.out))
    outs = _outs(out, target.precisions if ladder else (target.precision,))
    for candidate in outs.values():
        check_out_dir(candidate)
        if opts.keep_build_dir is not None:
            check_keep_dir(Path(os.path.abspath(opts.keep_build_dir)), candidate)
    check_model_files(spec, opts.trust_model)
    task = make_task(spec)
    calibration, evaluation = task.open_data()
    require_emulators(target, opts.setup_emulator, opts.log)

    created = make_parents(out.parent)
    remove_stale_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{out.name}-{os.getpid()}-", dir=out.parent))
    done = False
    try:
        build_dir = staging / "build"
        bundle_dir = staging / "bundle"
        build_dir.mkdir()
        bundle_dir.mkdir()
        calibration = task.materialize(calibration, "calibration", build_dir / "data")
        evaluation = task.materialize(evaluation, "eval", build_dir / "data")
        ctx = BuildContext(
            spec=spec, target=target, build_dir=build_dir, bundle_dir=bundle_dir, gates=gates, task=task,
            calibration=calibration, eval=evaluation, trust_model=opts.trust_model,
            convert_timeout=opts.convert_timeout, precision=target.precision, ladder=ladder,
            subset_samples=opts.emulated_samples,
        )
        if opts.cache is not None and os.environ.get(OFF_ENV, "") in ("", "0"):
            keys = cache_keys(spec, target, opts.trust_model)
            if keys is not None:
                ctx.cache = StageCache(opts.cache)
                ctx.model_key, ctx.cache_base = keys
                ctx.calibration_key, ctx.eval_key = _data_sha(calibration), _data_sha(evaluation)
        try:
            run_stages(ctx, on_event)
        finally:  # kept on failure too: convert.log is what explains a failed conversion
            if opts.keep_build_dir is not None:
                keep_build(build_dir, Path(opts.keep_build_dir))
        out = outs[ctx.precision]
        swap_into_place(bundle_dir, out)
        report = dict(ctx.result(PackageResult).report)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            for folder in created:  # deepest first; only the ones this build made, if still empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
    cache = ctx.cache
    return BuildOutcome(out=out, report=report, seconds=dict(ctx.timings), cached=tuple(cache.used) if cache else (),
                        notes=tuple(cache.notes) if cache else ())


