"""Reading edgeq's TOML files and command-line values: one table at a time, every key checked.

``Table`` remembers which keys were read so that leftovers are errors (a typo never silently falls
back to a default); the value checks (gates, frozen input values, --input-shape, TFLite op names)
raise ``ConfigError`` with one line that names the file or option, the key and the fix.
"""

from __future__ import annotations

import sys
import tomllib
from typing import Any

from edgeq.errors import ConfigError
from edgeq.gates import GATES
from edgeq.inputs.shown import shown

__all__ = ["MAX_FROZEN_ELEMENTS", "MAX_VALUE_TEXT", "Table", "check_gate", "check_tflite_ops", "check_value",
           "parse_gate_override", "parse_input_shape", "parse_input_value"]

# A frozen input's value (edgeq.toml ``value =``, --input-value) is at most this many numbers.
MAX_FROZEN_ELEMENTS = 1 << 16
MAX_VALUE_TEXT = 1 << 20  # characters of one --input-value


def check_gate(name: str, value: Any, where: str) -> float:
    """The gate's limit as a float; ConfigError for an unknown gate or a value that is not a finite number."""
    if name not in GATES:
        raise ConfigError(
            f"{where}: unknown gate '{shown(name)}'; known gates: {', '.join(GATES)}"
        )
    # abs(...) <= float max: not NaN or inf, nor an integer too large for a float (10**400)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) <= sys.float_info.max:
        raise ConfigError(f"{where}: gate '{shown(name)}' must be a finite number, got {value!r}")
    return float(value)


def parse_gate_override(text: str) -> tuple[str, float]:
    """Parse a command-line ``NAME=VALUE`` gate override."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep:
        raise ConfigError(f"--gate {text!r}: expected NAME=VALUE, for example --gate accuracy_drop=0.5")
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"--gate {text!r}: {raw!r} is not a number") from None
    return name, check_gate(name, value, "--gate")


_KIND_NAMES = {int: "a number", float: "a number", str: "a string", bool: "true or false", list: "a list",
               dict: "a table"}


class Table:
    """Reads one TOML table, remembering which keys were used so that leftovers are errors."""

    def __init__(self, data: Any, where: str, file: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: {where} must be a table")
        self.data = data
        self.where = where
        self.file = file
        self.used: set[str] = set()

    def _loc(self, key: str) -> str:
        if not self.where:
            return f"{self.file}: {key}"
        section = self.where if "[" in self.where else f"[{self.where}]"
        return f"{self.file}: {section}.{key}"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, choices: tuple[str, ...] | None = None) -> Any:
        """The value of ``key``, checked against ``kind`` (and ``choices``); ``default`` when missing, if given."""
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                section = f"[{self.where}]" if self.where else "the top level"
                raise ConfigError(f"{self.file}: missing required key '{key}' in {section}")
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise ConfigError(f"{self._loc(key)} must be a number, got {value!r}")
        if kind is int and isinstance(value, float):
            raise ConfigError(f"{self._loc(key)} must be a whole number, got {value!r}")
        if not isinstance(value, kind):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            names = " or ".join(dict.fromkeys(_KIND_NAMES.get(k, k.__name__) for k in kinds))
            raise ConfigError(f"{self._loc(key)} must be {names}, got {value!r}")
        if choices is not None and value not in choices:
            raise ConfigError(f"{self._loc(key)} is {value!r}; expected one of: {', '.join(choices)}")
        return value

    def table(self, key: str, default: Any = ...) -> Table:
        """The sub-table ``key`` as a Table (an empty one for a None default)."""
        sub = self.get(key, dict, default)
        where = f"{self.where}.{key}" if self.where else key
        return Table(sub if sub is not None else {}, where, self.file)

    def finish(self) -> None:
        """ConfigError if the table holds a key that was never read."""
        extra = sorted(set(self.data) - self.used)
        if extra:
            section = f"[{self.where}]" if self.where else "the top level"
            known = ", ".join(sorted(self.used)) or "none"
            raise ConfigError(f"{self.file}: unknown key '{shown(extra[0])}' in {section}; known keys: {known}")


def check_value(name: str, value: Any, where: str) -> Any:
    """A frozen input's value: a number, true/false, or a rectangular nested list of them."""
    import numpy as np

    def count(v: Any, depth: int = 0) -> int:
        if depth > 8:
            raise ConfigError(f"{where}: the value of input '{shown(name)}' is nested more than 8 lists deep")
        if isinstance(v, list):
            return sum(count(x, depth + 1) for x in v)
        if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**64:
            raise ConfigError(f"{where}: the value of input '{shown(name)}' holds {v}, which does not fit in 64 bits")
        if isinstance(v, (bool, int, float)):
            return 1
        raise ConfigError(f"{where}: the value of input '{shown(name)}' must be numbers (or true/false), got {v!r}")

    if count(value) > MAX_FROZEN_ELEMENTS:
        raise ConfigError(f"{where}: the value of input '{shown(name)}' has more than {MAX_FROZEN_ELEMENTS} numbers; "
                          "feed an input that large from the data instead")
    try:
        arr = np.array(value)
    except ValueError:
        arr = np.array([], dtype=object)
    if arr.dtype == object or (arr.size == 0 and isinstance(value, list)):
        raise ConfigError(f"{where}: the value of input '{shown(name)}' must be a number or a rectangular list of numbers, "
                          f"got {value!r}")
    return value


def parse_input_value(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` (--input-value): VALUE is a TOML value, a number or a list (``sr=16000``, ``mask=[1, 0]``)."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"] if sep and name and len(raw) <= MAX_VALUE_TEXT else None
    except (ValueError, RecursionError):  # TOMLDecodeError, or a number over Python's digit limit
        value = None
    if value is None or isinstance(value, (str, dict)):
        raise ConfigError(f"--input-value {shown(text)!r}: write NAME=VALUE with a number or a list, e.g. sr=16000")
    return name, check_value(name, value, "--input-value")


def check_tflite_ops(names: list[Any], where: str) -> tuple[str, ...]:
    """TFLite builtin op names (``SIN``, ``CUMSUM``), upper-cased; ConfigError for anything else."""
    if not names:
        return ()
    from ai_edge_litert import schema_py_generated as fb

    known = {k for k in vars(fb.BuiltinOperator) if not k.startswith("_")}
    out: list[str] = []
    for name in names:
        op = name.strip().upper() if isinstance(name, str) else ""
        if op not in known:
            raise ConfigError(
                f"{where}: {name!r} is not a TFLite builtin op name (e.g. SIN, CUMSUM, as the error listing them says)"
            )
        out.append(op)
    return tuple(dict.fromkeys(out))


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME=1,3,320,320`` (--input-shape) -> (NAME, (1, 3, 320, 320))."""
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name.strip() or not shape or any(d <= 0 for d in shape):
        raise ConfigError(f"--input-shape {text!r}: write NAME=D1,D2,... with positive sizes, e.g. image=1,3,224,224")
    return name.strip(), shape
