"""The model spec: a model folder's edgeq.toml as frozen dataclasses, validated when built."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.errors import ConfigError
from edgeq.inputs.shown import shown
from edgeq.precisions import PRECISIONS, SELECTORS

__all__ = ["BOX_FORMATS", "CALIBRATION_METHODS", "CONFIG_FILE", "INPUT_DTYPES", "IO_DTYPES", "MODEL_FORMATS",
           "PRECISION_CHOICES", "TASK_KINDS",
           "DataSpec", "FrozenInput", "GraphSpec", "InputSpec", "ModelSpec", "OutputSpec", "QuantSpec", "TaskSpec"]

CONFIG_FILE = "edgeq.toml"

MODEL_FORMATS = ("pytorch", "onnx", "keras", "saved_model")
INPUT_DTYPES = ("float32", "int32")
TASK_KINDS = ("classification", "detection", "generic", "translation")
BOX_FORMATS = ("xywh", "xyxy")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
IO_DTYPES = ("float32", "int8")
PRECISION_CHOICES = (*(p.alias for p in PRECISIONS), *SELECTORS)  # --precision, [target] precision
# Channels-first, PyTorch's convention; a layout ending in C declares a channels-last input.
_DEFAULT_LAYOUTS = {0: "", 1: "N", 2: "NC", 3: "NCW", 4: "NCHW", 5: "NCDHW"}


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, shape, dtype, layout and preprocessing."""

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
        """The shape of the value."""
        import numpy as np

        return tuple(np.shape(self.value))


@dataclass(frozen=True)
class OutputSpec:
    """One model output, by name. ``slices`` (with ``axis``) names parts of it along one axis that are
    measured on their own, e.g. boxes 0:4 and scores 4: of a YOLO-style output: (name, start, stop),
    stop None for the end of the axis."""

    name: str
    axis: int | None = None
    slices: tuple[tuple[str, int, int | None], ...] = ()


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
        """The graph's input of that name."""
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
    box_format: str = "xywh"  # detection: "xywh" (centre, size) or "xyxy"
    score_threshold: float = 0.25  # detection: an anchor whose best class score reaches this is a detection
    nms_iou: float = 0.45  # detection: non-maximum suppression's IoU
    scores: str | None = None  # detection, SSD-style: the class scores output [B, N, C] (``output``: boxes [B, N, 4])


@dataclass(frozen=True)
class DataSpec:
    """The calibration and eval data: paths, calibration sample count and seed, .npz unpacking limits."""

    calibration: Path
    eval: Path
    calibration_samples: int | None = None
    subset_seed: int | None = None  # image folders: a seeded random subset of calibration_samples files
    # .npz archives: the arrays' total unpacked bytes, and unpacked / packed bytes of each member
    max_unpacked_bytes: int = 8 << 30
    max_unpack_ratio: int = 200


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize: calibration method and percentile, per-channel weights, float ops allowed."""

    method: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True
    # TFLite ops accepted in float32 inside the INT8 model (no int8 kernel); any other is refused
    allow_float_ops: tuple[str, ...] = ()
    # when a gate fails, try 16-bit activations for the ops where the error originates (edgeq.repair)
    repair: bool = True
    # compute ops (CONV / DEPTHWISE_CONV / FULLY_CONNECTED / BATCH_MATMUL) repair may give 16-bit
    # activations; None: 10% of the graph's compute ops
    max_int16_ops: int | None = None

    def __post_init__(self) -> None:
        if self.max_int16_ops is not None and self.max_int16_ops < 0:
            raise ConfigError(f"[quantization].max_int16_ops must be 0 or more, got {self.max_int16_ops}")
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
    precision: str | None = None  # [target] precision: a rung's alias, "auto" or "all" (edgeq.precisions)

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
        """The inputs of a one-graph model."""
        return self.single.inputs

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        """The outputs of a one-graph model."""
        return self.single.outputs

    def input(self, name: str) -> InputSpec:
        """The input of that name of a one-graph model."""
        return self.single.input(name)

    def graph(self, name: str) -> GraphSpec:
        """The graph of that name."""
        return next(g for g in self.graphs if g.name == name)

    @property
    def source_files(self) -> list[Path]:
        """Every file the model is made of, in a fixed order (for hashes)."""
        if self.file is not None and self.file.is_dir():  # a SavedModel folder: every file in it
            return sorted(p for p in self.file.rglob("*") if p.is_file())
        files = [p for p in (self.file, self.weights) if p is not None]
        return files + [g.file for g in self.graphs if g.file is not None and g.file not in files]
