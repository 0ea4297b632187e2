"""Paths that stay in their folder and reads that are bounded.

Every file and folder edgeq.toml names (model, weights, model code, labels, tokenizer, data) and
every file a bundle's model.json or manifest.json names is resolved by ``inside``:

* a relative path: not absolute, no ``..``, no drive letter;
* no symlink anywhere on the way (each component is checked with ``lstat``: a link out of the
  folder, or one that is swapped later, is never followed);
* a regular file (no /proc, /dev, FIFO or socket) or, where a folder is meant, a folder.

Files are then read by ``read_bytes``: opened with ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO does not
block; a symlink put there after the check is refused), checked to be a regular file on the open
descriptor, and read up to a cap: a file over it is refused before it is read, and one that grows
while read is refused too. Text must be UTF-8; TOML and JSON nested too deep are refused.
Each refusal raises the caller's error class (exit 2) with one line naming the key and the path.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

from edgeq.errors import ConfigError, EdgeqError
from edgeq.inputs.shown import shown

__all__ = [
    "MAX_JSON",
    "MAX_LABELS",
    "MAX_TEXT",
    "MAX_TOKENIZER",
    "MAX_TOML",
    "inside",
    "load_json",
    "load_toml",
    "read_bytes",
    "read_labels",
    "read_text",
    "regular_file",
]

MAX_TOML = 1 << 20  # edgeq.toml: 1 MiB
MAX_JSON = 64 << 20  # model.json, manifest.json
MAX_LABELS = 16 << 20  # a labels file: one class name per line
MAX_TOKENIZER = 256 << 20  # a SentencePiece .model (large multilingual ones are ~10 MB)
MAX_TEXT = 1 << 30  # source.txt / target.txt / a --file of sentences
MAX_DEPTH = 64  # nesting of tables/arrays (TOML) and objects/arrays (JSON)


def _named(what: str, path: Path) -> str:
    """``what`` naming ``path``: "labels file 'labels.txt'" (unless ``what`` already names it)."""
    return what if path.name and path.name in what else f"{what} {shown(path.name)}"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def inside(root: Path, rel: str, key: str, *, kind: str = "file", error: type[EdgeqError] = ConfigError,
           fix: str = "") -> Path:
    """``root / rel`` when ``rel`` stays inside ``root`` as a regular file (``kind="file"``), a
    folder (``"dir"``) or either (``"any"``); else ``error`` naming ``key`` and the path.
    ``root`` itself is trusted (the folder the user passed)."""
    where = f"{key} {shown(rel)!r}"
    fix = fix or f"give a path relative to {shown(root.name or str(root))}/ that stays inside it"
    if not isinstance(rel, str) or not rel.strip():
        raise error(f"{key} is empty; {fix}")
    if "\0" in rel:
        raise error(f"{where} holds a NUL character; {fix}")
    try:
        os.fsencode(rel)
    except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800"): no file can have that name
        raise error(f"{where} is not a file name (it holds a lone surrogate); {fix}") from None
    posix = rel.replace("\\", "/")
    p = PurePosixPath(posix)
    if p.is_absolute() or posix.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        raise error(f"{where} is an absolute path, outside the folder; {fix}")
    if ".." in p.parts:
        raise error(f"{where} leaves the folder ('..'); {fix}")
    path = root
    st = None
    for part in p.parts:
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise error(f"{where} does not exist; fix the path (relative to {shown(str(root))})") from None
        except OSError as e:
            raise error(f"{where} cannot be read ({e.strerror}); fix the path") from None
        if stat.S_ISLNK(st.st_mode):
            raise error(f"{where} goes through a symlink ({shown(part)}); copy the real file or folder into the folder")
    if st is None:  # rel was "." or similar: the folder itself
        st = os.lstat(path)
    if kind == "file" and not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise error(f"{where} is {what}; it must be a file")
    if kind == "dir" and not stat.S_ISDIR(st.st_mode):
        raise error(f"{where} is not a folder")
    if kind == "any" and not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise error(f"{where} is not a regular file or folder")
    return path


def regular_file(path: Path, what: str, error: type[EdgeqError] = ConfigError) -> os.stat_result:
    """``lstat`` of ``path``: a regular file, not a symlink; else ``error`` naming ``what``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise error(f"{_named(what, path)} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        raise error(f"{_named(what, path)} is a symlink; copy the real file there")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{_named(what, path)} is not a regular file")
    return st


