"""From a model onnxruntime runs to the fixed-shape graph edgeq converts: metadata repaired, input
shapes fixed, inputs frozen, shape logic folded, every change listed.

Rules:

* onnxruntime is the authority on what a valid model is. A model it cannot load is refused with its
  own reason (``ort_check``). What onnx's checker or shape inference alone objects to - value_info
  without a shape or with stale shapes, dimensions with neither value nor name, ``-1`` / ``0`` sizes,
  an old IR version or opset - is repaired here (stale shapes: edgeq.onnx_rewrites), never refused,
  and each repair is one line of the list the report shows (``export.graphs.<g>.rewrites``).
* Every dynamic dimension is dynamic, however the exporter wrote it: a name, an expression, ``-1``,
  ``0`` or nothing at all. edgeq.toml / --input-shape give it its size; a static size that disagrees
  is an error.
* A frozen input (``value =``, --input-value) becomes an initializer of the same name: the graph then
  computes exactly what the model computes when fed that value, and folding can remove whatever
  depends on it.
* After folding (``onnxslim``, which also replaces every ``If`` whose condition became constant by its
  branch) an ``If`` that is left is an error naming the node and the inputs its condition depends on.
* The rewritten graph must compute what the model computes: ``check_same_function`` runs both on
  onnxruntime on the same seeded feeds and compares every output.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.config import FrozenInput, GraphSpec
from edgeq.errors import ModelError

__all__ = ["MIN_OPSET", "check_ifs", "check_same_function", "complete_output_shapes", "count_ops",
           "fix_inputs", "freeze_inputs", "opset", "ort_check", "ort_reason", "upgrade"]

# Per-channel QDQ needs DequantizeLinear's axis attribute, which arrived in opset 13.
MIN_OPSET = 13
_ONNX_DTYPES = {"float32": 1, "int32": 6}  # onnx.TensorProto.FLOAT, INT32


def ort_reason(e: BaseException) -> str:
    """onnxruntime's message as one printable line: '[ONNXRuntimeError] : 10 : INVALID_GRAPH : x' -> 'INVALID_GRAPH: x'."""
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : (\w+) : ", r"\1: ", str(e))
    text = " ".join(re.sub(r"[\x00-\x1f\x7f-\x9f]", " ", text).split())
    return text[:400] + ("..." if len(text) > 400 else "") or type(e).__name__


def _session(model: Any) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def ort_check(model: Any, source: Path) -> None:
    """ModelError with onnxruntime's reason if onnxruntime cannot load ``model`` (a ModelProto or bytes)."""
    try:
        _session(model)
    except Exception as e:  # onnxruntime raises its own pybind exception types for every refusal
        raise ModelError(f"onnxruntime cannot load {source.name}: {ort_reason(e)}; re-export the model") from e


def opset(model: Any) -> int:
    """The model's ONNX opset version of the default domain (0 when it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def count_ops(graph: Any, op: str) -> int:
    """Nodes of type ``op`` in ``graph`` and every subgraph of its nodes."""
    from onnx import AttributeProto

    n = 0
    for node in graph.node:
        n += node.op_type == op
        for a in node.attribute:
            if a.type == AttributeProto.GRAPH:
                n += count_ops(a.g, op)
            elif a.type == AttributeProto.GRAPHS:
                n += sum(count_ops(g, op) for g in a.graphs)
    return n


def upgrade(model: Any, rewrites: list[str]) -> Any:
    """Old IR / opset: initializers listed as graph inputs (IR < 4) dropped from the inputs, opset raised
    to MIN_OPSET with onnx's version converter, the IR version raised to what the opset needs."""
    from onnx import helper, version_converter

    inits = {t.name for t in model.graph.initializer}
    listed = [i for i in model.graph.input if i.name in inits]
    if listed:
        for i in listed:
            model.graph.input.remove(i)
        rewrites.append(f"{len(listed)} initializer(s) also listed as graph inputs (IR < 4 style) are constants, "
                        "not inputs")
    old_ir, old = model.ir_version, opset(model)
    if old < MIN_OPSET:
        try:
            model = version_converter.convert_version(model, MIN_OPSET)
        except Exception as e:  # the converter raises plain RuntimeError / ValueError for ops it cannot adapt
            raise ModelError(
                f"the model uses ONNX opset {old}; per-channel INT8 needs opset >= {MIN_OPSET} and onnx's version "
                f"converter cannot upgrade it ({ort_reason(e)[:200]}); re-export it with opset 13 or newer"
            ) from e
        rewrites.append(f"opset {old} -> {MIN_OPSET} (onnx version converter; per-channel INT8 needs "
                        "DequantizeLinear's axis, opset 13)")
    need = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    if model.ir_version < need:
        model.ir_version = need
    if model.ir_version != old_ir:
        rewrites.append(f"IR version {old_ir} -> {model.ir_version}")
    return model


