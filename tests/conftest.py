"""Shared builders and fixtures: a tiny classifier made in code, and the few full builds the suite shares.

Rules the builders keep:

* Everything is made at test time from fixed seeds; nothing is read from sample_models/ and nothing
  touches the network.
* ``make_model_dir`` writes a complete, valid model folder (edgeq.toml, model, weights, labels,
  calibration and eval data) whose eval labels are the float model's own top-1, so that every gate of
  the android target passes. Keyword overrides edit edgeq.toml table by table.
* A full build (onnx2tf + TFLite converter) costs seconds, so the suite runs only a handful, in
  session-scoped fixtures that many tests read. `make test` runs the suite in two pytest-xdist
  worker processes; each of these builds is made once for the run by whichever worker needs it
  first, the other waits for it (``shared``), so no build is made twice.
"""

from __future__ import annotations

import fcntl
import functools
import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# Offline: onnxruntime sends telemetry from Linux unless this is set before it loads (edgeq sets it
# on import too; tests may import onnxruntime first). Child processes inherit it.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
os.environ["EDGEQ_NO_CACHE"] = "1"  # builds in tests run every stage; tests/test_cache.py turns the cache on

_real_connect = socket.socket.connect


def _local_only_connect(self: socket.socket, address: Any) -> Any:
    """No test touches the network: only Unix sockets and loopback addresses may be connected to."""
    if self.family == socket.AF_UNIX or (isinstance(address, tuple) and str(address[0]) in ("127.0.0.1", "::1", "localhost")):
        return _real_connect(self, address)
    raise RuntimeError(f"a test tried to open a network connection to {address!r}")


socket.socket.connect = _local_only_connect  # type: ignore[method-assign]

SEED = 0
INPUT = "image"
OUTPUT = "logits"
SHAPE = (1, 3, 8, 8)  # NCHW, batch 1
NUM_CLASSES = 4
CLASS_NAMES = ("circle", "square", "stripe", "dot")
N_CALIBRATION = 24
N_EVAL = 32

MODEL_PY = '''\
"""TinyNet: the classifier the edgeq tests build their model folders around."""

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, *, channels: int = 8, num_classes: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)
'''


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()
"""Override value that removes a key (or a whole table) from edgeq.toml."""


# --------------------------------------------------------------------------------------------
# The tiny model, its weights and its data: computed once per test process.


def _load_tinynet_class() -> type:
    namespace: dict[str, Any] = {}
    exec(compile(MODEL_PY, "tinynet_model.py", "exec"), namespace)
    return namespace["TinyNet"]


@dataclass(frozen=True)
class TinyAssets:
    state_dict: dict[str, np.ndarray]
    safetensors: bytes
    onnx_dynamic_batch: bytes
    calibration: np.ndarray
    eval_images: np.ndarray
    eval_labels: np.ndarray


@functools.lru_cache(maxsize=1)
def tiny_assets() -> TinyAssets:
    """Train TinyNet for a few steps on noisy class prototypes, then label the eval set with its own top-1.

    Training makes the logit margins wide, so that INT8 rounding never flips a prediction and the
    accuracy and agreement gates pass with room to spare.
    """
    import torch
    from safetensors.torch import save

    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    protos = rng.standard_normal((NUM_CLASSES, *SHAPE[1:])).astype(np.float32)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        c = rng.integers(0, NUM_CLASSES, n)
        x = protos[c] + 0.5 * rng.standard_normal((n, *SHAPE[1:]))
        return x.astype(np.float32), c

    net = _load_tinynet_class()()
    x_train, c_train = draw(128)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    xt, ct = torch.from_numpy(x_train), torch.from_numpy(c_train)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), ct).backward()
        opt.step()
    net.eval()

    calibration, _ = draw(N_CALIBRATION)
    eval_images, _ = draw(N_EVAL)
    with torch.no_grad():
        logits = net(torch.from_numpy(eval_images)).numpy()
    labels = logits.argmax(axis=1).astype(np.int64)

    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated; edgeq uses it on purpose
        torch.onnx.export(
            net,
            (torch.zeros(SHAPE),),
            buf,
            dynamo=False,
            opset_version=17,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        )
    return TinyAssets(
        state_dict={k: v.numpy().copy() for k, v in state.items()},
        safetensors=save(state),
        onnx_dynamic_batch=buf.getvalue(),
        calibration=calibration,
        eval_images=eval_images,
        eval_labels=labels,
    )


