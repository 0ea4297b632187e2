"""The emulator worker and its file protocol: feeds in, outputs and translations out, failures
reported; then the same worker inside qemu on each CPU profile."""

from __future__ import annotations

import ast
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import INPUT, SHAPE, CliBuild

from edgeq.bundle.reader import Bundle
from edgeq.decode import greedy_decode
from edgeq.emulator import ARM64, GUEST_IMPORTS, SMOKE, require
from edgeq.execution import FeedRecorder
from edgeq.runtimes import create_runtime
from edgeq.runtimes.arm64 import LIB, WORKER, EmulatorRunError, LiteRTArm64

HOST_PYTHON = [sys.executable, "worker.py"]  # the worker on the host: the protocol without the emulator


def _host(job: Path) -> list[str]:
    return HOST_PYTHON


def _feeds(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Inputs in the shipped .tflite's own layout (NHWC), as a bundle's runtime takes them."""
    rng = np.random.default_rng(seed)
    b, c, h, w = SHAPE
    return [{INPUT: rng.standard_normal((b, h, w, c)).astype(np.float32)} for _ in range(n)]


def _session(bundle: Path, tmp: Path, profile: str, samples: list[dict[str, np.ndarray]]) -> LiteRTArm64:
    rec = FeedRecorder(tmp / "feeds", len(samples))
    for s in samples:
        rec.add(s)
    rec.close()
    session = create_runtime(f"litert-arm64:{profile}")
    session.load(Bundle.open(bundle).artifact("model"))
    session.add_run("model", rec.samples, rec.files)
    return session


def test_the_worker_imports_only_numpy_the_runtime_and_the_standard_library() -> None:
    allowed = set(sys.stdlib_module_names) | {"numpy", "ai_edge_litert"}
    for path in (WORKER, *LIB.values()):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_the_set_up_compiles_every_module_the_worker_imports() -> None:
    """emulator setup's smoke test imports GUEST_IMPORTS with bytecode writing on; a module the worker
    imports that is not among them would be compiled under qemu at every worker start."""
    for path in (WORKER, *LIB.values()):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name in GUEST_IMPORTS, f"{path.name} imports {name}"
    assert all(m in SMOKE for m in GUEST_IMPORTS)


def test_feed_recorder_streams_and_counts(tmp_path: Path) -> None:
    rec = FeedRecorder(tmp_path / "f", 2)
    rec.add({"b": np.ones((1, 2), np.int32), "a": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="recorded 1 samples, 2 announced"):
        rec.close()
    rec.add({"b": np.full((1, 2), 7, np.int32), "a": np.ones(3, np.float32)})
    with pytest.raises(IndexError, match="more than the 2 samples"):
        rec.add({"b": np.ones((1, 2), np.int32), "a": np.zeros(3, np.float32)})
    rec.close()
    assert np.load(rec.files["b"]).tolist() == [[[1, 1]], [[7, 7]]]
    assert np.load(rec.files["a"]).shape == (2, 3)


def test_protocol_round_trip_on_the_host(tiny_build: CliBuild, tmp_path: Path) -> None:
    """Feeds recorded to files, outputs back as files, replayed sample by sample: the host worker
    (same LiteRT as the host runtime) gives exactly the host runtime's outputs."""
    samples = _feeds(5)
    session = _session(tiny_build.out, tmp_path, "cortex-a53", samples)
    session.launch(tmp_path / "job", launcher=_host)
    result = session.wait(timeout=120)
    assert result["ok"] and result["protocol"] == 1 and result["guest"]["litert"]
    job = json.loads((tmp_path / "job" / "job.json").read_text())
    assert job["runs"][0]["samples"] == 5 and not Path(job["runs"][0]["feeds"][INPUT]).is_absolute()
    raw = np.load(tmp_path / "job" / "out" / "model" / "0.npy")
    shipped = Bundle.open(tiny_build.out).graphs()["model"]["outputs"][0]
    assert raw.shape[0] == 5 and raw.dtype == np.dtype(shipped["dtype"])  # as the runtime produced it
    host = Bundle.open(tiny_build.out).runtime("model")
    replay = session.replay("model")
    for s in samples:
        np.testing.assert_array_equal(replay.run(s)["logits"], host.run(s)["logits"])
    with pytest.raises(RuntimeError, match="more runs than the 5 recorded samples"):
        replay.run(samples[0])
    d = session.describe()
    assert d["profile"] == "cortex-a53" and d["emulated"] and d["host"] is False
    assert d["validation_seconds"]["wall"] > 0 and "latency" not in json.dumps(d)


def test_replay_refuses_feeds_other_than_recorded(tiny_build: CliBuild, tmp_path: Path) -> None:
    session = _session(tiny_build.out, tmp_path, "cortex-a76", _feeds(2))
    session.launch(tmp_path / "job", launcher=_host)
    session.wait(timeout=120)
    with pytest.raises(RuntimeError, match="sample 0 is fed 'image' differently from what was recorded"):
        session.replay("model").run(_feeds(1, seed=9)[0])


def test_a_worker_error_is_reported(tiny_build: CliBuild, tmp_path: Path) -> None:
    session = _session(tiny_build.out, tmp_path, "cortex-a53", _feeds(1))

    def broken_job(job: Path) -> list[str]:
        spec = json.loads((job / "job.json").read_text())
        spec["protocol"] = 99
        (job / "job.json").write_text(json.dumps(spec))
        return HOST_PYTHON

    session.launch(tmp_path / "job", launcher=broken_job)
    with pytest.raises(EmulatorRunError, match=r"cortex-a53 failed on model.tflite: ValueError: job protocol 99 is not 1"):
        session.wait(timeout=120)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "the emulator process killed by SIGSEGV"),
        ("import sys; print('qemu: uncaught target signal 11'); sys.exit(139)",
         "crashed (SIGSEGV) (qemu: uncaught target signal 11)"),
        ("import sys; sys.exit(3)", "the emulator process exit code 3"),
    ],
)
def test_a_crash_without_a_result_is_reported(tiny_build: CliBuild, tmp_path: Path, code: str, message: str) -> None:
    session = _session(tiny_build.out, tmp_path, "cortex-a53", _feeds(1))
    session.launch(tmp_path / "job", launcher=lambda job: [sys.executable, "-c", code])
    with pytest.raises(EmulatorRunError) as e:
        session.wait(timeout=60)
    assert message in str(e.value)