def _dims_text(dims: Any) -> str:
    from edgeq.onnx_files import onnx_dim

    return "[" + ", ".join(str(onnx_dim(d)) for d in dims) + "]"


def fix_inputs(model: Any, graph: GraphSpec, source: Path, rewrites: list[str], exported: bool = False) -> None:
    """Every fed input to the shape and dtype of edgeq.toml: each dynamic dimension (a name, an
    expression, -1, 0 or nothing) takes its size; a static one that disagrees is an error; an input
    with no declared shape takes edgeq.toml's; int64 token ids become int32 (a Cast after the input).
    ``exported``: edgeq's own exporter wrote the graph, which may have made a frozen input a constant already."""
    import onnx

    initializers = {t.name for t in model.graph.initializer}
    by_name = {i.name: i for i in model.graph.input if i.name not in initializers}
    wanted = [i.name for i in graph.inputs] + [f.name for f in graph.frozen]
    for name in wanted:
        if name not in by_name and not (exported and name in {f.name for f in graph.frozen}):
            raise ModelError(
                f"edgeq.toml names input '{name}' but the model's inputs are: {', '.join(by_name) or 'none'}; "
                "fix [[inputs]].name"
            )
    extra = [n for n in by_name if n not in wanted]
    if extra:
        raise ModelError(f"the model has inputs not listed in edgeq.toml: {', '.join(extra)}; add them to [[inputs]]")
    for spec_in in graph.inputs:
        vi = by_name[spec_in.name]
        tt = vi.type.tensor_type
        if tt.elem_type == onnx.TensorProto.INT64 and spec_in.dtype == "int32":
            _int32_input(model, spec_in.name)  # token ids are int32 on the device
        elif tt.elem_type != _ONNX_DTYPES[spec_in.dtype]:
            have = onnx.TensorProto.DataType.Name(tt.elem_type)
            raise ModelError(f"input '{spec_in.name}' is {have} in the model but {spec_in.dtype} in edgeq.toml")
        want = list(spec_in.shape)
        if not tt.HasField("shape"):
            rewrites.append(f"input '{spec_in.name}' declares no shape: {want} from edgeq.toml")
            tt.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=d) for d in want)
            continue
        dims = tt.shape.dim
        if len(dims) != len(want):
            raise ModelError(f"input '{spec_in.name}' has rank {len(dims)} in the model but shape {want} in edgeq.toml")
        for axis, (d, size) in enumerate(zip(dims, want, strict=True)):
            if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != size:
                raise ModelError(
                    f"input '{spec_in.name}' dimension {axis} is {d.dim_value} in the model but {size} in edgeq.toml"
                )
        before = _dims_text(dims)
        for d, size in zip(dims, want, strict=True):
            d.Clear()
            d.dim_value = size
        if before != str(want):
            rewrites.append(f"input '{spec_in.name}' {before} -> {want}")


def _int32_input(model: Any, name: str) -> None:
    """Make an int64 graph input int32 and cast it back to int64 for the nodes that read it.

    Exporters write token ids as int64; phones feed int32, and TFLite's int8 path wants int32
    indices. The ids are the same numbers, so one Cast at the input changes nothing else."""
    import onnx

    cast_out = f"{name}__edgeq_int64"
    for node in model.graph.node:
        for k, inp in enumerate(node.input):
            if inp == name:
                node.input[k] = cast_out
    for out in model.graph.output:
        if out.name == name:
            raise ModelError(f"input '{name}' is also a graph output; it cannot be made int32")
    cast = onnx.helper.make_node("Cast", [name], [cast_out], to=onnx.TensorProto.INT64, name=f"{name}__edgeq_cast")
    model.graph.node.insert(0, cast)
    next(i for i in model.graph.input if i.name == name).type.tensor_type.elem_type = onnx.TensorProto.INT32


