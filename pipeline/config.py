"""Build configuration: ``ModelSpec`` (a model dir's edgeq.toml) and ``TargetSpec`` (targets/*.toml).

Both are frozen dataclasses, validated when they are built: a wrong or missing value raises
``ConfigError`` with one line that names the file, the key and the fix. Unknown keys are errors
too, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from edgeq.artifacts import SINGLE_GRAPH
from edgeq.errors import ConfigError, DataError, ModelError
from edgeq.gates import GATES, GateLimit
from edgeq.inputs.files import inside, load_toml
from edgeq.inputs.shown import shown

__all__ = [
    "CONFIG_FILE",
    "DataSpec",
    "FrozenInput",
    "GraphSpec",
    "InputSpec",
    "ModelSpec",
    "OutputSpec",
    "QuantSpec",
    "TargetSpec",
    "TaskSpec",
    "available_targets",
    "check_tflite_ops",
    "load_model_spec",
    "load_target",
    "parse_gate_override",
    "parse_input_value",
]

CONFIG_FILE = "edgeq.toml"

MODEL_FORMATS = ("pytorch", "onnx", "keras", "saved_model")
INPUT_DTYPES = ("float32", "int32")
TASK_KINDS = ("classification", "generic", "translation")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
IO_DTYPES = ("float32", "int8")
# Channels-first, PyTorch's convention; a layout ending in C declares a channels-last input.
_DEFAULT_LAYOUTS = {0: "", 1: "N", 2: "NC", 3: "NCW", 4: "NCHW", 5: "NCDHW"}
# A frozen input's value (edgeq.toml ``value =``, --input-value) is at most this many numbers.
MAX_FROZEN_ELEMENTS = 1 << 16
MAX_VALUE_TEXT = 1 << 20  # characters of one --input-value

def _check_gate(name: str, value: Any, where: str) -> float:
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
            raise ConfigError(f"{self.file}: unknown key '{shown(extra[0])}' in {section}; known keys: {known}")


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
                f"input '{shown(self.name)}': layout '{shown(self.layout)}' has {len(self.layout)} letters "
                f"but shape {list(self.shape)} has {len(self.shape)} dimensions"
            )


@dataclass(frozen=True)
class FrozenInput:
    """An input fixed to one value (``value =`` in [[inputs]], --input-value): export makes it a
    constant of the graph, so what depends on it folds away and the shipped model has no such input.
    ``value`` is the number or nested list as written; its dtype comes from the model."""

    name: str
    value: Any
    position: int = 0  # where it stands among the [[inputs]] (a PyTorch forward's argument order)

    @property
    def shape(self) -> tuple[int, ...]:
        import numpy as np

        return tuple(np.shape(self.value))


def _check_value(name: str, value: Any, where: str) -> Any:
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
    if arr.dtype == object or arr.size == 0 and isinstance(value, list):
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
    return name, _check_value(name, value, "--input-value")


@dataclass(frozen=True)
class OutputSpec:
    name: str


@dataclass(frozen=True)
class GraphSpec:
    """One graph of the model: exported, quantized and converted on its own.

    A model configured with top-level [[inputs]] has one graph named "model"; an encoder-decoder
    lists [[graphs]]. ``method`` is the PyTorch method exported for the graph (None: forward);
    ``file`` is the graph's ONNX file for format = "onnx".
    """

    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    method: str | None = None
    file: Path | None = None
    frozen: tuple[FrozenInput, ...] = ()  # inputs made constants of the graph (not fed)

    def __post_init__(self) -> None:
        names = [i.name for i in self.inputs] + [f.name for f in self.frozen]
        if len(set(names)) != len(names):
            raise ConfigError(f"{CONFIG_FILE}: graph '{shown(self.name)}': input names must be unique, got {names}")

    def input(self, name: str) -> InputSpec:
        return next(i for i in self.inputs if i.name == name)

    def declared_inputs(self) -> list[dict[str, Any]]:
        """Every input in edgeq.toml's order as {name, shape, dtype} (+ value for a frozen one, its dtype
        that of the value: int64, float32 or bool): what an exporter is given as example inputs."""
        import numpy as np

        out: list[dict[str, Any]] = [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in self.inputs]
        for f in sorted(self.frozen, key=lambda f: f.position):
            kind = np.array(f.value).dtype.kind
            dtype = {"b": "bool", "i": "int64", "u": "int64"}.get(kind, "float32")
            out.insert(f.position, {"name": f.name, "shape": list(f.shape), "dtype": dtype, "value": f.value})
        return out


@dataclass(frozen=True)
class TaskSpec:
    """What the model does, and so how edgeq feeds it and scores it.

    translation: ``tokenizer`` is a SentencePiece model; ``encoder``/``decoder`` name the graphs and
    ``source_ids``/``target_ids``/``memory``/``logits`` the tensors that wire them together.
    """

    kind: str
    output: str | None = None
    labels: Path | None = None
    tokenizer: Path | None = None
    encoder: str = "encoder"
    decoder: str = "decoder"
    source_ids: str = "src_ids"
    target_ids: str = "tgt_ids"
    memory: str = "memory"
    logits: str = "logits"


@dataclass(frozen=True)
class DataSpec:
    calibration: Path
    eval: Path
    calibration_samples: int | None = None
    subset_seed: int | None = None  # image folders: a seeded random subset of calibration_samples files
    # .npz archives: the arrays' total unpacked bytes, and unpacked / packed bytes of each member
    max_unpacked_bytes: int = 8 << 30
    max_unpack_ratio: int = 200


@dataclass(frozen=True)
class QuantSpec:
    method: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True
    # TFLite ops accepted in float32 inside the INT8 model (no int8 kernel); any other is refused
    allow_float_ops: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 90.0 <= self.percentile < 100.0:
            raise ConfigError(f"[quantization].percentile must be in [90, 100), got {self.percentile}")


@dataclass(frozen=True)
class ModelSpec:
    """A model directory's edgeq.toml, with every path made absolute."""

    root: Path
    name: str
    format: str
    file: Path | None  # the model file; None for an ONNX model of several graphs (graphs name theirs)
    class_name: str | None
    weights: Path | None
    init_args: dict[str, Any]
    graphs: tuple[GraphSpec, ...]
    task: TaskSpec
    data: DataSpec
    quantization: QuantSpec
    gates: dict[str, float]
    io_dtype: str | None

    def __post_init__(self) -> None:
        if self.format == "pytorch" and not self.class_name:
            raise ConfigError(f"{CONFIG_FILE}: [model].class is required when format = 'pytorch'")
        if self.format == "pytorch" and self.weights is None:
            raise ConfigError(f"{CONFIG_FILE}: [model].weights is required when format = 'pytorch'")
        if self.task.kind == "translation":
            self._check_translation()
        elif len(self.graphs) != 1:
            raise ConfigError(f"{CONFIG_FILE}: task '{self.task.kind}' takes one graph; use top-level [[inputs]]")
        outputs = self.graphs[0].outputs
        if self.task.kind == "classification" and outputs and self.task.output not in {o.name for o in outputs}:
            raise ConfigError(
                f"{CONFIG_FILE}: [task].output '{shown(self.task.output)}' is not one of the [[outputs]]: "
                f"{', '.join(shown(o.name) for o in outputs)}"
            )

    def _check_translation(self) -> None:
        t = self.task
        names = {g.name: g for g in self.graphs}
        for role, gname in (("encoder", t.encoder), ("decoder", t.decoder)):
            if gname not in names:
                raise ConfigError(
                    f"{CONFIG_FILE}: [task].{role} names graph '{shown(gname)}', but the [[graphs]] are: "
                    f"{', '.join(shown(n) for n in names)}"
                )
        enc, dec = names[t.encoder], names[t.decoder]
        if len(self.graphs) != 2:
            raise ConfigError(f"{CONFIG_FILE}: a translation model has two [[graphs]], an encoder and a decoder")
        if [i.name for i in enc.inputs] != [t.source_ids]:
            raise ConfigError(
                f"{CONFIG_FILE}: the encoder graph must take exactly one input, '{shown(t.source_ids)}' (source token ids)"
            )
        if [o.name for o in enc.outputs] != [t.memory]:
            raise ConfigError(f"{CONFIG_FILE}: the encoder graph must list exactly one output, '{shown(t.memory)}'")
        allowed = {t.target_ids, t.memory, t.source_ids}
        dec_in = {i.name for i in dec.inputs}
        if not {t.target_ids, t.memory} <= dec_in or not dec_in <= allowed:
            raise ConfigError(
                f"{CONFIG_FILE}: the decoder graph's inputs must be '{shown(t.target_ids)}' and '{shown(t.memory)}' "
                f"(and optionally '{shown(t.source_ids)}'), got {sorted(dec_in)}"
            )
        if [o.name for o in dec.outputs] != [t.logits]:
            raise ConfigError(f"{CONFIG_FILE}: the decoder graph must list exactly one output, '{shown(t.logits)}'")
        for g, name in ((enc, t.source_ids), (dec, t.target_ids)) + (((dec, t.source_ids),) if t.source_ids in dec_in else ()):
            spec = g.input(name)
            if spec.dtype != "int32" or len(spec.shape) != 2 or spec.shape[0] != 1:
                raise ConfigError(
                    f"{CONFIG_FILE}: graph '{shown(g.name)}' input '{shown(name)}' holds token ids: it must be int32 with shape "
                    f"[1, max_length], got {spec.dtype} {list(spec.shape)}"
                )
        if dec.input(t.memory).dtype != "float32":
            raise ConfigError(f"{CONFIG_FILE}: decoder input '{shown(t.memory)}' must be float32")
        if self.task.tokenizer is None:
            raise ConfigError(f"{CONFIG_FILE}: [task].tokenizer is required for translation (a SentencePiece .model)")

    @property
    def single(self) -> GraphSpec:
        """The graph of a one-graph model."""
        if len(self.graphs) != 1:
            raise ConfigError(f"model '{shown(self.name)}' has {len(self.graphs)} graphs; this needs a one-graph model")
        return self.graphs[0]

    @property
    def inputs(self) -> tuple[InputSpec, ...]:
        return self.single.inputs

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        return self.single.outputs

    def input(self, name: str) -> InputSpec:
        return self.single.input(name)

    def graph(self, name: str) -> GraphSpec:
        return next(g for g in self.graphs if g.name == name)

    @property
    def source_files(self) -> list[Path]:
        """Every file the model is made of, in a fixed order (for hashes)."""
        if self.file is not None and self.file.is_dir():  # a SavedModel folder: every file in it
            return sorted(p for p in self.file.rglob("*") if p.is_file())
        files = [p for p in (self.file, self.weights) if p is not None]
        return files + [g.file for g in self.graphs if g.file is not None and g.file not in files]




