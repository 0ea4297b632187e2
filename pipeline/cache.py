"""The stage cache: what a stage made, kept under a key of everything that decides it.

An entry is a folder under ``stages/`` in edgeq's cache folder (``EDGEQ_CACHE_DIR``, else
``$XDG_CACHE_HOME/edgeq``, else ~/.cache/edgeq)::

    stages/<kind>/<key>/entry.json   the data (a stage's result and artifacts, or a measurement),
                                     the seconds it took, every file's SHA-256 and size, a checksum
    stages/<kind>/<key>/files/...    the files a stage wrote into the build folder, at their paths

``kind`` is a stage (export, quantize, convert, precision) or one of validate's measurements
(check, latency, attribution, attribution_tflite), whose entries hold data only. A key is the
SHA-256 of everything that decides the entry: this edgeq's own source files and the versions of
the libraries it uses (``fingerprint``), and what the caller names (the model folder's files, the
parsed edgeq.toml without its gates, the data's hashes, the target, the artifacts' hashes ...).

Every file is checked against its SHA-256 before it is used: an entry whose bytes changed is
removed and its stage runs again (the checksum finds corruption; it is no signature, and the
cache is as trusted as the home folder it lives in). Entries are written into a temporary folder
and renamed into place, so a build that is killed or runs beside another never leaves half an
entry. The least recently used entries go once the cache holds more than ``EDGEQ_CACHE_MAX_BYTES``
(default 5 GiB). Data passes through JSON both when it is stored and when it is not, so a build
that reuses an entry sees exactly what the build that made it saw.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from edgeq import __version__
from edgeq.emulator import cache_dir
from edgeq.hashing import sha256_file, tree_sha256

__all__ = ["OFF_ENV", "Hit", "StageCache", "canonical", "default_root", "digest", "fingerprint", "memo", "roundtrip"]

OFF_ENV = "EDGEQ_NO_CACHE"  # set (to anything but "" or "0"): builds use no cache, as with --no-cache
MAX_BYTES_ENV = "EDGEQ_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 5 << 30
ENTRY = "entry.json"
FILES = "files"
MAX_ENTRY_JSON = 256 << 20  # bytes of one entry.json read, at most
FORMAT = 1  # the entry layout; a new one makes every older entry a miss
STALE_TMP_SECONDS = 3600.0  # a temporary folder this old is left over from a killed build


def default_root() -> Path:
    """Where stage entries go: ``stages`` in edgeq's cache folder."""
    return cache_dir() / "stages"


def canonical(obj: Any) -> Any:
    """``obj`` as plain JSON values: dataclasses as dicts, paths as strings, tuples and sets as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(canonical(v) for v in obj)
    if isinstance(obj, Path):
        return obj.as_posix()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def digest(*parts: Any) -> str:
    """The SHA-256 of ``parts`` as canonical JSON (sorted keys)."""
    text = json.dumps(canonical(parts), sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def roundtrip(data: Any) -> Any:
    """``data`` as it reads back from JSON: what a build that reuses it will see."""
    return json.loads(json.dumps(data, allow_nan=True))


@lru_cache(maxsize=1)
def fingerprint() -> str:
    """This edgeq: its version, its source files, Python's version and every installed library it uses."""
    from importlib import metadata

    import edgeq

    names = set()
    with contextlib.suppress(metadata.PackageNotFoundError):
        for req in metadata.requires("edgeq") or []:
            name = req.split(";")[0].strip()
            for sep in "<>=!~[ (":
                name = name.split(sep)[0]
            names.add(name.lower())
    versions = {}
    for name in sorted(names | {"numpy", "torch", "tensorflow-cpu", "tf-keras", "ai-edge-litert"}):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    source = tree_sha256(Path(edgeq.__file__).parent, skip=lambda p: p.is_file() and p.suffix != ".py")
    return digest(__version__, sys.version, source, versions)


def _max_bytes() -> int:
    try:
        return max(0, int(os.environ.get(MAX_BYTES_ENV, "")))
    except ValueError:
        return DEFAULT_MAX_BYTES


@dataclasses.dataclass(frozen=True)
class Hit:
    """An entry found whole: its data, its files (relative paths) and the seconds it once took."""

    folder: Path
    data: Any
    files: tuple[str, ...]
    seconds: float


