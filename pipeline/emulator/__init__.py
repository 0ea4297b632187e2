"""Emulated edge CPUs: an arm64 Debian root with the aarch64 LiteRT, run under qemu-user.

``edgeq emulator setup arm64`` provisions the root once into the user's cache directory; builds
then run offline. The root holds Debian 12's aarch64 Python 3.11 (packages unpacked, nothing of
the other architecture executed) and, under /opt/edgeq/site, the aarch64 wheels of LiteRT and
numpy - the same LiteRT version as the host's, so that host-vs-arm64 differences are kernel
differences, not version differences. qemu comes from the system (Debian's qemu-user-static).

Layout of the cache (``EDGEQ_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgeq``, else ~/.cache/edgeq)::

    emulators/arm64/manifest.json   what was fetched: packages, wheels, sizes, hashes
    emulators/arm64/root/           the Debian tree; /opt/edgeq/site holds the wheels
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edgeq.emulator.profiles import PROFILES, CpuProfile, cpuinfo_text
from edgeq.errors import EdgeqError
from edgeq.hashing import sha256_file

__all__ = [
    "ARM64",
    "EMULATORS",
    "EmulatorMissing",
    "EmulatorSetupError",
    "EmulatorSpec",
    "QemuMissing",
    "cache_dir",
    "find_qemu",
    "installed",
    "profile_root",
    "require",
    "setup",
    "status",
]

LAYOUT = 2  # bump when the root's layout or contents change: an older root is then set up again
# 2: the guest's bytecode of the modules the worker imports is compiled into the root at set-up
GUEST_SITE = "/opt/edgeq/site"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class QemuMissing(EdgeqError):
    """qemu-user for the emulator's architecture is not installed."""


class EmulatorMissing(EdgeqError):
    """The emulator's root has not been set up (or was set up by an older edgeq)."""


class EmulatorSetupError(EdgeqError):
    """Fetching or checking what the emulator needs failed."""


@dataclass(frozen=True)
class Wheel:
    requirement: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class EmulatorSpec:
    """An emulator: the Debian root it needs (arch, suite, packages, wheels), its guest Python and qemu."""

    name: str                 # as in `edgeq emulator setup NAME`
    debian_arch: str
    suite: str
    packages: tuple[str, ...]  # wanted; their dependencies come along
    python: str               # the guest interpreter, inside the root
    wheels: tuple[Wheel, ...]
    pip_platforms: tuple[str, ...]
    qemu: tuple[str, ...]     # qemu-user binaries to look for, in order
    qemu_package: str

    def spec_key(self) -> dict[str, Any]:
        """What a root must have been built from to count as set up."""
        return {"layout": LAYOUT, "suite": self.suite, "packages": list(self.packages),
                "wheels": [w.filename for w in self.wheels]}


ARM64 = EmulatorSpec(
    name="arm64",
    debian_arch="arm64",
    suite="bookworm",
    # python3.11-minimal + libpython3.11-stdlib: the interpreter and the standard library;
    # libstdc++6: LiteRT is C++.
    packages=("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6"),
    python="/usr/bin/python3.11",
    wheels=(
        Wheel("ai-edge-litert==2.3.0", "ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_27_aarch64.whl",
              "853fc608f96da87bd5f3458465dfb9abbf18d5ae6b94eceacead407146f175ae"),
        Wheel("numpy==2.4.6", "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
              "0ab0a9c4ffb1a6d95ef519fe4247dba8eb6b18ad93999f76b7f657039acabd47"),
    ),
    pip_platforms=("manylinux_2_27_aarch64", "manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"),
    qemu=("qemu-aarch64-static", "qemu-aarch64"),
    qemu_package="qemu-user-static",
)

EMULATORS: dict[str, EmulatorSpec] = {ARM64.name: ARM64}


