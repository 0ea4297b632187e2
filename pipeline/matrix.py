"""``edgeq matrix MODELS_DIR``: the build matrix a CI system fans out, one job per model and target.

Every folder right under MODELS_DIR that holds an edgeq.toml is a model (its edgeq.toml read and
checked, as ``edgeq build`` would, so that a broken folder fails the matrix job and not twenty build
jobs). Each entry has the model's name, its folder, the target and a content hash: the SHA-256 over
every file of the folder (relative path, size and the file's own SHA-256, in path order; symlinks
are not followed), which a CI cache can key on. Printed as GitHub Actions' matrix form,
``{"include": [...]}``; GitLab's ``parallel:matrix`` and other systems read the same list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeq.config import CONFIG_FILE, load_model_spec, load_target
from edgeq.errors import ConfigError
from edgeq.hashing import MAX_TREE_FILES, tree_sha256
from edgeq.inputs.shown import shown

__all__ = ["MAX_FILES", "content_hash", "matrix_json", "model_matrix"]

MAX_FILES = MAX_TREE_FILES  # files in one model folder, at most


def content_hash(folder: Path) -> str:
    """SHA-256 over every regular file under ``folder`` (edgeq.hashing.tree_sha256)."""
    try:
        return tree_sha256(folder)
    except ValueError:
        raise ConfigError(f"{shown(str(folder))}: over {MAX_FILES} files; a model folder holds a model and its data") from None


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