def _plain(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and "\\" not in rel and "\0" not in rel


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


class StageCache:
    """The entries under ``root``; ``notes`` says what a build should tell its user (an entry that
    changed, one that could not be stored), ``used`` the kinds it reused."""

    def __init__(self, root: Path, max_bytes: int | None = None) -> None:
        self.root = root
        self.max_bytes = _max_bytes() if max_bytes is None else max_bytes
        self.notes: list[str] = []
        self.used: list[str] = []
        self._hashes: dict[tuple[str, int, int], str] = {}

    def key(self, *parts: Any) -> str:
        """The key of an entry decided by ``parts`` (and by this edgeq, ``fingerprint``)."""
        return digest(FORMAT, fingerprint(), *parts)

    def file_sha256(self, path: Path) -> str:
        """The SHA-256 of a file or a folder's files, remembered while it keeps its size and time."""
        st = path.stat()
        memo_key = (str(path), st.st_size, st.st_mtime_ns)
        if memo_key not in self._hashes:
            self._hashes[memo_key] = tree_sha256(path) if path.is_dir() else sha256_file(path)
        return self._hashes[memo_key]

    def get(self, kind: str, key: str) -> Hit | None:
        """The entry ``kind``/``key`` if it is there and whole; a changed one is removed (a note says so)."""
        folder = self.root / kind / key
        path = folder / ENTRY
        try:
            if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_ENTRY_JSON:
                return None
            entry = json.loads(path.read_text(encoding="utf-8"))
            problem = self._damage(folder, entry, kind, key)
        except (OSError, ValueError, TypeError, KeyError) as e:
            problem = f"{ENTRY} unreadable ({type(e).__name__})"
            entry = {}
        if problem:
            self.notes.append(f"cache: the {kind} entry changed since it was stored ({problem}); {kind} runs again")
            shutil.rmtree(folder, ignore_errors=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: evicted last
        self.used.append(kind)
        return Hit(folder, entry["data"], tuple(entry["files"]), float(entry["seconds"]))

    def _damage(self, folder: Path, entry: dict[str, Any], kind: str, key: str) -> str | None:
        body = {k: entry[k] for k in ("format", "kind", "key", "data", "files", "seconds")}
        if entry.get("check") != digest(body) or body["format"] != FORMAT or (body["kind"], body["key"]) != (kind, key):
            return f"{ENTRY} does not match its checksum"
        for rel, (sha, size) in body["files"].items():
            path = folder / FILES / rel
            if not _plain(rel) or path.is_symlink() or not path.is_file():
                return f"{rel} is missing"
            if path.stat().st_size != size or sha256_file(path, follow=False) != sha:
                return f"{rel} has other bytes"
        return None

    def restore(self, hit: Hit, dest: Path) -> None:
        """Copy the entry's files into ``dest`` at their relative paths."""
        for rel in hit.files:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(hit.folder / FILES / rel, target)

    def put(self, kind: str, key: str, data: Any, seconds: float, files_root: Path | None = None,
            files: list[str] | None = None) -> None:
        """Store an entry (its files copied from ``files_root``); a failure is a note, never the build's."""
        base = self.root / kind
        tmp = base / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
        try:
            base.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            listed: dict[str, list[Any]] = {}
            for rel in sorted(files or []):
                src = (files_root or Path()) / rel
                dst = tmp / FILES / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                listed[rel] = [sha256_file(dst), dst.stat().st_size]
            body = {"format": FORMAT, "kind": kind, "key": key, "data": data, "files": listed, "seconds": seconds}
            (tmp / ENTRY).write_text(json.dumps({**body, "check": digest(body)}, allow_nan=True), encoding="utf-8")
            try:
                os.rename(tmp, base / key)
            except OSError:  # another build stored it first: theirs stays
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            self.notes.append(f"cache: the {kind} entry could not be stored ({e.strerror or e}); the build goes on")
            return
        self.evict(keep=base / key)

    def entries(self) -> list[tuple[str, Path, int, float]]:
        """(kind, folder, bytes, last used) of every entry."""
        out: list[tuple[str, Path, int, float]] = []
        if not self.root.is_dir():
            return out
        for kind_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()):
            for folder in sorted(kind_dir.iterdir()):
                if folder.name.startswith(".tmp-"):
                    with contextlib.suppress(OSError):
                        if time.time() - folder.stat().st_mtime > STALE_TMP_SECONDS:
                            shutil.rmtree(folder, ignore_errors=True)
                    continue
                with contextlib.suppress(OSError):
                    out.append((kind_dir.name, folder, _size(folder), (folder / ENTRY).stat().st_mtime))
        return out

    def evict(self, keep: Path | None = None) -> int:
        """Remove the least recently used entries until the cache holds at most ``max_bytes``; how many went."""
        entries = sorted(self.entries(), key=lambda e: e[3])
        total = sum(e[2] for e in entries)
        gone = 0
        for _, folder, size, _ in entries:
            if total <= self.max_bytes:
                break
            if folder == keep:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            gone += 1
        return gone

    def clear(self) -> tuple[int, int]:
        """Remove every entry: (entries, bytes) removed."""
        entries = self.entries()
        for kind_dir in {folder.parent for _, folder, _, _ in entries}:
            shutil.rmtree(kind_dir, ignore_errors=True)
        return len(entries), sum(e[2] for e in entries)


def memo(cache: StageCache | None, kind: str, parts: Callable[[], tuple[Any, ...]], compute: Callable[[], Any]) -> Any:
    """``compute()``'s JSON-able result, reused from the cache when ``parts()`` (and this edgeq) are the same."""
    if cache is None:
        return roundtrip(compute())
    key = cache.key(kind, *parts())
    hit = cache.get(kind, key)
    if hit is not None:
        return hit.data
    t0 = time.perf_counter()
    data = roundtrip(compute())
    cache.put(kind, key, data, time.perf_counter() - t0)
    return data