def _frozen_array(f: FrozenInput, vi: Any) -> np.ndarray:
    """``f``'s value as an array of the model input's dtype; ModelError for the wrong dtype or shape."""
    from onnx import TensorProto, helper

    tt = vi.type.tensor_type
    elem = TensorProto.DataType.Name(tt.elem_type)
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"input '{f.name}' is {elem} in the model; edgeq cannot freeze an input of that type") from None
    given = np.array(f.value)
    ok = {"b": given.dtype.kind == "b", "i": given.dtype.kind in "iu", "u": given.dtype.kind in "iu",
          "f": given.dtype.kind in "iuf"}.get(dtype.kind, False)
    if not ok:
        what = {"b": "true or false", "i": "whole numbers", "u": "whole numbers", "f": "numbers"}.get(dtype.kind, elem)
        raise ModelError(f"input '{f.name}' is {elem} in the model; its value {f.value!r} must be {what}")
    arr = given.astype(dtype)
    if dtype.kind in "iu" and not np.array_equal(arr, given):
        raise ModelError(f"input '{f.name}' is {elem} in the model; its value {f.value!r} does not fit that type")
    if tt.HasField("shape"):
        dims = tt.shape.dim
        static = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
        if len(dims) != arr.ndim or any(s is not None and s != n for s, n in zip(static, arr.shape, strict=True)):
            raise ModelError(f"input '{f.name}' has shape {_dims_text(dims)} in the model; its value has shape "
                             f"{list(arr.shape)}: give a value of that shape")
    return arr


def freeze_inputs(model: Any, frozen: tuple[FrozenInput, ...], rewrites: list[str]) -> list[dict[str, Any]]:
    """Each frozen input becomes an initializer of the same name holding its value. Returns, per input,
    its name, dtype, shape and value (for model.json and the report)."""
    from onnx import numpy_helper

    out = []
    for f in frozen:
        vi = next((i for i in model.graph.input if i.name == f.name), None)
        if vi is None:  # edgeq's exporter was given the value and already made it a constant
            rewrites.append(f"input '{f.name}' frozen to {f.value!r}: the exporter made it a constant")
            out.append({"name": f.name, "dtype": np.array(f.value).dtype.name, "shape": list(np.shape(f.value)),
                        "value": f.value})
            continue
        arr = _frozen_array(f, vi)
        model.graph.input.remove(vi)
        model.graph.initializer.append(numpy_helper.from_array(arr, f.name))
        out.append({"name": f.name, "dtype": arr.dtype.name, "shape": list(arr.shape), "value": arr.tolist()})
        shown = repr(arr.tolist()) if arr.size <= 8 else f"a {list(arr.shape)} array"
        rewrites.append(f"input '{f.name}' frozen to {shown} ({arr.dtype.name}): a constant of the graph, not an input")
    return out


def check_ifs(model: Any, simplify_error: str | None) -> None:
    """ModelError naming every If left after folding and the graph inputs its condition depends on:
    onnx2tf cannot convert an If, so the condition must fold to a constant."""
    ifs = [n for n in model.graph.node if n.op_type == "If"]
    if not ifs:
        return
    producer = {o: n for n in model.graph.node for o in n.output}
    inputs = {i.name for i in model.graph.input}
    parts = []
    for node in ifs[:3]:
        deps, frontier, seen = set(), [node.input[0]], set()
        while frontier:
            name = frontier.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in inputs:
                deps.add(name)
            elif name in producer:
                frontier += [i for i in producer[name].input if i]
        on = (f"its condition depends on input{'s' if len(deps) > 1 else ''} {', '.join(repr(d) for d in sorted(deps))}"
              if deps else "its condition is not a constant")
        parts.append(f"'{node.name or '(unnamed)'}' ({on})")
    more = f" and {len(ifs) - 3} more" if len(ifs) > 3 else ""
    why = f" (onnxslim could not simplify the graph: {simplify_error[:200]})" if simplify_error else ""
    raise ModelError(
        f"{len(ifs)} If node(s) left after folding: {'; '.join(parts)}{more}{why}. onnx2tf cannot convert an If: "
        "fix the shapes of the inputs its condition reads, or freeze them with value = ... in their [[inputs]] table "
        "(or --input-value NAME=VALUE), so that the condition becomes a constant"
    )


