"""``edgeq verify BUNDLE``: is this folder exactly the bundle edgeq wrote?

Every file listed in manifest.json is hashed again; a file whose bytes changed, a listed file
that is missing, and a file the manifest does not list (anything but manifest.json itself) are
each a finding. The bundle is read only: nothing is written, symlinks are not followed out of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edgeq.errors import ConfigError
from edgeq.hashing import sha256_file

__all__ = ["Finding", "verify"]

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Finding:
    path: str
    problem: str  # "changed", "missing", "extra", "not a regular file"
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.problem}: {self.path}" + (f" ({self.detail})" if self.detail else "")


def _load_manifest(bundle: Path) -> dict[str, Any]:
    if not bundle.is_dir():
        raise ConfigError(f"{str(bundle)!r} is not a folder; pass the folder `edgeq build` wrote")
    path = bundle / MANIFEST
    if not path.is_file() or path.is_symlink():
        raise ConfigError(f"{str(bundle)!r} has no manifest.json; it is not an edgeq bundle")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); the bundle is damaged, rebuild it") from e
    if not isinstance(data, dict) or data.get("generator") != "edgeq" or not isinstance(data.get("files"), list):
        raise ConfigError(f"{path} was not written by edgeq (no generator/files); rebuild the bundle")
    for f in data["files"]:
        if not (isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
                and isinstance(f.get("bytes"), int)):
            raise ConfigError(f"{path}: a files entry lacks path/sha256/bytes; the manifest is damaged, rebuild the bundle")
        p = PurePosixPath(f["path"])
        if p.is_absolute() or ".." in p.parts or f["path"] == MANIFEST:
            raise ConfigError(f"{path}: files entry {f['path']!r} points outside the bundle; the manifest is not edgeq's")
    return data


def verify(bundle: Path) -> tuple[list[Finding], int]:
    """The findings (empty: the bundle is intact) and the number of files checked."""
    manifest = _load_manifest(bundle)
    findings: list[Finding] = []
    listed = {f["path"]: f for f in manifest["files"]}
    for rel, entry in sorted(listed.items()):
        path = bundle / rel
        if path.is_symlink() or (path.exists() and not path.is_file()):
            findings.append(Finding(rel, "not a regular file"))
        elif not path.exists():
            findings.append(Finding(rel, "missing"))
        else:
            size = path.stat().st_size
            if size != entry["bytes"]:
                findings.append(Finding(rel, "changed", f"{size} bytes, manifest says {entry['bytes']}"))
            elif sha256_file(path) != entry["sha256"]:
                findings.append(Finding(rel, "changed", "sha256 differs from the manifest"))
    for path in sorted(bundle.rglob("*")):
        rel = path.relative_to(bundle).as_posix()
        if rel == MANIFEST or rel in listed or (path.is_dir() and not path.is_symlink()):
            continue
        if path.is_dir() and any(k.startswith(rel + "/") for k in listed):
            continue
        findings.append(Finding(rel, "extra", "not in manifest.json"))
    return findings, len(listed)
