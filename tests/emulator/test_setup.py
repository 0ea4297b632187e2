"""Emulator set-up and the errors a build gives when qemu or the emulator is missing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import invoke_cli, make_fake_bundle, make_model_dir, snapshot, staging_leftovers

from edgeq import emulator
from edgeq.config import load_target
from edgeq.emulator import ARM64, EmulatorMissing, QemuMissing, installed, require, setup, status
from edgeq.emulator.profiles import PROFILES, cpuinfo_text
from edgeq.runtimes import emulators, with_runtimes
from edgeq.runtimes import require_emulators as check_emulators


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGEQ_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def no_qemu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEQ_QEMU", str(tmp_path / "no-such-qemu"))


def _fake_root(cache: Path, spec_key: dict | None = None) -> Path:
    """A root that looks set up (manifest + the guest's python), made without the network."""
    where = cache / "emulators" / "arm64"
    (where / "root" / "usr" / "bin").mkdir(parents=True)
    (where / "root" / "usr" / "bin" / "python3.11").write_bytes(b"\x7fELF")
    manifest = {"spec": spec_key or ARM64.spec_key(), "created": "2026-11-27T00:00:00Z", "packages": [], "wheels": [],
                "suite": "bookworm", "guest": {"python": "3.11.2", "machine": "aarch64", "litert": "2.3.0", "numpy": "2.4.6"},
                "bytes_installed": 4, "bytes_fetched": 0, "mirror": "file:///m"}
    (where / "manifest.json").write_text(json.dumps(manifest))
    return where


def test_cpuinfo_describes_the_profile_core() -> None:
    a53 = cpuinfo_text(PROFILES["cortex-a53"], 2)
    a76 = cpuinfo_text(PROFILES["cortex-a76"], 1)
    assert a53.count("processor\t:") == 2 and "CPU part\t: 0xd03" in a53 and "asimddp" not in a53
    assert a76.count("processor\t:") == 1 and "CPU part\t: 0xd0b" in a76 and "asimddp" in a76.split("Features")[1]
    assert "CPU implementer\t: 0x41" in a76


def test_missing_qemu_names_the_install_command(no_qemu: None) -> None:
    with pytest.raises(QemuMissing) as e:
        require(ARM64, "litert-arm64:cortex-a53")
    assert str(e.value).endswith("install it: sudo apt-get install qemu-user-static")
    assert "\n" not in str(e.value)


def test_missing_emulator_names_the_setup_command(empty_cache: Path) -> None:
    with pytest.raises(EmulatorMissing) as e:
        require(ARM64, "litert-arm64:cortex-a53")
    msg = str(e.value)
    assert "runtime litert-arm64:cortex-a53 needs the arm64 emulator, which is not set up" in msg
    assert "run: edgeq emulator setup arm64" in msg and "--setup-emulator" in msg


def test_a_root_from_another_edgeq_version_counts_as_missing(empty_cache: Path) -> None:
    _fake_root(empty_cache, {**ARM64.spec_key(), "layout": -1})
    assert installed(ARM64) is None
    with pytest.raises(EmulatorMissing, match="was set up by another edgeq version; run: edgeq emulator setup arm64"):
        require(ARM64, "litert-arm64:cortex-a76")
    assert status(ARM64)["stale"] is True


def test_setup_is_idempotent_and_offline_once_done(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_root(empty_cache)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("set-up touched the network although the root is there")

    monkeypatch.setattr("edgeq.emulator.debian.fetch", no_network)
    monkeypatch.setattr("edgeq.emulator.debian.signed_index", no_network)
    before = snapshot(empty_cache)
    result = setup(ARM64, log=lambda line: None)
    assert result["fetched"] is False
    assert snapshot(empty_cache) == before
    assert require(ARM64, "x") == empty_cache / "emulators" / "arm64" / "root"


def test_setup_checks_qemu_before_fetching(no_qemu: None, empty_cache: Path) -> None:
    with pytest.raises(QemuMissing):
        setup(ARM64, log=lambda line: None)
    assert not empty_cache.exists()


def test_a_failed_setup_leaves_nothing_behind(empty_cache: Path, tmp_path: Path) -> None:
    # A mirror without an InRelease: set-up fails at its first download, before anything is unpacked.
    with pytest.raises(emulator.debian.DebianError, match="cannot download"):
        setup(ARM64, mirror=(tmp_path / "no-mirror").as_uri(), log=lambda line: None)
    leftovers = list((empty_cache / "emulators").iterdir())
    assert leftovers == []


def test_check_emulators_sets_up_only_when_asked(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr("edgeq.emulator.setup", lambda spec, log: calls.append(spec.name))
    target = load_target("android")
    assert [e for _, e in emulators(target)] == ["arm64", "arm64"]
    with pytest.raises(EmulatorMissing):
        check_emulators(target, setup=False)
    assert calls == []
    check_emulators(target, setup=True)
    assert calls and set(calls) == {"arm64"}
    host_only = with_runtimes(target, ["litert", "litert-ref"])
    assert emulators(host_only) == []
    check_emulators(host_only, setup=False)  # nothing to check


# -- the command line -----------------------------------------------------------------------


def test_status_says_what_is_missing(empty_cache: Path) -> None:
    result = invoke_cli(["emulator", "status"])
    assert result.exit_code == 0
    assert "root:     not set up; run: edgeq emulator setup arm64" in result.stdout
    assert "cortex-a53 (low-end phone core" in result.stdout
    data = json.loads(invoke_cli(["emulator", "status", "--json"]).stdout)
    assert data[0]["installed"] is False and data[0]["emulator"] == "arm64"


def test_status_describes_a_root(empty_cache: Path) -> None:
    _fake_root(empty_cache)
    result = invoke_cli(["emulator", "status"])
    assert result.exit_code == 0 and "Debian bookworm, set up 2026-11-27T00:00:00Z" in result.stdout


def test_setup_command_when_already_done(empty_cache: Path) -> None:
    _fake_root(empty_cache)
    result = invoke_cli(["emulator", "setup", "arm64"])
    assert result.exit_code == 0
    assert "already set up" in result.stdout and "nothing to do" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["emulator", "setup", "riscv"], "unknown emulator 'riscv'; known: arm64"),
    ],
)
def test_setup_command_bad_input(args: list[str], message: str, empty_cache: Path) -> None:
    result = invoke_cli(args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_setup_command_without_qemu(no_qemu: None, empty_cache: Path) -> None:
    result = invoke_cli(["emulator", "setup", "arm64"])
    assert result.exit_code == 2
    assert "EDGEQ_QEMU=" in result.stderr and "sudo apt-get install qemu-user-static" in result.stderr
    assert not empty_cache.exists()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("emu_cli"))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ("qemu", "the arm64 emulator needs qemu-user"),
        ("cache", "runtime litert-arm64:cortex-a53 needs the arm64 emulator, which is not set up; "
                  "run: edgeq emulator setup arm64"),
    ],
)
def test_build_without_qemu_or_emulator_exits_2_and_writes_nothing(
    env: str, message: str, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env == "qemu":
        monkeypatch.setenv("EDGEQ_QEMU", str(tmp_path / "no-such-qemu"))
    else:
        monkeypatch.setenv("EDGEQ_CACHE_DIR", str(tmp_path / "empty-cache"))
    out = make_fake_bundle(tmp_path / "dist" / "bundle")  # an earlier bundle, to be left as it was
    before = snapshot(out)
    result = invoke_cli(["build", str(model_dir), "--out", str(out)])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert snapshot(out) == before
    assert staging_leftovers(out.parent) == []


@pytest.mark.parametrize(
    ("runtimes", "message"),
    [
        (["litert-arm64:cortex-a53"], "--runtime: the first runtime is the reference for parity and must run on the host"),
        (["litert", "litert-arm64"], "--runtime: runtime 'litert-arm64': a CPU profile is needed"),
        (["litert", "litert-arm64:m1"], "unknown CPU profile 'm1'"),
        (["litert", "litert"], "--runtime: runtime 'litert' is named twice"),
        (["onnxruntime"], "--runtime: runtime 'onnxruntime' does not run tflite files"),
    ],
)
def test_build_runtime_option_bad_input(runtimes: list[str], message: str, model_dir: Path, tmp_path: Path) -> None:
    args = ["build", str(model_dir), "--out", str(tmp_path / "out")]
    for r in runtimes:
        args += ["--runtime", r]
    result = invoke_cli(args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_qemu_override_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "qemu"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("EDGEQ_QEMU", str(fake))
    assert emulator.find_qemu(ARM64) == fake
    os.chmod(fake, 0o644)
    with pytest.raises(QemuMissing, match="is not an executable"):
        emulator.find_qemu(ARM64)