def _feeds(model: Any, seed: int = 0, values: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Seeded feeds for every input of a fixed-shape graph: floats in [0, 1), integers 0, booleans False."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        shape = [d.dim_value for d in tt.shape.dim]
        feeds[i.name] = rng.random(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
    return {**feeds, **(values or {})}


def complete_output_shapes(model: Any, source: Path, rewrites: list[str]) -> Any:
    """Output shapes re-inferred from the fixed inputs; where onnx's shape inference cannot give one
    (a Reshape fed by computed shapes, an op it does not know), the shape onnxruntime computes."""
    import onnx

    with contextlib.suppress(Exception):  # metadata only: onnxruntime's run below gives the shapes it could not
        model = onnx.shape_inference.infer_shapes(model)

    def static(o: Any) -> bool:
        tt = o.type.tensor_type
        return tt.HasField("shape") and all(d.HasField("dim_value") and d.dim_value > 0 for d in tt.shape.dim)

    missing = [o for o in model.graph.output if not static(o)]
    if not missing:
        return model
    try:
        results = _session(model).run([o.name for o in missing], _feeds(model))
    except Exception as e:  # onnxruntime's own exception types
        raise ModelError(f"onnxruntime cannot run {source.name} with the shapes in edgeq.toml: {ort_reason(e)}") from e
    for o, r in zip(missing, results, strict=True):
        tt = o.type.tensor_type
        tt.ClearField("shape")
        tt.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=int(n)) for n in np.shape(r))
    rewrites.append("output shape(s) shape inference could not give, from onnxruntime: "
                    + ", ".join(f"'{o.name}' {list(np.shape(r))}" for o, r in zip(missing, results, strict=True)))
    return model


def check_same_function(original: bytes, rewritten: Any, frozen: list[dict[str, Any]], source: Path,
                        rewrites: list[str]) -> float | None:
    """Run the model as the user gave it (frozen inputs fed their values) and the rewritten graph on the
    same seeded feeds with onnxruntime; ModelError if any output differs beyond float rounding.
    Returns the largest difference relative to the output's range (None: nothing was rewritten)."""
    if not rewrites:
        return None
    import onnx

    feeds = _feeds(rewritten)
    # The reference is the model as given, its inputs declared with the sizes fed (onnxruntime takes a
    # declared 0 literally): nothing else of it changes.
    reference = onnx.load_model_from_string(original)
    for i in reference.graph.input:
        if i.name in feeds and i.type.tensor_type.HasField("shape"):
            i.type.tensor_type.ClearField("shape")
            i.type.tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=n) for n in feeds[i.name].shape)
    try:
        ref_sess = _session(reference)
    except Exception as e:
        raise ModelError(f"onnxruntime cannot load {source.name}: {ort_reason(e)}; re-export the model") from e
    ref_feeds = {}
    for i in ref_sess.get_inputs():
        value = next((np.array(f["value"], dtype=f["dtype"]) for f in frozen if f["name"] == i.name), None)
        if value is None:
            if i.name not in feeds:
                continue  # an optional input (an initializer listed as input) keeps its default
            want = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}.get(i.type)
            value = feeds[i.name].astype(want) if want is not None else feeds[i.name]
        ref_feeds[i.name] = value
    names = [o.name for o in rewritten.graph.output]
    try:
        ref = ref_sess.run(names, ref_feeds)
        got = _session(rewritten).run(names, feeds)
    except Exception as e:
        raise ModelError(f"onnxruntime cannot run {source.name} with the shapes in edgeq.toml: {ort_reason(e)}") from e
    worst = 0.0
    for name, a, b in zip(names, ref, got, strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            raise ModelError(f"edgeq's rewrites of {source.name} changed the shape of output '{name}' from "
                             f"{list(a.shape)} to {list(b.shape)} (after: {'; '.join(rewrites)}); report this")
        if a.size == 0:
            continue
        scale = max(float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 0.0, 1e-6)
        diff = float(np.nanmax(np.abs(a - b))) if np.isfinite(a - b).any() else 0.0
        if not np.array_equal(np.isnan(a), np.isnan(b)) or diff > 1e-3 * scale + 1e-5:
            raise ModelError(
                f"edgeq's rewrites of {source.name} changed what output '{name}' computes on onnxruntime: it differs "
                f"by {diff:.3g} (largest value {scale:.3g}) after: {'; '.join(rewrites)}; re-export the model with "
                "opset 17 fixed input shapes, or report this"
            )
        worst = max(worst, diff / scale)
    return worst
