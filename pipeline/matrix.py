"""``edgeq matrix MODELS_DIR``: the build matrix a CI system fans out, one job per model and target.

Every folder right under MODELS_DIR that holds an edgeq.toml is a model (its edgeq.toml read and
checked, as ``edgeq build`` would, so that a broken folder fails the matrix job and not twenty build
jobs). Each entry has the model's name, its folder, the target and a content hash: the SHA-256 over
every file of the folder (relative path, size and the file's own SHA-256, in path order; symlinks
are not followed), which a CI cache can key on. Printed as GitHub Actions' matrix form,
``{"include": [...]}``; GitLab's ``parallel:matrix`` and other systems read the same list.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from edgeq.config import CONFIG_FILE, load_model_spec, load_target
from edgeq.errors import ConfigError
from edgeq.hashing import sha256_file
from edgeq.inputs.shown import shown

__all__ = ["MAX_FILES", "content_hash", "matrix_json", "model_matrix"]

MAX_FILES = 100_000  # files in one model folder, at most


def content_hash(folder: Path) -> str:
    """SHA-256 over every regular file under ``folder``: its path relative to the folder, its size and
    its SHA-256, in path order. Symlinks are neither followed nor hashed, nor are __pycache__ folders."""
    entries = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")  # Python's own cache: not the model's content
        for name in files:
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                continue
            entries.append(path)
            if len(entries) > MAX_FILES:
                raise ConfigError(f"{shown(str(folder))}: over {MAX_FILES} files; a model folder holds a model and its data")
    h = hashlib.sha256()
    for path in sorted(entries, key=lambda p: p.relative_to(folder).as_posix()):
        rel = path.relative_to(folder).as_posix()
        h.update(f"{rel}\0{path.stat().st_size}\0{sha256_file(path, follow=False)}\n".encode())
    return h.hexdigest()


def model_matrix(models_dir: Path, targets: list[str]) -> dict[str, Any]:
    """``{"include": [{"model", "path", "target", "hash"}, ...]}`` for every model folder right under
    ``models_dir`` and every target (each checked: a typo fails here, in one line)."""
    if not models_dir.is_dir():
        raise ConfigError(f"{shown(str(models_dir))}: no such folder; give the folder that holds the model folders")
    names = [load_target(t).name for t in targets]
    include = []
    for child in sorted(models_dir.iterdir()):
        if child.is_symlink() or not child.is_dir() or not (child / CONFIG_FILE).is_file():
            continue
        spec = load_model_spec(child)
        digest = content_hash(child)
        for target, name in zip(targets, names, strict=True):
            include.append({"model": spec.name, "path": child.as_posix(), "target": target, "target_name": name,
                            "hash": digest})
    if not include:
        raise ConfigError(f"{shown(str(models_dir))}: no folder in it holds an {CONFIG_FILE}; each model is a folder "
                          "with its edgeq.toml")
    return {"include": include}


def matrix_json(models_dir: Path, targets: list[str]) -> str:
    """The matrix as one line of JSON (what a CI step writes to its outputs)."""
    return json.dumps(model_matrix(models_dir, targets), separators=(",", ":"))