def tiny_logits(x: np.ndarray) -> np.ndarray:
    """TinyNet's float logits for ``x`` ([N, 3, 8, 8]), computed with the saved weights."""
    import torch

    net = _load_tinynet_class()()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in tiny_assets().state_dict.items()})
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(x))).numpy()


# --------------------------------------------------------------------------------------------
# edgeq.toml as a dict, and a small TOML writer (the standard library only reads TOML).


def default_config(fmt: str = "pytorch") -> dict[str, Any]:
    model: dict[str, Any] = {"name": "tiny", "format": fmt}
    if fmt == "pytorch":
        model.update(
            {
                "file": "model.py",
                "class": "TinyNet",
                "weights": "weights.safetensors",
                "init_args": {"channels": 8, "num_classes": NUM_CLASSES},
            }
        )
    else:
        model["file"] = "model.onnx"
    return {
        "model": model,
        "inputs": [
            {
                "name": INPUT,
                "shape": list(SHAPE),
                "dtype": "float32",
                "layout": "NCHW",
                "preprocessing": {"scale": 1.0, "mean": [0.0], "std": [1.0]},
            }
        ],
        "outputs": [{"name": OUTPUT}],
        "task": {"kind": "classification", "output": OUTPUT, "labels": "labels.txt"},
        "data": {"calibration": "data/calibration", "eval": "data/eval"},
        "quantization": {"method": "minmax"},
    }


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML for {v!r}")


def to_toml(cfg: dict[str, Any]) -> str:
    """Top-level dicts become [tables], lists of dicts [[arrays of tables]], nested dicts inline tables."""
    lines = [
        f"{json.dumps(k)} = {_toml_value(v)}"
        for k, v in cfg.items()
        if not isinstance(v, dict) and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))
    ]
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in v.items()]
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                lines += ["", f"[[{k}]]"] + [
                    f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in item.items()
                ]
    return "\n".join(lines) + "\n"