def check_tflite_ops(names: list[Any], where: str) -> tuple[str, ...]:
    """TFLite builtin op names (``SIN``, ``CUMSUM``), upper-cased; ConfigError for anything else."""
    if not names:
        return ()
    from ai_edge_litert import schema_py_generated as fb

    known = {k for k in vars(fb.BuiltinOperator) if not k.startswith("_")}
    out = []
    for name in names:
        op = name.strip().upper() if isinstance(name, str) else None
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


_ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int32"}  # FLOAT, INT32, INT64 (token ids become int32)


def onnx_dim(d: Any) -> int | str:
    """One dimension of an ONNX shape: its size, or - when dynamic - what the model calls it: a name
    or expression ('batch', '2*N'), '-1' or '0' as older exporters write a dynamic size, '?' for none."""
    if d.HasField("dim_value") and d.dim_value > 0:
        return int(d.dim_value)
    return d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?")


def onnx_inputs(path: Path) -> dict[str, tuple[str | None, list[int | str] | None]]:
    """The graph inputs of an ONNX file (initializers excluded): name -> (edgeq dtype or None, dims),
    a dim being its size or, when dynamic, its ``onnx_dim`` text; dims None when the model does not
    declare the input's shape at all (not even its rank)."""
    import onnx
    from google.protobuf.message import DecodeError

    from edgeq.onnx_files import check_size

    check_size(path)
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise ModelError(f"{path.name} is not a readable ONNX file ({type(e).__name__}); re-export the model") from e
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, tuple[str | None, list[int | str] | None]] = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        dims = [onnx_dim(d) for d in tt.shape.dim] if tt.HasField("shape") else None
        out[i.name] = (_ONNX_DTYPES.get(tt.elem_type), dims)
    return out


