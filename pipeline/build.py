"""``edgeq build``: check every input, run the stages in a staging folder, then swap the bundle in.

Rules kept here:

* Everything that can be checked before work starts (edgeq.toml, the target, --out, the data) is
  checked first, so bad input fails in well under a second with nothing written.
* All files are written under a staging folder next to --out (same file system). The finished
  bundle replaces --out with one atomic exchange of directory entries; a failed or interrupted
  build leaves the previous bundle as it was and removes its staging folder.
* An existing --out is replaced only if it is an earlier edgeq bundle (manifest.json written by
  edgeq) or an empty folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeq.config import ModelSpec, TargetSpec, load_model_spec, load_target
from edgeq.context import BuildContext
from edgeq.errors import ConfigError, OutputDirError
from edgeq.results import PackageResult
from edgeq.runner import EventHook, run_stages
from edgeq.runtimes import emulators, with_runtimes
from edgeq.tasks import make_task

__all__ = ["BuildOptions", "BuildOutcome", "build", "check_keep_dir", "check_out_dir", "is_edgeq_bundle"]

STAGING_PREFIX = ".edgeq-staging-"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class BuildOptions:
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
    log: Any = None  # where set-up messages go (a callable taking one line)


@dataclass(frozen=True)
class BuildOutcome:
    out: Path
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.report["passed"])


def is_edgeq_bundle(path: Path) -> bool:
    manifest = path / MANIFEST
    if not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("generator") == "edgeq"


def check_out_dir(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputDirError(f"--out {str(out)!r} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not is_edgeq_bundle(out):
        raise OutputDirError(
            f"--out {str(out)!r} exists and is not an edgeq bundle; choose an empty or new folder, "
            "or delete it yourself"
        )
    parent = out.parent
    while not parent.exists():  # missing parents are created once the inputs have been checked
        parent = parent.parent
    if not parent.is_dir():
        raise OutputDirError(f"--out {str(out)!r}: {str(parent)!r} is a file, not a folder; choose another --out")
    if not os.access(parent, os.W_OK):
        raise OutputDirError(f"--out {str(out)!r}: folder {str(parent)!r} is not writable; choose another --out")


KEEP_MARKER = ".edgeq-build"


def check_keep_dir(keep: Path, out: Path) -> None:
    """--keep-build replaces only a folder an earlier --keep-build wrote (it holds KEEP_MARKER) or an empty one."""
    if keep == out or out in keep.parents or keep in out.parents:
        raise OutputDirError(f"--keep-build {str(keep)!r} overlaps --out {str(out)!r}; choose a separate folder")
    if keep.is_symlink() or (keep.exists() and not keep.is_dir()):
        raise OutputDirError(f"--keep-build {str(keep)!r} exists and is not a folder; choose another folder")
    if keep.is_dir() and any(keep.iterdir()) and not (keep / KEEP_MARKER).is_file():
        raise OutputDirError(
            f"--keep-build {str(keep)!r} exists and was not written by edgeq; choose an empty or new folder"
        )


def _resolve_target(opts: BuildOptions, model_io: str | None) -> TargetSpec:
    target = with_runtimes(load_target(opts.target), opts.runtimes)
    io_dtype = opts.io_dtype or model_io
    if io_dtype is not None and io_dtype not in target.io_dtypes:
        raise ConfigError(
            f"io dtype '{io_dtype}' is not supported by target '{target.name}'; "
            f"choose one of: {', '.join(target.io_dtypes)}"
        )
    return target.with_io_dtype(io_dtype)


def check_model_files(spec: ModelSpec, trust: bool = False) -> None:
    """The model's files, before any work: ONNX size limits and external data inside the model
    folder; a .keras file's config naming only Keras' own classes; a SavedModel of plain files."""
    if spec.format == "onnx":
        from edgeq.onnx_files import check_onnx_file

        for graph in spec.graphs:
            check_onnx_file(graph.file)
    elif spec.format == "keras":
        from edgeq.keras_files import check_keras_file

        check_keras_file(spec.file, trust)
    elif spec.format == "saved_model":
        from edgeq.errors import ModelError
        from edgeq.onnx_files import MAX_PROTOBUF

        total = 0
        for p in sorted(spec.file.rglob("*")):
            if p.is_symlink():
                raise ModelError(f"{spec.file.name}: {p.relative_to(spec.file)} is a symlink; a SavedModel must be plain files")
            total += p.stat().st_size if p.is_file() else 0
        if total > MAX_PROTOBUF:  # its variables become one ONNX protobuf and one .tflite: both stop at 2 GB
            raise ModelError(f"{spec.file.name} is {total} bytes, over the 2 GB limit of an ONNX model and a .tflite "
                             "file; quantize a smaller model")
        from edgeq.saved_model_ops import check_saved_model

        check_saved_model(spec.file, trust)  # only math ops: TensorFlow runs a SavedModel's ops when it loads it
    elif spec.format == "pytorch" and spec.weights is not None:
        from edgeq.onnx_files import check_size

        # The weights become one ONNX protobuf and one TFLite flatbuffer: both stop at 2 GB.
        check_size(spec.weights, "weights file", "an ONNX model and a .tflite file cannot hold it; quantize a smaller model")


def check_emulators(target: TargetSpec, setup: bool, log: Any = None) -> None:
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


def build(opts: BuildOptions, on_event: EventHook | None = None) -> BuildOutcome:
    spec = load_model_spec(opts.model_dir, opts.input_shapes, opts.input_values)
    if opts.allow_float_ops:
        q = spec.quantization
        allowed = tuple(dict.fromkeys(q.allow_float_ops + opts.allow_float_ops))
        spec = replace(spec, quantization=replace(q, allow_float_ops=allowed))
    target = _resolve_target(opts, spec.io_dtype)
    gates = target.gate_limits(spec.gates, opts.gates or {})
    out = Path(os.path.abspath(opts.out))
    check_out_dir(out)
    if opts.keep_build_dir is not None:
        check_keep_dir(Path(os.path.abspath(opts.keep_build_dir)), out)
    check_model_files(spec, opts.trust_model)
    task = make_task(spec)
    calibration, evaluation = task.open_data()
    check_emulators(target, opts.setup_emulator, opts.log)

    created = _make_parents(out.parent)
    _remove_stale_staging(out)
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
        )
        try:
            run_stages(ctx, on_event)
        finally:  # kept on failure too: convert.log is what explains a failed conversion
            if opts.keep_build_dir is not None:
                _keep(build_dir, Path(opts.keep_build_dir))
        _swap_into_place(bundle_dir, out)
        report = dict(ctx.result(PackageResult).report)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            for folder in created:  # deepest first; only the ones this build made, if still empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return BuildOutcome(out=out, report=report)


def _remove_stale_staging(out: Path) -> None:
    """Staging folders of earlier builds of ``out`` whose process is gone (killed: SIGKILL, out of memory)."""
    from edgeq._proc import pid_alive

    prefix = f"{STAGING_PREFIX}{out.name}-"
    for p in out.parent.glob(f"{prefix}*"):
        pid = p.name[len(prefix):].split("-", 1)[0]
        if p.is_dir() and not p.is_symlink() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _make_parents(folder: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it created, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        f.mkdir()
    return missing


def _keep(build_dir: Path, keep: Path) -> None:
    if keep.exists():
        shutil.rmtree(keep)
    shutil.copytree(build_dir, keep, symlinks=True)
    (keep / KEEP_MARKER).write_text("intermediate files of an edgeq build; --keep-build may replace this folder\n")


def _swap_into_place(new: Path, out: Path) -> None:
    """Put ``new`` at ``out``. With an existing ``out``, exchange the two atomically, then delete the old."""
    if not out.exists():
        os.rename(new, out)
        return
    if _rename_exchange(new, out):
        shutil.rmtree(new)  # ``new`` now holds the previous bundle
        return
    # No renameat2 (not Linux, or an old kernel): two renames, a short window without --out.
    old = new.with_name(new.name + "-previous")
    os.rename(out, old)
    os.rename(new, out)
    shutil.rmtree(old)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _rename_exchange(a: Path, b: Path) -> bool:
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0
