"""Build configuration: ``ModelSpec`` (a model dir's edgeq.toml) and ``TargetSpec`` (targets/*.toml).

Both are frozen dataclasses, validated when they are built: a wrong or missing value raises
``ConfigError`` with one line that names the file, the key and the fix. Unknown keys are errors
too, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from edgeq.errors import ConfigError, ModelError

__all__ = [
    "CONFIG_FILE",
    "GATE_DEFINITIONS",
    "DataSpec",
    "GateLimit",
    "InputSpec",
    "ModelSpec",
    "OutputSpec",
    "QuantSpec",
    "TargetSpec",
    "TaskSpec",
    "available_targets",
    "load_model_spec",
    "load_target",
    "parse_gate_override",
]

CONFIG_FILE = "edgeq.toml"

MODEL_FORMATS = ("pytorch", "onnx")
INPUT_DTYPES = ("float32",)
TASK_KINDS = ("classification", "generic")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
IO_DTYPES = ("float32", "int8")
# Channels-first, PyTorch's convention; a layout ending in C declares a channels-last input.
_DEFAULT_LAYOUTS = {1: "N", 2: "NC", 3: "NCW", 4: "NCHW", 5: "NCDHW"}

# Every gate edgeq knows: name -> (comparison, unit, what it measures). A gate passes when
# ``value <= limit`` for "max" gates and ``value >= limit`` for "min" gates.
GATE_DEFINITIONS: dict[str, tuple[str, str, str]] = {
    "accuracy_drop": ("max", "points", "top-1 accuracy of the float reference minus the artifact's, in percentage points"),
    "top1_agreement": ("min", "fraction", "share of eval samples whose top-1 class matches the float reference"),
    "output_cosine": (
        "min", "cosine",
        "lowest cosine similarity, over the model's outputs, between the artifact's outputs and the float reference's",
    ),
    "int8_compute_ops": (
        "min", "fraction", "share of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / BATCH_MATMUL ops that run in int8",
    ),
    "model_bytes": ("max", "bytes", "size of the shipped model file"),
}


@dataclass(frozen=True)
class GateLimit:
    name: str
    limit: float
    source: str  # "target", "edgeq.toml" or "command line"

    @property
    def comparison(self) -> str:
        return GATE_DEFINITIONS[self.name][0]


def _check_gate(name: str, value: Any, where: str) -> float:
    if name not in GATE_DEFINITIONS:
        raise ConfigError(
            f"{where}: unknown gate '{name}'; known gates: {', '.join(GATE_DEFINITIONS)}"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: gate '{name}' must be a finite number, got {value!r}")
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
    return name, _check_gate(name, value, "--gate")


_KIND_NAMES = {int: "a number", float: "a number", str: "a string", bool: "true or false", list: "a list",
               dict: "a table"}


class _Table:
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

    def table(self, key: str, default: Any = ...) -> _Table:
        sub = self.get(key, dict, default)
        where = f"{self.where}.{key}" if self.where else key
        return _Table(sub if sub is not None else {}, where, self.file)

    def finish(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            section = f"[{self.where}]" if self.where else "the top level"
            known = ", ".join(sorted(self.used)) or "none"
            raise ConfigError(f"{self.file}: unknown key '{extra[0]}' in {section}; known keys: {known}")


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    layout: str
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.layout) != len(self.shape):
            raise ConfigError(
                f"input '{self.name}': layout '{self.layout}' has {len(self.layout)} letters "
                f"but shape {list(self.shape)} has {len(self.shape)} dimensions"
            )


@dataclass(frozen=True)
class OutputSpec:
    name: str


@dataclass(frozen=True)
class TaskSpec:
    kind: str
    output: str | None = None
    labels: Path | None = None


@dataclass(frozen=True)
class DataSpec:
    calibration: Path
    eval: Path
    calibration_samples: int | None = None


@dataclass(frozen=True)
class QuantSpec:
    method: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True

    def __post_init__(self) -> None:
        if not 90.0 <= self.percentile < 100.0:
            raise ConfigError(f"[quantization].percentile must be in [90, 100), got {self.percentile}")


@dataclass(frozen=True)
class ModelSpec:
    """A model directory's edgeq.toml, with every path made absolute."""

    root: Path
    name: str
    format: str
    file: Path
    class_name: str | None
    weights: Path | None
    init_args: dict[str, Any]
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    task: TaskSpec
    data: DataSpec
    quantization: QuantSpec
    gates: dict[str, float]
    io_dtype: str | None

    def __post_init__(self) -> None:
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ConfigError(f"{CONFIG_FILE}: input names must be unique, got {names}")
        if self.format == "pytorch" and not self.class_name:
            raise ConfigError(f"{CONFIG_FILE}: [model].class is required when format = 'pytorch'")
        if self.format == "pytorch" and self.weights is None:
            raise ConfigError(f"{CONFIG_FILE}: [model].weights is required when format = 'pytorch'")
        if self.task.kind == "classification" and self.outputs and self.task.output not in {o.name for o in self.outputs}:
            raise ConfigError(
                f"{CONFIG_FILE}: [task].output '{self.task.output}' is not one of the [[outputs]]: "
                f"{', '.join(o.name for o in self.outputs)}"
            )

    def input(self, name: str) -> InputSpec:
        return next(i for i in self.inputs if i.name == name)