def _parse_inputs(raw_inputs: list[Any], where: str, f: str, shapes: dict[str, tuple[int, ...]] | None = None,
                  onnx_file: Path | None = None, values: dict[str, Any] | None = None,
                  ) -> tuple[tuple[InputSpec, ...], tuple[FrozenInput, ...]]:
    """The [[inputs]] tables: the fed inputs and the frozen ones (``value =`` or --input-value).
    Each shape comes from --input-shape, else the table, else (ONNX) the model; with an ONNX file,
    [[inputs]] itself may be left out. A dimension still dynamic is an error that lists every one.
    Shapes may have any rank, [] (a scalar) included."""
    shapes = shapes or {}
    values = values or {}
    model = onnx_inputs(onnx_file) if onnx_file is not None and (not raw_inputs or any(
        isinstance(i, dict) and "shape" not in i and "value" not in i and i.get("name") not in shapes
        and i.get("name") not in values for i in raw_inputs)) else None
    if not raw_inputs and model is not None:
        raw_inputs = [{"name": n, **({"dtype": d} if d else {})} for n, (d, _) in model.items()]
    if not raw_inputs:
        raise ConfigError(f"{f}: [[{where}]] must list at least one input")
    inputs = []
    frozen = []
    dynamic: list[str] = []  # "name[axis] 'what the model calls it'" for each dimension with no size
    dynamic_inputs: list[str] = []
    for k, item in enumerate(raw_inputs):
        t = _Table(item, f"{where}[{k}]", f)
        iname = t.get("name", str)
        shape = t.get("shape", list, None)
        value = t.get("value", (int, float, bool, list), None)
        if iname in values:
            value = values[iname]
        if value is not None:
            value = _check_value(iname, value, f"{f}: {where}[{k}]")
            if iname in shapes:
                raise ConfigError(f"input '{shown(iname)}' is given both --input-shape and a value; a frozen input's shape is "
                                  "its value's")
            frozen_in = FrozenInput(iname, value, k)
            if shape is not None and list(shape) != list(frozen_in.shape):
                raise ConfigError(f"{f}: {where}[{k}] ('{shown(iname)}'): shape {shape!r} but its value has shape "
                                  f"{list(frozen_in.shape)}; drop shape (a frozen input's shape is its value's)")
            extra = sorted(set(t.data) - {"name", "value", "shape", "dtype"})
            if extra:
                raise ConfigError(f"{f}: {where}[{k}] ('{shown(iname)}') is frozen by its value; '{shown(extra[0])}' "
                                  "does not apply to it (it is not an input of the shipped model)")
            t.used.update(t.data)
            frozen.append(frozen_in)
            continue
        if iname in shapes:
            shape = list(shapes[iname])
        elif shape is None and model is not None and iname in model and model[iname][1] is not None:
            dims = model[iname][1]
            named = [f"{shown(iname)}[{a}] '{shown(d)}'" for a, d in enumerate(dims) if isinstance(d, str)]
            dynamic += named
            dynamic_inputs += [iname] if named else []
            shape = [d if isinstance(d, int) else 1 for d in dims]
        elif shape is None:
            declared = " (the model does not declare its shape)" if model is not None and iname in model else ""
            raise ConfigError(
                f"{f}: {where}[{k}] ('{shown(iname)}') has no shape{declared}; give shape = [...] or "
                f"--input-shape {shown(iname)}=D1,D2,..."
            )
        if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise ConfigError(
                f"{f}: {where}[{k}].shape must be a list of positive integers (fixed shape; [] for a scalar), got {shape!r}"
            )
        dtype = t.get("dtype", str, "float32", choices=INPUT_DTYPES)
        layout = t.get("layout", str, _DEFAULT_LAYOUTS.get(len(shape), "N" + "C" * (len(shape) - 1)))
        pre = t.get("preprocessing", dict, {})
        t.finish()
        inputs.append(InputSpec(iname, tuple(shape), dtype, layout.upper(), dict(pre)))
    if dynamic:
        example = next(i for i in inputs if i.name == dynamic_inputs[0])
        stray = sorted(set(shapes) - {i.name for i in inputs})
        note = f" (--input-shape named {', '.join(stray)}, not an input of this model)" if stray else ""
        raise ConfigError(
            f"{shown(onnx_file.name) if onnx_file else f}: dynamic dimensions with no size: {', '.join(dynamic)}{note}; "
            f"give them with --input-shape {shown(example.name)}={','.join(str(d) for d in example.shape)} (your sizes) "
            "or shape = [...] in [[inputs]]"
        )
    names = [i.name for i in inputs] + [fr.name for fr in frozen]
    if len(set(names)) != len(names):
        raise ConfigError(f"{f}: input names must be unique, got {names}")
    if not inputs:
        raise ConfigError(f"{f}: every input of {where} is frozen with a value; the model needs at least one input to feed")
    return tuple(inputs), tuple(frozen)


