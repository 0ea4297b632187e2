"""A user's .keras file as untrusted input: checked before Keras opens it.

A .keras file is a zip archive whose config.json names the classes to build. Keras' safe mode
refuses to deserialize Python lambdas; edgeq checks more, before any of it loads:

* the file is a zip archive with a config.json, under the 2 GB limit;
* every ``module`` named in the config is Keras' own (``keras`` or ``keras.*``): a config that
  names ``os``, ``subprocess``, ``builtins`` or any other module is refused;
* no ``Lambda`` layer, no serialized Python function (``__lambda__``), no custom object
  (``registered_name`` outside Keras): each needs Python code that would run.

``--trust-model`` lifts the last two rules for files the user trusts (Keras then loads with
``safe_mode=False``); module names outside Keras are refused always.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from edgeq.errors import ModelError
from edgeq.onnx_files import check_size

__all__ = ["check_keras_file"]

MAX_CONFIG = 64 * 2**20  # bytes of config.json


def _allowed_module(module: str) -> bool:
    return module == "keras" or module.startswith("keras.")


def check_keras_file(path: Path, trust: bool) -> None:
    """Check a .keras file by this module's rules before Keras opens it; ModelError for the first it breaks."""
    check_size(path, ".keras file", "an ONNX model and a .tflite file cannot hold it; quantize a smaller model")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path.name} is not a .keras file (not a zip archive); save the model with model.save('model.keras')")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            for n in names:
                p = PurePosixPath(n)
                if p.is_absolute() or ".." in p.parts:
                    raise ModelError(f"{path.name} holds a member {n!r} outside the archive's root; refusing it")
            if "config.json" not in names:
                raise ModelError(f"{path.name} has no config.json; it is not a Keras 3 .keras file, re-save it")
            info = z.getinfo("config.json")
            if info.file_size > MAX_CONFIG:
                raise ModelError(f"{path.name}: config.json is {info.file_size} bytes; refusing a config over 64 MB")
            config = json.loads(z.read("config.json").decode("utf-8"))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, UnicodeDecodeError) as e:
        if isinstance(e, ModelError):
            raise
        raise ModelError(f"{path.name} is not a readable .keras file ({type(e).__name__}); re-save the model") from e
    _walk(config, path.name, trust)


def _walk(node: Any, file: str, trust: bool) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, file, trust)
        return
    if not isinstance(node, dict):
        return
    module = node.get("module")
    cls = node.get("class_name")
    name = node.get("config", {}).get("name") if isinstance(node.get("config"), dict) else None
    if isinstance(module, str) and not _allowed_module(module):
        raise ModelError(
            f"{file}: config.json names '{module}.{cls}' (module '{module}'); only Keras' own classes are loaded, "
            "so this file is refused"
        )
    if not trust:
        if cls == "Lambda":
            raise ModelError(
                f"{file}: layer '{name}' is a Lambda layer, whose Python code would run when it loads; rebuild the model "
                "without Lambda layers, or pass --trust-model if you trust this file"
            )
        if cls == "__lambda__" or (isinstance(node.get("config"), dict) and "code" in node["config"] and cls == "function"):
            raise ModelError(
                f"{file}: config.json holds a serialized Python function, which would run when it loads; "
                "pass --trust-model only if you trust this file"
            )
        reg = node.get("registered_name")
        if isinstance(reg, str) and reg and not reg.startswith("keras") and reg != cls:
            raise ModelError(
                f"{file}: '{reg}' is a custom object whose Python code edgeq would have to import; "
                "pass --trust-model only if you trust this file and its code is importable"
            )
    for value in node.values():
        _walk(value, file, trust)