def _path(root: Path, rel: str, what: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else (root / p)


def load_model_spec(model_dir: Path | str) -> ModelSpec:
    """Read and validate ``model_dir/edgeq.toml``. Checks that the files it names exist."""
    root = Path(model_dir)
    if not root.exists():
        raise ModelError(f"model directory {str(root)!r} does not exist; pass the folder that holds edgeq.toml")
    if not root.is_dir():
        raise ModelError(f"{str(root)!r} is not a directory; pass the folder that holds edgeq.toml")
    root = root.resolve()
    cfg_path = root / CONFIG_FILE
    if not cfg_path.is_file():
        raise ConfigError(f"{cfg_path} not found; create it (see sample_models/digits/edgeq.toml for an example)")
    try:
        raw = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{cfg_path}: not valid TOML: {e}") from e

    f = CONFIG_FILE
    top = _Table(raw, "", f)
    m = top.table("model")
    name = m.get("name", str)
    fmt = m.get("format", str, choices=MODEL_FORMATS)
    file = _path(root, m.get("file", str), "model file")
    class_name = m.get("class", str, None)
    weights_rel = m.get("weights", str, None)
    weights = _path(root, weights_rel, "weights") if weights_rel else None
    init_args = m.get("init_args", dict, {})
    m.finish()
    if not file.is_file():
        raise ModelError(f"{f}: [model].file {str(file)!r} does not exist; fix the path (relative to {root})")
    if weights is not None and not weights.is_file():
        raise ModelError(f"{f}: [model].weights {str(weights)!r} does not exist; fix the path (relative to {root})")

    raw_inputs = top.get("inputs", list)
    if not raw_inputs:
        raise ConfigError(f"{f}: [[inputs]] must list at least one input")
    inputs = []
    for k, item in enumerate(raw_inputs):
        t = _Table(item, f"inputs[{k}]", f)
        iname = t.get("name", str)
        shape = t.get("shape", list)
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise ConfigError(f"{f}: inputs[{k}].shape must be a list of positive integers (fixed shape), got {shape!r}")
        dtype = t.get("dtype", str, "float32", choices=INPUT_DTYPES)
        layout = t.get("layout", str, _DEFAULT_LAYOUTS.get(len(shape), "N" + "C" * (len(shape) - 1)))
        pre = t.get("preprocessing", dict, {})
        t.finish()
        inputs.append(InputSpec(iname, tuple(shape), dtype, layout.upper(), dict(pre)))

    outputs = []
    for k, item in enumerate(top.get("outputs", list, [])):
        t = _Table(item, f"outputs[{k}]", f)
        outputs.append(OutputSpec(t.get("name", str)))
        t.finish()

    t = top.table("task")
    kind = t.get("kind", str, choices=TASK_KINDS)
    task_output = t.get("output", str, None)
    labels_rel = t.get("labels", str, None)
    t.finish()
    if kind == "classification" and task_output is None:
        if len(outputs) == 1:
            task_output = outputs[0].name
        else:
            raise ConfigError(f"{f}: [task].output is required for classification: name the logits output")
    labels = _path(root, labels_rel, "labels") if labels_rel else None
    if labels is not None and not labels.is_file():
        raise ConfigError(f"{f}: [task].labels {str(labels)!r} does not exist; fix the path (relative to {root})")
    task = TaskSpec(kind, task_output, labels)

    d = top.table("data")
    calib = _path(root, d.get("calibration", str), "calibration data")
    ev = _path(root, d.get("eval", str), "eval data")
    n_cal = d.get("calibration_samples", int, None)
    d.finish()
    if n_cal is not None and n_cal <= 0:
        raise ConfigError(f"{f}: [data].calibration_samples must be positive, got {n_cal}")
    data = DataSpec(calib, ev, n_cal)

    q = top.table("quantization", {})
    quant = QuantSpec(
        method=q.get("method", str, "minmax", choices=CALIBRATION_METHODS),
        percentile=float(q.get("percentile", (int, float), 99.999)),
        per_channel=q.get("per_channel", bool, True),
    )
    q.finish()

    g = top.table("gates", {})
    gates = {k: _check_gate(k, v, f"{f}: [gates]") for k, v in g.data.items()}
    g.used.update(g.data)

    tgt = top.table("target", {})
    io_dtype = tgt.get("io_dtype", str, None, choices=IO_DTYPES)
    tgt.finish()
    top.finish()

    return ModelSpec(
        root=root, name=name, format=fmt, file=file, class_name=class_name, weights=weights,
        init_args=dict(init_args), inputs=tuple(inputs), outputs=tuple(outputs), task=task,
        data=data, quantization=quant, gates=gates, io_dtype=io_dtype,
    )


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

    def __post_init__(self) -> None:
        if self.io_dtype not in self.io_dtypes:
            raise ConfigError(
                f"target '{self.name}': io_dtype '{self.io_dtype}' is not supported; "
                f"choose one of: {', '.join(self.io_dtypes)}"
            )

    def with_io_dtype(self, io_dtype: str | None) -> TargetSpec:
        return self if io_dtype is None else replace(self, io_dtype=io_dtype)

    def gate_limits(self, model_gates: dict[str, float], cli_gates: dict[str, float]) -> list[GateLimit]:
        """The gates in force: target defaults, then edgeq.toml, then the command line."""
        limits = {k: GateLimit(k, v, "target") for k, v in self.gates.items()}
        for source, overrides in (("edgeq.toml", model_gates), ("command line", cli_gates)):
            for k, v in overrides.items():
                limits[k] = GateLimit(k, v, source)
        return [limits[k] for k in GATE_DEFINITIONS if k in limits]


def _target_files() -> dict[str, Any]:
    pkg = resources.files("edgeq.targets")
    return {p.name[: -len(".toml")]: p for p in pkg.iterdir() if p.name.endswith(".toml")}


def available_targets() -> list[TargetSpec]:
    return [load_target(n) for n in sorted(_target_files())]


def load_target(name: str) -> TargetSpec:
    files = _target_files()
    if name not in files:
        raise ConfigError(f"unknown target '{name}'; available targets: {', '.join(sorted(files))} (see `edgeq targets`)")
    where = f"targets/{name}.toml"
    try:
        raw = tomllib.loads(files[name].read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from e
    t = _Table(raw, "", where)
    g = t.table("gates", {})
    gates = {k: _check_gate(k, v, f"{where}: [gates]") for k, v in g.data.items()}
    g.used.update(g.data)
    b = t.table("bundle")
    spec = TargetSpec(
        name=t.get("name", str),
        description=t.get("description", str),
        format=t.get("format", str, choices=("tflite",)),
        precision=t.get("precision", str, choices=("int8",)),
        io_dtype=t.get("io_dtype", str, choices=IO_DTYPES),
        io_dtypes=tuple(t.get("io_dtypes", list)),
        runtimes=tuple(t.get("runtimes", list)),
        threads=t.get("threads", int, 1),
        gates=gates,
        model_file=b.get("model_file", str),
    )
    b.finish()
    t.finish()
    if spec.name != name:
        raise ConfigError(f"{where}: name = '{spec.name}' does not match the file name '{name}'")
    return spec