def read_bytes(path: Path, limit: int, what: str, error: type[EdgeqError] = ConfigError) -> bytes:
    """The bytes of the regular file ``path`` (no symlink), at most ``limit`` of them."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{_named(what, path)} does not exist") from None
    except OSError as e:
        reason = "is a symlink" if e.errno == 40 else f"cannot be read ({e.strerror})"  # ELOOP: O_NOFOLLOW
        raise error(f"{_named(what, path)} {reason}; it must be a regular file") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{_named(what, path)} is not a regular file")
        if st.st_size > limit:
            raise error(f"{_named(what, path)} is {st.st_size} bytes, over the {_mib(limit)} limit")
        chunks = []
        left = limit + 1
        while left > 0:
            block = os.read(fd, min(left, 1 << 20))
            if not block:
                break
            chunks.append(block)
            left -= len(block)
        data = b"".join(chunks)
        if len(data) > limit:
            raise error(f"{_named(what, path)} grew past the {_mib(limit)} limit while read")
        return data
    finally:
        os.close(fd)


def read_text(path: Path, limit: int, what: str, error: type[EdgeqError] = ConfigError) -> str:
    """``read_bytes`` decoded as UTF-8 (a BOM is dropped); not UTF-8 -> ``error`` naming the byte."""
    data = read_bytes(path, limit, what, error)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{_named(what, path)} is not UTF-8 text ({e.reason} at byte {e.start}); "
                    "re-save it as UTF-8") from None


def read_labels(path: Path, error: type[EdgeqError] = ConfigError) -> list[str]:
    """A labels file: one class name per line, surrounding space stripped, empty lines skipped."""
    text = read_text(path, MAX_LABELS, "labels file", error)
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _depth(node: Any) -> int:
    """Nesting depth of lists/dicts, iteratively (a deep document must not exhaust the stack)."""
    deepest = 0
    stack = [(node, 1)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, d)
            stack += [(v, d + 1) for v in item.values()]
        elif isinstance(item, list):
            deepest = max(deepest, d)
            stack += [(v, d + 1) for v in item]
    return deepest


def load_toml(path: Path, what: str, error: type[EdgeqError] = ConfigError) -> dict[str, Any]:
    """A TOML file, bounded in size and nesting."""
    raw = read_bytes(path, MAX_TOML, what, error)
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise error(f"{what}: not valid TOML: not UTF-8 ({e.reason} at byte {e.start}); re-save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise error(f"{what}: not valid TOML: {e}") from None
    except ValueError:  # tomllib's int() of a number longer than Python converts
        raise error(f"{what}: not valid TOML: a number is over {sys.get_int_max_str_digits()} digits long; "
                    "edgeq.toml needs no such number") from None
    except RecursionError:
        raise error(f"{what}: tables or arrays nested too deep to read; edgeq.toml needs only a few levels") from None
    if _depth(data) > MAX_DEPTH:
        raise error(f"{what}: tables or arrays nested over {MAX_DEPTH} deep; edgeq.toml needs only a few levels")
    return data


def load_json(path: Path, what: str, error: type[EdgeqError] = ConfigError, fix: str = "rebuild the bundle") -> Any:
    """A JSON file, bounded in size and nesting; invalid JSON -> ``error`` with ``fix``."""
    text = read_text(path, MAX_JSON, what, error)
    try:
        data = json.loads(text)
    except ValueError as e:
        raise error(f"{what} is not valid JSON ({shown(str(e))}); {fix}") from None
    except RecursionError:
        raise error(f"{what} is nested too deep to be edgeq's; {fix}") from None
    if _depth(data) > MAX_DEPTH:
        raise error(f"{what} is nested over {MAX_DEPTH} deep, not edgeq's; {fix}")
    return data
