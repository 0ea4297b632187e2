"""Reading a model folder's edgeq.toml into a ``ModelSpec``: every path inside the folder, every
key known, shapes from --input-shape, the table or the ONNX model, frozen inputs from ``value =``
or --input-value."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgeq.artifacts import SINGLE_GRAPH
from edgeq.config.model import (
    _DEFAULT_LAYOUTS,
    BOX_FORMATS,
    CALIBRATION_METHODS,
    CONFIG_FILE,
    INPUT_DTYPES,
    IO_DTYPES,
    MODEL_FORMATS,
    PRECISION_CHOICES,
    TASK_KINDS,
    DataSpec,
    FrozenInput,
    GraphSpec,
    InputSpec,
    ModelSpec,
    OutputSpec,
    QuantSpec,
    TaskSpec,
)
from edgeq.config.toml import Table, check_gate, check_tflite_ops, check_value
from edgeq.errors import ConfigError, DataError, ModelError
from edgeq.inputs.files import inside, load_toml
from edgeq.inputs.shown import shown
from edgeq.onnx_files import onnx_inputs

__all__ = ["load_model_spec"]


def _max_int16_ops(value: int | None, f: str) -> int | None:
    if value is not None and not 0 <= value <= 100_000:
        raise ConfigError(f"{f}: [quantization].max_int16_ops must be a count of ops from 0 to 100000, got {value}")
    return value


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
        t = Table(item, f"{where}[{k}]", f)
        iname = t.get("name", str)
        shape = t.get("shape", list, None)
        value = t.get("value", (int, float, bool, list), None)
        if iname in values:
            value = values[iname]
        if value is not None:
            value = check_value(iname, value, f"{f}: {where}[{k}]")
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
        t = Table(item, f"{where}[{k}]", f)
        name = t.get("name", str)
        axis = t.get("axis", int, None)
        raw = t.table("slices", None)
        slices = tuple(_parse_slice(f"{f}: {where}[{k}].slices.{shown(n)}", n, v) for n, v in raw.data.items())
        raw.used.update(raw.data)
        if (axis is None) != (not slices):
            raise ConfigError(f"{f}: {where}[{k}] ({shown(name)}): axis and slices go together, e.g. "
                              'axis = 1, slices = { boxes = "0:4", scores = "4:" }')
        if axis is not None and not 0 < axis < 8:
            raise ConfigError(f"{f}: {where}[{k}].axis must be an axis after the batch axis (1 or more), got {axis}")
        outputs.append(OutputSpec(name, axis, slices))
        t.finish()
    return tuple(outputs)


def _parse_slice(where: str, name: str, value: Any) -> tuple[str, int, int | None]:
    """``"start:stop"`` (either may be left out) -> (name, start, stop or None)."""
    lo, sep, hi = value.partition(":") if isinstance(value, str) else ("", "", "")
    try:
        start = int(lo) if lo.strip() else 0
        stop = int(hi) if hi.strip() else None
    except ValueError:
        start, stop, sep = 0, None, ""
    if not sep or start < 0 or (stop is not None and stop <= start) or len(value) > 40:
        raise ConfigError(f'{where} must be "start:stop" with 0 <= start < stop, e.g. "0:4" or "4:", got {value!r}')
    return name, start, stop


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
    top = Table(raw, "", f)
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
            gt = Table(item, f"graphs[{k}]", f)
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
    detection = {"box_format": t.get("box_format", str, TaskSpec.box_format, choices=BOX_FORMATS),
                 "score_threshold": t.get("score_threshold", (int, float), TaskSpec.score_threshold),
                 "nms_iou": t.get("nms_iou", (int, float), TaskSpec.nms_iou),
                 "scores": t.get("scores", str, None)}
    t.finish()
    if kind != "translation" and (tokenizer_rel or any(k in t.data for k in wiring)):
        raise ConfigError(f"{f}: [task] tokenizer/encoder/decoder keys are for kind = 'translation' only")
    if kind != "detection" and any(k in t.data for k in detection):
        raise ConfigError(f"{f}: [task] box_format/score_threshold/nms_iou/scores are for kind = 'detection' only")
    for key in ("score_threshold", "nms_iou"):
        if not 0 < detection[key] < 1:
            raise ConfigError(f"{f}: [task].{key} must be between 0 and 1, got {detection[key]!r}")
    if detection["scores"] is not None and task_output in (None, detection["scores"]):
        raise ConfigError(f"{f}: [task].scores names the class scores output; [task].output must then name the boxes "
                          "output (SSD-style: boxes [1, N, 4], scores [1, N, C])")
    if kind == "detection" and task_output is None:
        if len(graphs[0].outputs) != 1:
            raise ConfigError(f"{f}: [task].output is required for detection: name the boxes-and-scores output")
        task_output = graphs[0].outputs[0].name
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
    task = TaskSpec(kind, task_output, labels, tokenizer, **wiring, **detection)

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
        repair=q.get("repair", bool, True),
        max_int16_ops=_max_int16_ops(q.get("max_int16_ops", int, None), f),
    )
    q.finish()

    g = top.table("gates", {})
    gates = {k: check_gate(k, v, f"{f}: [gates]") for k, v in g.data.items()}
    g.used.update(g.data)

    tgt = top.table("target", {})
    io_dtype = tgt.get("io_dtype", str, None, choices=IO_DTYPES)
    precision = tgt.get("precision", str, None, choices=PRECISION_CHOICES)
    tgt.finish()
    top.finish()

    return ModelSpec(
        root=root, name=name, format=fmt, file=file, class_name=class_name, weights=weights,
        init_args=dict(init_args), graphs=tuple(graphs), task=task,
        data=data, quantization=quant, gates=gates, io_dtype=io_dtype, precision=precision,
    )
