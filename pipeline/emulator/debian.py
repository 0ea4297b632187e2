"""A minimal Debian file tree for another architecture, fetched and unpacked without running it.

What ``apt-get download`` + ``dpkg -x`` would do, in Python and without root: read the suite's
signed ``InRelease`` (checked with ``gpgv`` against Debian's archive keyring), the architecture's
``Packages`` index (checked against the SHA256 the signed file lists), resolve the dependencies of
the packages asked for, download each .deb (checked against the index's SHA256) and unpack its
data archive. No maintainer script runs - they would be code of the other architecture.

Unpacking is confined to the root: member paths with ``..`` or that resolve outside it are
refused, absolute symlink targets are rewritten to point inside the root, devices are skipped.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgeq.errors import EdgeqError

__all__ = ["DebianError", "Package", "extract_deb", "fetch", "parse_packages", "resolve", "signed_index"]

TIMEOUT = 60.0


class DebianError(EdgeqError):
    """The Debian mirror could not be read, or what it served failed a check."""


@dataclass(frozen=True)
class Package:
    """One package of a Debian index: name, version, file, size, SHA256, dependencies and what it provides."""

    name: str
    version: str
    filename: str  # path under the mirror
    size: int
    sha256: str
    depends: tuple[tuple[str, ...], ...]  # Pre-Depends + Depends: each a list of alternatives
    provides: tuple[str, ...]


def fetch(url: str, dest: Path, *, sha256: str | None = None, size: int | None = None) -> int:
    """Download ``url`` to ``dest``; check its size and SHA256 when given. Returns the bytes written."""
    h = hashlib.sha256()
    n = 0
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                h.update(chunk)
                f.write(chunk)
                n += len(chunk)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DebianError(f"cannot download {url}: {e}; check the network or pass another --mirror") from e
    if (size is not None and n != size) or (sha256 is not None and h.hexdigest() != sha256):
        tmp.unlink(missing_ok=True)
        raise DebianError(
            f"{url} does not match the signed index (size or SHA256); the mirror may be stale: try another --mirror"
        )
    tmp.replace(dest)
    return n


def signed_index(mirror: str, suite: str, component: str, arch: str, keyring: Path, work: Path) -> tuple[list[Package], int]:
    """The suite's package index for ``arch``, verified: InRelease signature, then the index's SHA256."""
    if shutil.which("gpgv") is None:
        raise DebianError("gpgv is needed to check the Debian archive's signature; install it: sudo apt-get install gpgv")
    if not keyring.is_file():
        raise DebianError(
            f"Debian's archive keyring {keyring} is missing; install it: sudo apt-get install debian-archive-keyring"
        )
    fetched = fetch(f"{mirror}/dists/{suite}/InRelease", work / "InRelease")
    verified = work / "Release"
    proc = subprocess.run(["gpgv", "--keyring", str(keyring), "--output", str(verified), str(work / "InRelease")],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise DebianError(f"{mirror}/dists/{suite}/InRelease: bad or unknown signature ({proc.stderr.strip().splitlines()[-1:]})")
    wanted = f"{component}/binary-{arch}/Packages.xz"
    sha = size = None
    section = None
    for line in verified.read_text(encoding="utf-8").splitlines():
        if not line.startswith(" "):
            section = line.rstrip(":")
            continue
        parts = line.split()
        if section == "SHA256" and len(parts) == 3 and parts[2] == wanted:
            sha, size = parts[0], int(parts[1])
    if sha is None:
        raise DebianError(f"{mirror}/dists/{suite}/InRelease lists no {wanted}; is '{arch}' built for {suite}?")
    fetched += fetch(f"{mirror}/dists/{suite}/{wanted}", work / "Packages.xz", sha256=sha, size=size)
    text = lzma.decompress((work / "Packages.xz").read_bytes()).decode("utf-8")
    return parse_packages(text), fetched


def _relations(value: str) -> tuple[tuple[str, ...], ...]:
    out = []
    for group in value.split(","):
        alts = tuple(a.strip().split(" ")[0].split(":")[0] for a in group.split("|") if a.strip())
        if alts:
            out.append(alts)
    return tuple(out)


def parse_packages(text: str) -> list[Package]:
    """A Debian ``Packages`` file -> one Package per stanza (continuation lines are skipped)."""
    out = []
    for stanza in text.split("\n\n"):
        f: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            k, _, v = line.partition(":")
            f[k] = v.strip()
        if "Package" not in f:
            continue
        deps = _relations(f.get("Pre-Depends", "")) + _relations(f.get("Depends", ""))
        provides = tuple(a[0] for a in _relations(f.get("Provides", "")))
        out.append(Package(f["Package"], f.get("Version", ""), f.get("Filename", ""), int(f.get("Size", "0")),
                           f.get("SHA256", ""), deps, provides))
    return out


def resolve(index: Iterable[Package], wanted: Iterable[str]) -> list[Package]:
    """``wanted`` and everything they depend on; for alternatives, one already chosen or the first
    that exists (a virtual package: its first provider). Sorted by name."""
    by_name: dict[str, Package] = {}
    providers: dict[str, list[str]] = {}
    for p in index:
        by_name.setdefault(p.name, p)
        for v in p.provides:
            providers.setdefault(v, []).append(p.name)

    def real(name: str) -> str | None:
        if name in by_name:
            return name
        found = providers.get(name)
        return found[0] if found else None

    chosen: dict[str, Package] = {}
    stack = list(wanted)
    while stack:
        name = stack.pop()
        actual = real(name)
        if actual is None:
            raise DebianError(f"package '{name}' is not in the index")
        if actual in chosen:
            continue
        pkg = chosen[actual] = by_name[actual]
        for alts in pkg.depends:
            if any(real(a) in chosen for a in alts):
                continue
            pick = next((a for a in alts if real(a) is not None), None)
            if pick is None:
                raise DebianError(f"'{pkg.name}' depends on {' | '.join(alts)}, which the index does not have")
            stack.append(pick)
    return [chosen[k] for k in sorted(chosen)]


def _ar_members(data: bytes) -> dict[str, bytes]:
    if not data.startswith(b"!<arch>\n"):
        raise DebianError("not a .deb (no ar header)")
    out, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        out[name] = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    return out


def extract_deb(deb: Path, root: Path, log: Callable[[str], None] | None = None) -> None:
    """Unpack a .deb's data archive into ``root`` (what ``dpkg -x`` does), confined to ``root``."""
    members = _ar_members(deb.read_bytes())
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise DebianError(f"{deb.name}: no data.tar member")
    if data_name.endswith(".zst"):
        raise DebianError(f"{deb.name}: zstd-compressed data is not supported")
    root = root.resolve()
    with tarfile.open(fileobj=io.BytesIO(members[data_name]), mode="r:*") as tar:
        for m in tar.getmembers():
            _extract_member(tar, m, root)


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _extract_member(tar: tarfile.TarFile, m: tarfile.TarInfo, root: Path) -> None:
    rel = PurePosixPath(m.name)
    parts = [p for p in rel.parts if p not in (".", "/")]
    if rel.is_absolute() or ".." in parts:
        raise DebianError(f"refusing archive member {m.name!r}: it points outside the root")
    if not parts:
        return
    dest = root.joinpath(*parts)
    parent = Path(os.path.realpath(dest.parent)) if dest.parent.exists() else dest.parent
    if not _inside(root, parent):
        raise DebianError(f"refusing archive member {m.name!r}: its folder resolves outside the root")
    if m.isdir():
        dest.mkdir(parents=True, exist_ok=True)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    if m.issym():
        target = m.linkname
        if target.startswith("/"):  # absolute inside the guest: make it relative to stay in the root
            target = os.path.relpath(root.joinpath(target.lstrip("/")), dest.parent)
        elif not _inside(root, Path(os.path.normpath(dest.parent / target))):
            raise DebianError(f"refusing symlink {m.name!r} -> {m.linkname!r}: it points outside the root")
        os.symlink(target, dest)
    elif m.islnk():
        src = root.joinpath(*[p for p in PurePosixPath(m.linkname).parts if p not in (".", "/")])
        if ".." in PurePosixPath(m.linkname).parts or not _inside(root, src):
            raise DebianError(f"refusing hard link {m.name!r} -> {m.linkname!r}: it points outside the root")
        os.link(src, dest)
    elif m.isfile():
        f = tar.extractfile(m)
        assert f is not None
        with open(dest, "wb") as out:
            shutil.copyfileobj(f, out)
        os.chmod(dest, m.mode & 0o755)
    # character/block devices and fifos are not needed by a user-mode guest: skipped


def temp_dir(parent: Path, prefix: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