def merge_config(cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Dict values merge into the table of the same name (DELETE removes a key); anything else replaces."""
    out = json.loads(json.dumps(cfg))
    for key, value in overrides.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            for k, v in value.items():
                if v is DELETE:
                    out[key].pop(k, None)
                else:
                    out[key][k] = v
        else:
            out[key] = value
    return out


def write_config(model_dir: Path, cfg: dict[str, Any]) -> None:
    (model_dir / "edgeq.toml").write_text(to_toml(cfg), encoding="utf-8")


def make_model_dir(tmp_path: Path, fmt: str = "pytorch", *, dirname: str = "model", **overrides: Any) -> Path:
    """A complete model folder for TinyNet at ``tmp_path / dirname``.

    ``fmt`` is "pytorch" (model.py + weights.safetensors) or "onnx" (model.onnx with a dynamic batch
    axis). Each keyword names an edgeq.toml table: a dict merges into it (DELETE drops a key), any
    other value replaces it, DELETE drops the table.
    """
    assets = tiny_assets()
    root = tmp_path / dirname
    root.mkdir(parents=True)
    if fmt == "pytorch":
        (root / "model.py").write_text(MODEL_PY, encoding="utf-8")
        (root / "weights.safetensors").write_bytes(assets.safetensors)
    elif fmt == "onnx":
        (root / "model.onnx").write_bytes(assets.onnx_dynamic_batch)
    else:
        raise ValueError(fmt)
    (root / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")
    cal = root / "data" / "calibration"
    ev = root / "data" / "eval"
    cal.mkdir(parents=True)
    ev.mkdir(parents=True)
    np.save(cal / f"{INPUT}.npy", assets.calibration)
    np.save(ev / f"{INPUT}.npy", assets.eval_images)
    np.save(ev / "labels.npy", assets.eval_labels)
    write_config(root, merge_config(default_config(fmt), overrides))
    return root


# --------------------------------------------------------------------------------------------
# Folder helpers.


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes); {} if the folder does not exist."""
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def staging_leftovers(parent: Path) -> list[str]:
    from edgeq.bundle.layout import STAGING_PREFIX

    return sorted(p.name for p in parent.iterdir() if p.name.startswith(STAGING_PREFIX))


def make_fake_bundle(out: Path) -> Path:
    """A folder that edgeq recognises as an earlier bundle of its own (manifest generator = edgeq)."""
    out.mkdir(parents=True)
    (out / "model.tflite").write_bytes(b"TFL3 earlier build")
    (out / "report.json").write_text('{"passed": true}\n', encoding="utf-8")
    (out / "manifest.json").write_text(
        json.dumps({"generator": "edgeq", "files": []}) + "\n", encoding="utf-8"
    )
    return out


def make_context(model_dir: Path, work: Path, *, io_dtype: str | None = None,
                 input_shapes: dict[str, tuple[int, ...]] | None = None, input_values: dict[str, Any] | None = None,
                 runtimes: tuple[str, ...] | None = None) -> Any:
    """A BuildContext for ``model_dir`` as edgeq.build makes it, without running any stage; ``runtimes``
    as `--runtime` gives them (None: the android target's own)."""
    from edgeq.config import load_model_spec, load_target
    from edgeq.context import BuildContext
    from edgeq.runtimes import with_runtimes
    from edgeq.tasks import make_task

    spec = load_model_spec(model_dir, input_shapes, input_values)
    target = with_runtimes(load_target("android").with_io_dtype(io_dtype or spec.io_dtype), runtimes)
    task = make_task(spec)
    calibration, evaluation = task.open_data()
    build_dir = work / "build"
    bundle_dir = work / "bundle"
    build_dir.mkdir(parents=True)
    bundle_dir.mkdir(parents=True)
    return BuildContext(
        spec=spec,
        target=target,
        build_dir=build_dir,
        bundle_dir=bundle_dir,
        gates=target.gate_limits(spec.gates, {}),
        task=task,
        calibration=calibration,
        eval=evaluation,
    )


# --------------------------------------------------------------------------------------------
# The shared full builds. Each costs a converter run; keep their number small.


@dataclass(frozen=True)
class CliBuild:
    model_dir: Path
    out: Path
    exit_code: int
    stdout: str
    stderr: str


def invoke_cli(args: list[str]) -> Any:
    from typer.testing import CliRunner

    from edgeq.cli import app

    return CliRunner().invoke(app, args)


# The longest test files, started first: `make test` hands whole files to its two workers in
# collection order (`--dist loadfile --no-loadscope-reorder`), so that the long ones do not end up
# last on one worker while the other idles.
LONGEST_FIRST = (
    "tests/test_sample_translator_e2e.py",
    "tests/test_sample_e2e.py",
    "tests/emulator/test_worker.py",
    "tests/stages/test_float_ops.py",
    "tests/test_tf_inputs.py",
    "tests/stages/test_export.py",
    "tests/test_kill.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file and among the rest is pytest's


def shared(tmp_path_factory: pytest.TempPathFactory, name: str, make: Any) -> Any:
    """``make(root)`` once per test run, whatever the number of xdist workers: the first worker to
    ask makes it in a folder of the run's base temp (under a lock), later ones read its result.
    Without xdist it is a plain session fixture's body."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return make(tmp_path_factory.mktemp(name))
    base = tmp_path_factory.getbasetemp().parent / "shared"
    base.mkdir(exist_ok=True)
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = base / f"{name}.pickle"
        if done.exists():
            return pickle.loads(done.read_bytes())  # written by this test run's other worker
        root = base / name
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        value = make(root)
        done.write_bytes(pickle.dumps(value))
        return value


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> CliBuild:
    """Build 1: the PyTorch TinyNet through `edgeq build --json`; float32 I/O, the target's gates."""
    def make(root: Path) -> CliBuild:
        model_dir = make_model_dir(root)
        out = root / "dist" / "tiny-android"
        out.parent.mkdir()
        result = invoke_cli(["build", str(model_dir), "--target", "android", "--out", str(out), "--json"])
        return CliBuild(model_dir, out, result.exit_code, result.stdout, result.stderr)

    return shared(tmp_path_factory, "tiny_build", make)


@pytest.fixture
def bundle(tiny_build: CliBuild, tmp_path: Path) -> Path:
    """A copy of build 1's bundle that a test may damage."""
    assert tiny_build.exit_code == 0, tiny_build.stderr
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_build.out, copy)
    return copy


@pytest.fixture(scope="session")
def tiny_report(tiny_build: CliBuild) -> dict[str, Any]:
    assert tiny_build.exit_code == 0, tiny_build.stderr
    return json.loads((tiny_build.out / "report.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class ApiBuild:
    model_dir: Path
    out: Path
    keep: Path
    outcome: Any


@pytest.fixture(scope="session")
def onnx_int8_build(tmp_path_factory: pytest.TempPathFactory) -> ApiBuild:
    """Build 2: the same network as a dynamic-batch ONNX file, int8 I/O, through edgeq.build.build,
    with the build folder kept."""
    from edgeq.build import BuildOptions, build

    def make(root: Path) -> ApiBuild:
        model_dir = make_model_dir(root, "onnx")
        out = root / "out"
        keep = root / "keep"
        outcome = build(
            BuildOptions(model_dir=model_dir, target="android", out=out, io_dtype="int8", keep_build_dir=keep)
        )
        return ApiBuild(model_dir, out, keep, outcome)

    return shared(tmp_path_factory, "onnx_int8_build", make)


@dataclass(frozen=True)
class RebuildRun:
    out: Path
    before: dict[str, bytes]
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def gate_fail_rebuild(tiny_build: CliBuild, tmp_path_factory: pytest.TempPathFactory) -> RebuildRun:
    """Build 3: the PyTorch TinyNet again, from the same folder, into a copy of build 1's bundle,
    with `--gate model_bytes=100` so that one gate fails (summary output, not --json); on the host
    runtimes (build 1 ran the emulated cores)."""
    assert tiny_build.exit_code == 0, tiny_build.stderr

    def make(root: Path) -> RebuildRun:
        out = root / "bundle"
        shutil.copytree(tiny_build.out, out)
        before = snapshot(out)
        result = invoke_cli(["build", str(tiny_build.model_dir), "--out", str(out), "--gate", "model_bytes=100",
                             *HOST_RUNTIME_ARGS])
        return RebuildRun(out, before, result.exit_code, result.stdout, result.stderr)

    return shared(tmp_path_factory, "gate_fail_rebuild", make)


@dataclass(frozen=True)
class ProcessBuild:
    out: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def process_builds(tmp_path_factory: pytest.TempPathFactory) -> list[ProcessBuild]:
    """Builds 4 and 5: `python -m edgeq build --json` twice on one model folder, two processes side by side
    (each the first build of its process, as a user runs edgeq)."""
    def make(root: Path) -> list[ProcessBuild]:
        model_dir = make_model_dir(root)
        outs = [root / "first", root / "second"]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "edgeq", "build", str(model_dir), "--out", str(out), "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=root,
            )
            for out in outs
        ]
        runs = []
        for out, proc in zip(outs, procs, strict=True):
            stdout, stderr = proc.communicate(timeout=600)
            runs.append(ProcessBuild(out, proc.returncode, stdout, stderr))
        return runs

    return shared(tmp_path_factory, "process_builds", make)


class StubStages:
    """Stands in for edgeq.runner.run_stages inside edgeq.build: writes a small fake bundle, no converters."""

    def __init__(self, raise_after_writing: BaseException | None = None, passed: bool = True) -> None:
        self.contexts: list[Any] = []
        self.raise_after_writing = raise_after_writing
        self.passed = passed

    def __call__(self, ctx: Any, on_event: Any = None, names: Any = None) -> dict[str, Any]:
        self.contexts.append(ctx)
        (ctx.build_dir / "model.float.onnx").write_bytes(b"onnx")
        (ctx.bundle_dir / "model.tflite").write_bytes(b"TFL3 new build")
        if self.raise_after_writing is not None:
            raise self.raise_after_writing
        report = {"passed": self.passed, "stub": True}
        (ctx.bundle_dir / "report.json").write_text(json.dumps(report), encoding="utf-8")
        (ctx.bundle_dir / "manifest.json").write_text(json.dumps({"generator": "edgeq"}), encoding="utf-8")
        from edgeq.results import PackageResult

        ctx.put(PackageResult(report))
        return {}


@pytest.fixture
def stub_stages(monkeypatch: pytest.MonkeyPatch) -> StubStages:
    stub = StubStages()
    monkeypatch.setattr("edgeq.build.run_stages", stub)
    return stub


# The host runtimes of the android target: what tests of stage logic validate on. The emulated
# cores are tested by the shared builds and tests/emulator/.
HOST_RUNTIMES = ("litert", "litert-ref")
HOST_RUNTIME_ARGS = tuple(a for rt in HOST_RUNTIMES for a in ("-r", rt))  # the same, as command-line options


def context_with_artifacts(model_dir: Path, keep: Path, work: Path, runtimes: tuple[str, ...] = HOST_RUNTIMES) -> Any:
    """A BuildContext for ``model_dir`` holding the four artifacts of a kept build folder (``--keep-build``),
    ready for the validate and package stages without converting again; validated on ``runtimes``."""
    from edgeq.artifacts import Artifact
    from edgeq.results import CalibrationResult, ConvertResult, ExportResult, PrecisionResult, QuantizeResult
    from edgeq.stages.convert import io_mapping

    ctx = make_context(model_dir, work, runtimes=runtimes)
    outputs = [OUTPUT]
    ctx.add(Artifact("onnx_float", keep / "model.float.onnx", "onnx", "float32", {"outputs": outputs}))
    ctx.add(Artifact("onnx_int8", keep / "model.int8.onnx", "onnx", "int8", {"outputs": outputs}))
    for key, name, precision in (
        ("tflite_float32", "model.float32.tflite", "float32"),
        ("tflite_int8", "model.int8.tflite", "int8"),
    ):
        meta = io_mapping(keep / name, ctx.spec.inputs, outputs, {OUTPUT: [1, NUM_CLASSES]})
        ctx.add(Artifact(key, keep / name, "tflite", precision, meta))
    # What the export, quantize and convert stages would have returned for these files.
    ctx.put(ExportResult("0" * 64, {"model": {"rewrites": [], "frozen_inputs": []}}))
    ctx.put(CalibrationResult({"model": ctx.calibration}))
    ctx.put(QuantizeResult({"format": "QDQ"}))
    ctx.put(ConvertResult("onnx2tf", "TFLITE_BUILTINS_INT8", ctx.target.io_dtype, "convert.log",
                          {"model": {"float_fallback": None, "strategies": []}}, "not confined: kept build"))
    ctx.put(PrecisionResult({"int8": {"name": "static_wi8_ai8", "made_by": "converter"}}))
    return ctx


@dataclass(frozen=True)
class TranslationBuild:
    model_dir: Path
    out: Path
    keep: Path
    returncode: int
    stdout: str
    stderr: str


TRANSLATION_CALIBRATION_SAMPLES = 6
TRANSLATION_EMULATED_SAMPLES = 5  # of the 8 eval sentences: the emulated cores decode a seeded subset


@pytest.fixture(scope="session")
def translation_build(tmp_path_factory: pytest.TempPathFactory) -> TranslationBuild:
    """Build 6: the tiny encoder-decoder (tests/tiny_translator.py) through `python -m edgeq build --json`
    in a child process, with --keep-build, [data].calibration_samples and 5 of the 8 eval sentences on
    the emulated cores (--emulated-samples 5), the target's gates.
    Two graphs, so two converter runs."""
    from tiny_translator import make_translation_dir

    def make(root: Path) -> TranslationBuild:
        model_dir = make_translation_dir(root, data={"calibration_samples": TRANSLATION_CALIBRATION_SAMPLES})
        out = root / "dist" / "translator-android"
        keep = root / "keep"
        proc = subprocess.run(
            [sys.executable, "-m", "edgeq", "build", str(model_dir), "--out", str(out), "--keep-build", str(keep),
             "--json", "--emulated-samples", str(TRANSLATION_EMULATED_SAMPLES)],
            capture_output=True,
            text=True,
            cwd=root,
            timeout=600,
        )
        return TranslationBuild(model_dir, out, keep, proc.returncode, proc.stdout, proc.stderr)

    return shared(tmp_path_factory, "translation_build", make)


def run_stage(stage: Any, ctx: Any) -> Any:
    """Run one stage as the runner does: its result kept in the context by type."""
    result = stage.run(ctx)
    ctx.put(result)
    return result
