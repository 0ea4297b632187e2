"""The target spec: targets/*.toml (what a device runs, its I/O dtypes, runtimes and default gates).

Plain data: the runtime names are checked against what edgeq knows by edgeq.runtimes.with_runtimes.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from edgeq.config.model import IO_DTYPES
from edgeq.config.toml import Table, check_gate
from edgeq.errors import ConfigError
from edgeq.gates import GATES, GateLimit
from edgeq.inputs.files import load_toml
from edgeq.inputs.shown import shown
from edgeq.precisions import PRECISIONS, SELECTORS, precision

__all__ = ["TargetSpec", "available_targets", "is_target_file", "load_target"]

_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\.tflite")  # a bundle's model file name


@dataclass(frozen=True)
class TargetSpec:
    """An edge target (targets/<name>.toml): what to ship, how to validate it, which gates apply."""

    name: str
    description: str
    format: str
    precision: str
    io_dtype: str
    io_dtypes: tuple[str, ...]
    runtimes: tuple[str, ...]
    gates: dict[str, float]
    model_file: str
    threads: int = 1
    precisions: tuple[str, ...] = ("int8",)  # the rungs it may ship (aliases, edgeq.precisions); precision: the default
    c_array: bool = False  # the bundle also holds the model as a C array (model_data.cc / .h), for firmware

    def __post_init__(self) -> None:
        if self.io_dtype not in self.io_dtypes:
            raise ConfigError(
                f"target '{self.name}': io_dtype '{self.io_dtype}' is not supported; "
                f"choose one of: {', '.join(self.io_dtypes)}"
            )
        if not 1 <= self.threads <= 64:
            raise ConfigError(f"target '{shown(self.name)}': threads must be 1 to 64, got {self.threads}")
        if self.precision not in self.precisions:
            raise ConfigError(f"target '{self.name}': precision '{self.precision}' is not among its precisions "
                              f"({', '.join(self.precisions)})")

    def with_precision(self, asked: str | None) -> TargetSpec:
        """The target shipping the rung ``asked`` (an alias or full name; None: its default); ConfigError
        naming the choices when the target does not allow it. "auto" / "all" are resolved by the build."""
        if asked is None:
            return self
        try:
            alias = precision(asked).alias
        except KeyError:
            raise ConfigError(f"unknown precision '{shown(asked)}'; choose one of: "
                              f"{', '.join((*self.precisions, *SELECTORS))} (see `edgeq precisions`)") from None
        if alias not in self.precisions:
            raise ConfigError(f"target '{self.name}' does not ship precision '{alias}'; choose one of: "
                              f"{', '.join((*self.precisions, *SELECTORS))}")
        return replace(self, precision=alias)

    def with_io_dtype(self, io_dtype: str | None) -> TargetSpec:
        """The target with ``io_dtype`` as its I/O dtype (unchanged when None)."""
        return self if io_dtype is None else replace(self, io_dtype=io_dtype)

    def gate_limits(self, model_gates: dict[str, float], cli_gates: dict[str, float]) -> list[GateLimit]:
        """The gates in force: target defaults, then edgeq.toml, then the command line."""
        limits = {k: GateLimit(k, v, "target") for k, v in self.gates.items()}
        for source, overrides in (("edgeq.toml", model_gates), ("command line", cli_gates)):
            for k, v in overrides.items():
                limits[k] = GateLimit(k, v, source)
        return [limits[k] for k in GATES if k in limits]


def _names(items: list[Any], where: str) -> tuple[str, ...]:
    """A list of names (runtimes are checked against what edgeq knows by edgeq.runtimes.with_runtimes)."""
    if not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{where}: every entry must be a string")
    return tuple(items)


def _precisions(items: list[Any], where: str) -> tuple[str, ...]:
    """The rungs a target allows: known aliases, none twice."""
    names = _names(items, f"{where}: precisions")
    known = [p.alias for p in PRECISIONS]
    for n in names:
        if n not in known:
            raise ConfigError(f"{where}: precisions: unknown precision '{shown(n)}'; choose from {', '.join(known)}")
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"{where}: precisions must name each rung once, at least one")
    return names


def _target_files() -> dict[str, Any]:
    pkg = resources.files("edgeq.targets")
    return {p.name[: -len(".toml")]: p for p in pkg.iterdir() if p.name.endswith(".toml")}


def available_targets() -> list[TargetSpec]:
    """Every target edgeq ships, by name."""
    return [load_target(n) for n in sorted(_target_files())]


def is_target_file(name: str) -> bool:
    """Whether ``--target`` names a target file (a path ending in .toml) rather than a built-in target."""
    return name.endswith(".toml") or "/" in name or os.sep in name


def load_target(name: str) -> TargetSpec:
    """The built-in target of that name (targets/<name>.toml), or the target file ``name`` names (a
    path ending in .toml: a board a user describes), read and checked alike."""
    if is_target_file(name):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"--target {shown(name)}: no such target file; give a .toml file or one of: "
                              f"{', '.join(sorted(_target_files()))}")
        raw = load_toml(path, f"target file {shown(name)}")
        return _parse(raw, f"target file {shown(name)}", path.stem)
    files = _target_files()
    if name not in files:
        raise ConfigError(f"unknown target '{shown(name)}'; available targets: {', '.join(sorted(files))} (see `edgeq targets`), "
                          "or a target file path/to/board.toml")
    where = f"targets/{name}.toml"
    try:
        raw = tomllib.loads(files[name].read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from e
    return _parse(raw, where, name)


def _parse(raw: dict[str, Any], where: str, name: str) -> TargetSpec:
    """A target's TOML, every key checked; its ``name`` must be the file's name."""
    t = Table(raw, "", where)
    g = t.table("gates", {})
    gates = {k: check_gate(k, v, f"{where}: [gates]") for k, v in g.data.items()}
    g.used.update(g.data)
    b = t.table("bundle")
    spec = TargetSpec(
        name=t.get("name", str),
        description=t.get("description", str),
        format=t.get("format", str, choices=("tflite",)),
        precision=t.get("precision", str, choices=tuple(p.alias for p in PRECISIONS)),
        precisions=_precisions(t.get("precisions", list, ["int8"]), where),
        io_dtype=t.get("io_dtype", str, choices=IO_DTYPES),
        io_dtypes=tuple(t.get("io_dtypes", list)),
        runtimes=_names(t.get("runtimes", list), f"{where}: runtimes"),
        threads=t.get("threads", int, 1),
        gates=gates,
        model_file=b.get("model_file", str),
        c_array=b.get("c_array", bool, False),
    )
    b.finish()
    t.finish()
    if spec.name != name:
        raise ConfigError(f"{where}: name = '{shown(spec.name)}' does not match the file name '{shown(name)}'")
    if not _PLAIN.fullmatch(spec.model_file):
        raise ConfigError(f"{where}: [bundle] model_file must be a plain file name ending in .tflite, e.g. model.tflite")
    return spec