def test_a_hung_emulator_is_stopped(tiny_build: CliBuild, tmp_path: Path) -> None:
    session = _session(tiny_build.out, tmp_path, "cortex-a53", _feeds(1))
    session.launch(tmp_path / "job", launcher=lambda job: [sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(EmulatorRunError, match="did not finish within 1 s"):
        session.wait(timeout=1)


def test_the_worker_decodes_with_the_shared_loop(translation_build: Any, tmp_path: Path) -> None:
    """The translation decode loop inside the worker (on the host here) is edgeq.decode's."""
    assert translation_build.returncode == 0, translation_build.stderr
    bundle = Bundle.open(translation_build.out)
    task = bundle.model["task"]
    enc_name, dec_name = task["encoder"]["graph"], task["decoder"]["graph"]
    spec = bundle.decode_spec()
    rng = np.random.default_rng(0)
    src_len = task["source_length"]
    rows = []
    for _ in range(4):
        row = np.zeros((1, src_len), np.int32)
        n = int(rng.integers(2, src_len - 1))
        row[0, :n] = rng.integers(4, 20, n)
        row[0, n] = spec.eos_id
        rows.append(row)
    rec = FeedRecorder(tmp_path / "feeds", len(rows))
    for r in rows:
        rec.add({spec.source_ids: r})
    rec.close()
    session = create_runtime("litert-arm64:cortex-a76")
    session.load(bundle.artifact(enc_name))
    session.load(bundle.artifact(dec_name))
    session.add_decode(enc_name, dec_name, asdict(spec), rec.files[spec.source_ids])
    session.launch(tmp_path / "job", launcher=_host)
    session.wait(timeout=300)
    assert session.result["seconds"]["decode"] > 0
    tokens, steps = session.decoded_arrays()
    enc, dec = bundle.runtime(enc_name), bundle.runtime(dec_name)
    for k, r in enumerate(rows):
        ids, n = greedy_decode(enc.run, dec.run, r, spec)
        assert [int(t) for t in tokens[k] if t >= 0] == ids and steps[k] == n


# -- inside the emulator --------------------------------------------------------------------


@pytest.fixture(scope="module")
def arm64_root() -> Path:
    """The set-up arm64 emulator. Not skipped when missing: `make test` sets it up first."""
    try:
        return require(ARM64, "the emulator tests")
    except Exception as e:
        pytest.fail(f"{e} (`make test` sets it up)")


@pytest.mark.parametrize(("profile", "dot", "part"), [("cortex-a53", False, "0xd03"), ("cortex-a76", True, "0xd0b")])
def test_the_worker_runs_in_qemu_on_each_profile(
    arm64_root: Path, tiny_build: CliBuild, tiny_report: dict[str, Any], tmp_path: Path, profile: str, dot: bool, part: str
) -> None:
    samples = _feeds(8)
    session = _session(tiny_build.out, tmp_path, profile, samples)
    session.launch(tmp_path / "job")
    result = session.wait(timeout=300)
    guest = result["guest"]
    # The profile reached the guest: qemu's -cpu sets the feature bits, the profile root the core.
    assert guest["machine"] == "aarch64" and guest["dot_product"] is dot and guest["cpu_part"] == part
    assert guest["litert"] == "2.3.0"
    host = Bundle.open(tiny_build.out).runtime("model")
    step = tiny_report["artifacts"]["tflite_int8"]["parity"]["litert-ref"]["outputs"]["model"]["logits"]["step"]
    replay = session.replay("model")
    for s in samples:
        diff = np.abs(replay.run(s)["logits"] - host.run(s)["logits"]).max()
        assert diff <= 4 * step + 1e-6  # arm64 kernels: rounding-level differences at most
