"""``edgeq verify BUNDLE``: is this folder exactly the bundle edgeq wrote?

Every file listed in manifest.json is hashed again; a file whose bytes changed, a listed file
that is missing, and a file the manifest does not list (anything but manifest.json itself) are
each a finding. The bundle is read only: nothing is written, symlinks are not followed out of it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edgeq.bundle.layout import MANIFEST
from edgeq.errors import ConfigError
from edgeq.hashing import sha256_file
from edgeq.inputs.files import inside, load_json
from edgeq.inputs.shown import shown

__all__ = ["Finding", "verify"]

@dataclass(frozen=True)
class Finding:
    """One problem with one file of a bundle: its path, what is wrong and any detail."""

    path: str
    problem: str  # "changed", "missing", "extra", "not a regular file"
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.problem}: {self.path}" + (f" ({self.detail})" if self.detail else "")


MAX_FILES = 100_000  # entries walked in a bundle folder


def _load_manifest(bundle: Path) -> dict[str, Any]:
    if not bundle.is_dir():
        raise ConfigError(f"{shown(str(bundle))!r} is not a folder; pass the folder `edgeq build` wrote")
    path = bundle / MANIFEST
    if not os.path.lexists(path):
        raise ConfigError(f"{shown(str(bundle))!r} has no manifest.json; it is not an edgeq bundle")
    where = f"{shown(str(path))}"
    data = load_json(inside(bundle, MANIFEST, "the bundle's manifest.json"), where)
    if not isinstance(data, dict) or data.get("generator") != "edgeq" or not isinstance(data.get("files"), list):
        raise ConfigError(f"{where} was not written by edgeq (no generator/files); rebuild the bundle")
    if len(data["files"]) > MAX_FILES:
        raise ConfigError(f"{where} lists {len(data['files'])} files, more than a bundle holds; rebuild the bundle")
    for f in data["files"]:
        if not (isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
                and isinstance(f.get("bytes"), int) and not isinstance(f.get("bytes"), bool)):
            raise ConfigError(f"{where}: a files entry lacks path/sha256/bytes; the manifest is damaged, rebuild the bundle")
        p = PurePosixPath(f["path"])
        if not f["path"] or p.is_absolute() or ".." in p.parts or "\\" in f["path"] or "\0" in f["path"] \
                or f["path"] == MANIFEST:
            raise ConfigError(f"{where}: files entry {shown(f['path'])!r} points outside the bundle; the manifest is not edgeq's")
        if not p.parts:  # ".", "./": the bundle folder itself
            raise ConfigError(f"{where}: files entry {shown(f['path'])!r} names the bundle folder, not a file; "
                              "the manifest is not edgeq's")
        try:
            os.fsencode(f["path"])
        except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON): no file has that name
            raise ConfigError(f"{where}: files entry {shown(f['path'])!r} is not a file name; "
                              "the manifest is not edgeq's") from None
    return data


def _walk(bundle: Path) -> list[tuple[str, bool]]:
    """(relative path, is a real folder) of every entry under ``bundle``, symlinks not followed."""
    out: list[tuple[str, bool]] = []
    for top, dirs, files in os.walk(bundle):  # followlinks=False: a link to a folder is listed, not entered
        for name in dirs + files:
            full = Path(top) / name
            out.append((full.relative_to(bundle).as_posix(), name in dirs and not full.is_symlink()))
            if len(out) > MAX_FILES:
                raise ConfigError(f"{shown(str(bundle))!r} holds over {MAX_FILES} files; it is not an edgeq bundle")
    return out


def _check_file(bundle: Path, rel: str, entry: dict[str, Any]) -> Finding | None:
    """The finding for one listed file, or None when it is intact. Nothing outside the bundle is
    opened: a symlink on the way is a finding, and only a regular file is read."""
    path = bundle
    for part in PurePosixPath(rel).parts:
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return Finding(rel, "missing")
        except OSError as e:
            return Finding(rel, "not a regular file", e.strerror or "")
        if stat.S_ISLNK(st.st_mode):
            return Finding(rel, "not a regular file", "a symlink")
    if not stat.S_ISREG(st.st_mode):
        return Finding(rel, "not a regular file")
    if st.st_size != entry["bytes"]:
        return Finding(rel, "changed", f"{st.st_size} bytes, manifest says {entry['bytes']}")
    try:
        digest = sha256_file(path, follow=False)
    except OSError as e:
        return Finding(rel, "not a regular file", e.strerror or "")
    if digest != entry["sha256"]:
        return Finding(rel, "changed", "sha256 differs from the manifest")
    return None


def verify(bundle: Path) -> tuple[list[Finding], int]:
    """The findings (empty: the bundle is intact) and the number of files checked."""
    manifest = _load_manifest(bundle)
    findings: list[Finding] = []
    listed = {f["path"]: f for f in manifest["files"]}
    for rel, entry in sorted(listed.items()):
        finding = _check_file(bundle, rel, entry)
        if finding is not None:
            findings.append(finding)
    for rel, is_dir in sorted(_walk(bundle)):
        if rel == MANIFEST or rel in listed or is_dir:
            continue
        findings.append(Finding(rel, "extra", "not in manifest.json"))
    return findings, len(listed)