def _parse_outputs(raw_outputs: list[Any], where: str, f: str) -> tuple[OutputSpec, ...]:
    outputs = []
    for k, item in enumerate(raw_outputs):
        t = _Table(item, f"{where}[{k}]", f)
        outputs.append(OutputSpec(t.get("name", str)))
        t.finish()
    return tuple(outputs)


def load_model_spec(model_dir: Path | str, input_shapes: dict[str, tuple[int, ...]] | None = None,
                    input_values: dict[str, Any] | None = None) -> ModelSpec:
    """Read and validate ``model_dir/edgeq.toml``. Checks that the files it names exist.
    ``input_shapes`` (--input-shape) replace or fill in input shapes by name; ``input_values``
    (--input-value) freeze inputs by name."""
    root = Path(model_dir)
    if not root.exists():
        raise ModelError(f"model directory {str(root)!r} does not exist; pass the folder that holds edgeq.toml")
    if not root.is_dir():
        raise ModelError(f"{str(root)!r} is not a directory; pass the folder that holds edgeq.toml")
    root = root.resolve()
    cfg_path = root / CONFIG_FILE
    if not os.path.lexists(cfg_path):
        raise ConfigError(f"{shown(str(cfg_path))} not found; create it (see sample_models/digits/edgeq.toml for an example)")
    raw = load_toml(cfg_path, shown(str(cfg_path)))

    f = CONFIG_FILE
    top = _Table(raw, "", f)
    m = top.table("model")
    name = m.get("name", str)
    if not name or len(name) > 100 or name in (".", "..") or any(c in name for c in "/\\") or not name.isprintable():
        raise ConfigError(f"{f}: [model].name {shown(name)!r} must be a plain name (printable, no '/' or '\\', at most 100 "
                          "characters): it names the bundle folder")
    fmt = m.get("format", str, choices=MODEL_FORMATS)
    # An ONNX model of several graphs names one file per graph instead of [model].file.
    file_needed = fmt == "pytorch" or "graphs" not in raw
    file_rel = m.get("file", str, ... if file_needed else None)
    file = inside(root, file_rel, f"{f}: [model].file", kind="dir" if fmt == "saved_model" else "file",
                  error=ModelError) if file_rel is not None else None
    class_name = m.get("class", str, None)
    weights_rel = m.get("weights", str, None)
    weights = inside(root, weights_rel, f"{f}: [model].weights", error=ModelError) if weights_rel is not None else None
    init_args = m.get("init_args", dict, {})
    m.finish()
    if fmt == "saved_model":
        if file is None or not file.is_dir():
            raise ModelError(
                f"{f}: [model].file {str(file)!r} is not a folder; a SavedModel is the folder holding saved_model.pb"
            )
        if not (file / "saved_model.pb").is_file():
            raise ModelError(f"{f}: [model].file {str(file)!r} has no saved_model.pb; save it with tf.saved_model.save")
    elif file is not None and not file.is_file():
        raise ModelError(f"{f}: [model].file {str(file)!r} does not exist; fix the path (relative to {shown(str(root))})")
    if fmt == "keras" and file is not None:
        if file.suffix.lower() in (".h5", ".hdf5"):
            raise ModelError(
                f"{f}: {shown(file.name)} is a legacy HDF5 Keras file, which edgeq refuses (it can hold code and is not checked "
                "in safe mode); load it in the Keras that saved it and re-save with model.save('model.keras')"
            )
        if file.suffix.lower() != ".keras":
            raise ConfigError(f"{f}: format = 'keras' needs a .keras file (model.save('model.keras')), got {shown(file.name)}")
    if fmt != "pytorch" and (class_name is not None or weights is not None or init_args):
        raise ConfigError(f"{f}: [model].class, weights and init_args are for format = 'pytorch' only")
    if weights is not None and not weights.is_file():
        raise ModelError(f"{f}: [model].weights {str(weights)!r} does not exist; fix the path (relative to {shown(str(root))})")

    if "graphs" in raw:
        if fmt in ("keras", "saved_model"):
            raise ConfigError(f"{f}: format = '{fmt}' is one graph; use top-level [[inputs]], not [[graphs]]")
        if "inputs" in raw or "outputs" in raw:
            raise ConfigError(f"{f}: use either top-level [[inputs]]/[[outputs]] (one graph) or [[graphs]], not both")
        raw_graphs = top.get("graphs", list)
        if not raw_graphs:
            raise ConfigError(f"{f}: [[graphs]] must list at least one graph")
        graphs = []
        for k, item in enumerate(raw_graphs):
            gt = _Table(item, f"graphs[{k}]", f)
            gname = gt.get("name", str)
            method = gt.get("method", str, None)
            gfile_rel = gt.get("file", str, None)
            gfile = inside(root, gfile_rel, f"{f}: graphs[{k}].file", error=ModelError) if gfile_rel is not None else None
            if fmt == "onnx":
                if gfile is None:
                    raise ConfigError(f"{f}: graphs[{k}].file is required for format = 'onnx' (one .onnx file per graph)")
                if not gfile.is_file():
                    raise ModelError(f"{f}: graphs[{k}].file {str(gfile)!r} does not exist; "
                                     f"fix the path (relative to {shown(str(root))})")
            g_inputs, g_frozen = _parse_inputs(gt.get("inputs", list, []), f"graphs[{k}].inputs", f, input_shapes,
                                               gfile if fmt == "onnx" else None, input_values)
            g_outputs = _parse_outputs(gt.get("outputs", list, []), f"graphs[{k}].outputs", f)
            gt.finish()
            graphs.append(GraphSpec(gname, g_inputs, g_outputs, method, gfile, g_frozen))
        gnames = [g.name for g in graphs]
        if len(set(gnames)) != len(gnames):
            raise ConfigError(f"{f}: graph names must be unique, got {gnames}")
    else:
        inputs, frozen = _parse_inputs(top.get("inputs", list, []), "inputs", f, input_shapes,
                                       file if fmt == "onnx" else None, input_values)
        graphs = [GraphSpec(SINGLE_GRAPH, inputs, _parse_outputs(top.get("outputs", list, []), "outputs", f), None,
                            file if fmt == "onnx" else None, frozen)]

    known = [i.name for g in graphs for i in (*g.inputs, *g.frozen)]
    for option, given in (("--input-shape", input_shapes), ("--input-value", input_values)):
        unknown = sorted(set(given or {}) - set(known))
        if unknown:
            raise ConfigError(f"{option} names {', '.join(shown(n) for n in unknown)}, "
                              f"but the model's inputs are {', '.join(shown(n) for n in known)}")

    t = top.table("task")
    kind = t.get("kind", str, choices=TASK_KINDS)
    task_output = t.get("output", str, None)
    labels_rel = t.get("labels", str, None)
    tokenizer_rel = t.get("tokenizer", str, None)
    wiring = {key: t.get(key, str, getattr(TaskSpec, key))
              for key in ("encoder", "decoder", "source_ids", "target_ids", "memory", "logits")}
    t.finish()
    if kind != "translation" and (tokenizer_rel or any(k in t.data for k in wiring)):
        raise ConfigError(f"{f}: [task] tokenizer/encoder/decoder keys are for kind = 'translation' only")
    tokenizer = inside(root, tokenizer_rel, f"{f}: [task].tokenizer") if tokenizer_rel is not None else None
    if tokenizer is not None and not tokenizer.is_file():
        raise ConfigError(f"{f}: [task].tokenizer {str(tokenizer)!r} does not exist; "
                          f"fix the path (relative to {shown(str(root))})")
    outputs = graphs[0].outputs
    if kind == "classification" and task_output is None:
        if len(outputs) == 1:
            task_output = outputs[0].name
        else:
            raise ConfigError(f"{f}: [task].output is required for classification: name the logits output")
    labels = inside(root, labels_rel, f"{f}: [task].labels") if labels_rel is not None else None
    if labels is not None and not labels.is_file():
        raise ConfigError(f"{f}: [task].labels {str(labels)!r} does not exist; fix the path (relative to {shown(str(root))})")
    task = TaskSpec(kind, task_output, labels, tokenizer, **wiring)

    d = top.table("data")
    calib = inside(root, d.get("calibration", str), f"{f}: [data].calibration", kind="any", error=DataError)
    ev = inside(root, d.get("eval", str), f"{f}: [data].eval", kind="any", error=DataError)
    n_cal = d.get("calibration_samples", int, None)
    seed = d.get("subset_seed", int, None)
    max_unpacked = d.get("max_unpacked_bytes", int, DataSpec.max_unpacked_bytes)
    max_ratio = d.get("max_unpack_ratio", int, DataSpec.max_unpack_ratio)
    d.finish()
    if max_unpacked <= 0 or max_ratio <= 0:
        raise ConfigError(f"{f}: [data].max_unpacked_bytes and max_unpack_ratio must be positive")
    if n_cal is not None and n_cal <= 0:
        raise ConfigError(f"{f}: [data].calibration_samples must be positive, got {n_cal}")
    if seed is not None and n_cal is None:
        raise ConfigError(f"{f}: [data].subset_seed picks calibration_samples files at random; set calibration_samples too")
    data = DataSpec(calib, ev, n_cal, seed, max_unpacked, max_ratio)

    q = top.table("quantization", {})
    method = q.get("method", str, "minmax", choices=CALIBRATION_METHODS)
    percentile = q.get("percentile", (int, float), 99.999)
    if not 90 <= percentile < 100:  # before float(): an integer of 400 digits is no float
        raise ConfigError(f"{f}: [quantization].percentile must be in [90, 100), got {percentile}")
    quant = QuantSpec(
        method=method,
        percentile=float(percentile),
        per_channel=q.get("per_channel", bool, True),
        allow_float_ops=check_tflite_ops(q.get("allow_float_ops", list, []), f"{f}: [quantization].allow_float_ops"),
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
        init_args=dict(init_args), graphs=tuple(graphs), task=task,
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
        return [limits[k] for k in GATES if k in limits]


def _names(items: list[Any], where: str) -> tuple[str, ...]:
    """A list of names (runtimes are checked against what edgeq knows by edgeq.runtimes.with_runtimes)."""
    if not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{where}: every entry must be a string")
    return tuple(items)


def _target_files() -> dict[str, Any]:
    pkg = resources.files("edgeq.targets")
    return {p.name[: -len(".toml")]: p for p in pkg.iterdir() if p.name.endswith(".toml")}


def available_targets() -> list[TargetSpec]:
    return [load_target(n) for n in sorted(_target_files())]


def load_target(name: str) -> TargetSpec:
    files = _target_files()
    if name not in files:
        raise ConfigError(f"unknown target '{shown(name)}'; available targets: {', '.join(sorted(files))} (see `edgeq targets`)")
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
        runtimes=_names(t.get("runtimes", list), f"{where}: runtimes"),
        threads=t.get("threads", int, 1),
        gates=gates,
        model_file=b.get("model_file", str),
    )
    b.finish()
    t.finish()
    if spec.name != name:
        raise ConfigError(f"{where}: name = '{spec.name}' does not match the file name '{name}'")
    return spec
