"""A build killed with SIGKILL at any point: the previous bundle stays intact, no partial bundle
appears, no converter or emulator keeps running, and the next build removes what was left."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CliBuild, invoke_cli, snapshot, staging_leftovers

from edgeq.bundle.staging import remove_stale_staging


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize(("marker", "delay"), [
    ("[1/7] export ...", 0.5),      # while PyTorch exports
    ("[4/7] convert ...", 3.0),     # while the converter child process runs
    ("[6/7] validate ...", 1.5),    # while the emulators run
    ("[7/7] package ...", 0.0),     # while the bundle is written (or just after it was swapped in)
])
def test_sigkill_leaves_the_previous_bundle_intact(tiny_build: CliBuild, tmp_path: Path, marker: str, delay: float) -> None:
    assert tiny_build.exit_code == 0, tiny_build.stderr
    out = tmp_path / "dist" / "bundle"
    out.parent.mkdir()
    shutil.copytree(tiny_build.out, out)
    (out / "report.md").write_text("the previous bundle\n")  # marks it; verify would now fail, which is fine
    before = snapshot(out)
    # The emulated cores run only where the kill is meant to find them running.
    runtimes = [] if marker.startswith("[6/7]") else ["-r", "litert", "-r", "litert-ref"]
    proc = subprocess.Popen([sys.executable, "-m", "edgeq", "build", str(tiny_build.model_dir), "--out", str(out), *runtimes],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(marker):
            break
    else:
        pytest.fail(f"the build ended before {marker!r}: {''.join(seen)}")
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # children get SIGKILL when their parent dies; give the kernel a moment
    after = snapshot(out)
    if after != before:
        # Only when the kill came after the atomic swap (the build had finished): then out is the
        # complete new bundle, every file as its manifest says.
        assert invoke_cli(["verify", str(out)]).exit_code == 0
    leftovers = staging_leftovers(out.parent)
    for name in leftovers:
        assert _processes_mentioning(name) == [], f"a child of the killed build still runs in {name}"
    remove_stale_staging(out)  # what the next build does first
    assert staging_leftovers(out.parent) == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]


def test_a_running_builds_staging_is_not_removed(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    live = tmp_path / f".edgeq-staging-bundle-{os.getpid()}-abc"
    dead = tmp_path / ".edgeq-staging-bundle-999999999-abc"
    other = tmp_path / ".edgeq-staging-other-999999999-abc"
    for d in (live, dead, other):
        d.mkdir()
    remove_stale_staging(out)
    assert live.exists() and not dead.exists() and other.exists()