def cache_dir() -> Path:
    """edgeq's cache folder: $EDGEQ_CACHE_DIR, else edgeq under $XDG_CACHE_HOME or ~/.cache."""
    env = os.environ.get("EDGEQ_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgeq"


def emulator_dir(spec: EmulatorSpec) -> Path:
    return cache_dir() / "emulators" / spec.name


def find_qemu(spec: EmulatorSpec) -> Path:
    """The qemu-user binary (``EDGEQ_QEMU`` overrides the search); QemuMissing with the install command."""
    env = os.environ.get("EDGEQ_QEMU")
    candidates = [env] if env else list(spec.qemu)
    for c in candidates:
        found = shutil.which(c)
        if found:
            return Path(found)
    what = f"EDGEQ_QEMU={env!r} is not an executable" if env else f"{spec.qemu[0]} is not installed"
    raise QemuMissing(
        f"the {spec.name} emulator needs qemu-user: {what}; install it: sudo apt-get install {spec.qemu_package}"
    )


def _manifest(spec: EmulatorSpec) -> dict[str, Any] | None:
    path = emulator_dir(spec) / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def installed(spec: EmulatorSpec) -> dict[str, Any] | None:
    """The manifest of a complete root built from ``spec``, or None."""
    m = _manifest(spec)
    if m is None or m.get("spec") != spec.spec_key():
        return None
    root = emulator_dir(spec) / "root"
    if not (root / spec.python.lstrip("/")).exists():
        return None
    return m


def require(spec: EmulatorSpec, runtime: str) -> Path:
    """The root of a set-up emulator, after checking qemu; the errors name the command to run."""
    find_qemu(spec)
    if installed(spec) is None:
        stale = _manifest(spec) is not None
        why = "was set up by another edgeq version" if stale else "is not set up"
        raise EmulatorMissing(
            f"runtime {runtime} needs the {spec.name} emulator, which {why}; run: edgeq emulator setup {spec.name} "
            f"(once, about 55 MB; or add --setup-emulator to this build)"
        )
    return emulator_dir(spec) / "root"


def _du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.lstat(p).st_size
    return total


def setup(spec: EmulatorSpec, *, mirror: str = DEFAULT_MIRROR, keyring: Path = DEFAULT_KEYRING, force: bool = False,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Provision the root (network: the Debian mirror and pip's index); idempotent.

    Everything is built in a temporary folder beside the final one and renamed into place, so an
    interrupted set-up leaves no half root behind. Returns the manifest; ``manifest["fetched"]``
    is False when the root was already there.
    """
    from edgeq.emulator.debian import extract_deb, fetch, resolve, signed_index, temp_dir

    qemu = find_qemu(spec)
    current = installed(spec)
    if current is not None and not force:
        return {**current, "fetched": False}
    final = emulator_dir(spec)
    t0 = time.monotonic()
    work = temp_dir(final.parent, f".{spec.name}-setup-")
    try:
        root = work / "root"
        root.mkdir()
        downloads = work / "downloads"
        downloads.mkdir()
        mirror = mirror.rstrip("/")
        log(f"Debian {spec.suite} {spec.debian_arch} index from {mirror} (signature checked with {keyring})")
        index, fetched = signed_index(mirror, spec.suite, "main", spec.debian_arch, keyring, downloads)
        chosen = resolve(index, spec.packages)
        log(f"{len(chosen)} packages for {', '.join(spec.packages)} and their dependencies")
        packages = []
        for p in chosen:
            deb = downloads / PurePosixPath(p.filename).name
            fetched += fetch(f"{mirror}/{p.filename}", deb, sha256=p.sha256, size=p.size)
            extract_deb(deb, root)
            packages.append({"name": p.name, "version": p.version, "bytes": p.size, "sha256": p.sha256})
            deb.unlink()
        log(f"aarch64 wheels: {', '.join(w.requirement for w in spec.wheels)} (pip download)")
        wheels = _fetch_wheels(spec, downloads)
        site = root / GUEST_SITE.lstrip("/")
        site.mkdir(parents=True)
        for _, path in wheels:
            fetched += path.stat().st_size
            _unpack_wheel(path, site)
        manifest = {
            "emulator": spec.name, "spec": spec.spec_key(), "suite": spec.suite, "mirror": mirror,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "packages": packages,
            "wheels": [{"requirement": w.requirement, "file": w.filename, "sha256": w.sha256} for w, _ in wheels],
            "bytes_fetched": fetched,
        }
        shutil.rmtree(downloads)
        versions = _smoke_test(spec, qemu, root)
        manifest["guest"] = versions
        manifest["bytes_installed"] = _du(root)
        manifest["setup_seconds"] = round(time.monotonic() - t0, 1)
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        old = None
        if final.exists():
            old = final.with_name(f".{spec.name}-old-{os.getpid()}")
            final.rename(old)
        work.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return {**manifest, "fetched": True}


def _fetch_wheels(spec: EmulatorSpec, dest: Path) -> list[tuple[Wheel, Path]]:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311", "--dest", str(dest)]
    for plat in spec.pip_platforms:
        cmd += ["--platform", plat]
    cmd += [w.requirement for w in spec.wheels]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EmulatorSetupError(f"pip could not download the aarch64 wheels ({last}); check pip's index and network")
    out = []
    for w in spec.wheels:
        path = dest / w.filename
        if not path.is_file():
            raise EmulatorSetupError(f"pip did not fetch {w.filename} for {w.requirement}; check pip's index")
        digest = sha256_file(path)
        if digest != w.sha256:
            raise EmulatorSetupError(f"{w.filename} has SHA256 {digest}, edgeq expects {w.sha256}; refusing it")
        out.append((w, path))
    return out



def _unpack_wheel(path: Path, site: Path) -> None:
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            parts = PurePosixPath(info.filename).parts
            if info.filename.startswith("/") or ".." in parts:
                raise EmulatorSetupError(f"{path.name}: refusing member {info.filename!r}")
        z.extractall(site)


def profile_root(root: Path, profile: CpuProfile, where: Path) -> Path:
    """A root for one CPU profile: the shared tree through symlinks, plus its own /proc/cpuinfo."""
    proot = where / f"root-{profile.name}"
    (proot / "proc").mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        if entry.name != "proc" and not (proot / entry.name).exists():
            (proot / entry.name).symlink_to(entry.resolve())
    (proot / "proc" / "cpuinfo").write_text(cpuinfo_text(profile, _host_cpus()), encoding="ascii")
    return proot


def _host_cpus() -> int:
    """How many CPUs /sys says are possible: the guest reads /sys from the host, so cpuinfo agrees."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
        return max(int(part.split("-")[-1]) for part in text.split(",")) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


def guest_command(spec: EmulatorSpec, qemu: Path, root: Path, profile: CpuProfile, argv: list[str]) -> list[str]:
    """The host command that runs the guest's Python with ``argv`` on ``profile``."""
    return [str(qemu), "-cpu", profile.qemu_cpu, "-L", str(root), str(root / spec.python.lstrip("/")), *argv]


def guest_env() -> dict[str, str]:
    """A minimal environment: nothing of the host's Python setup leaks into the guest's."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": GUEST_SITE, "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/nonexistent"}


# Every module the worker (and the edgeq files it loads) imports: the smoke test imports them with
# bytecode writing on, so that their .pyc files are in the root. Under qemu, compiling them cost
# about 8 s at every start of a worker (11.3 s of host wall time on the tiny test model, 3.5 s now).
GUEST_IMPORTS = ("__future__", "collections.abc", "dataclasses", "importlib.metadata", "importlib.util", "json", "os",
                 "platform", "struct", "sys", "time", "traceback", "typing", "numpy", "ai_edge_litert",
                 "ai_edge_litert.interpreter")
SMOKE = (f"import {', '.join(GUEST_IMPORTS)}\n"
         "from importlib.metadata import version\n"
         "print(json.dumps({'python': platform.python_version(), 'machine': platform.machine(), "
         "'numpy': numpy.__version__, 'litert': version('ai-edge-litert')}))")


def _smoke_test(spec: EmulatorSpec, qemu: Path, root: Path) -> dict[str, Any]:
    """Run the guest's Python once: the root must import numpy and LiteRT. Bytecode writing is on for
    this run only: the modules it imports (GUEST_IMPORTS) are compiled into the root's __pycache__
    folders by the guest's own interpreter. Builds run with it off (guest_env), reading them."""
    import tempfile

    prof = PROFILES["cortex-a53"]
    with tempfile.TemporaryDirectory(prefix="edgeq-smoke-") as tmp:
        proot = profile_root(root, prof, Path(tmp))
        env = {k: v for k, v in guest_env().items() if k != "PYTHONDONTWRITEBYTECODE"}
        # The site folder by its host path: qemu maps /opt/edgeq/site into the root only for files that
        # exist, so __pycache__ folders made there would be made on the host's /opt instead.
        env["PYTHONPATH"] = str(root / GUEST_SITE.lstrip("/"))
        proc = subprocess.run(guest_command(spec, qemu, proot, prof, ["-c", SMOKE]), capture_output=True, text=True,
                              env=env, timeout=300)
    if proc.returncode != 0:
        raise EmulatorSetupError(f"the {spec.name} root does not run: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def status(spec: EmulatorSpec) -> dict[str, Any]:
    """What is installed, for `edgeq emulator status`."""
    out: dict[str, Any] = {"emulator": spec.name, "path": str(emulator_dir(spec))}
    try:
        qemu = find_qemu(spec)
        first = subprocess.run([str(qemu), "--version"], capture_output=True, text=True).stdout.splitlines()
        out["qemu"] = {"path": str(qemu), "version": first[0] if first else "?"}
    except QemuMissing as e:
        out["qemu"] = {"missing": str(e)}
    m = installed(spec)
    out["installed"] = m is not None
    if m is not None:
        out.update({k: m[k] for k in ("created", "suite", "guest", "bytes_installed", "bytes_fetched", "mirror")})
        out["packages"] = len(m["packages"])
        out["wheels"] = [w["requirement"] for w in m["wheels"]]
    elif _manifest(spec) is not None:
        out["stale"] = True
    out["profiles"] = {p.name: p.description for p in PROFILES.values()}
    return out
