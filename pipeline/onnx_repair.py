"""From a model onnxruntime runs to the fixed-shape graph edgeq converts: metadata repaired, input
shapes fixed, inputs frozen, shape logic folded, every change listed.

Rules:

* onnxruntime is the authority on what a valid model is. A model it cannot load is refused with its
  own reason (``ort_check``). What onnx's checker or shape inference alone objects to - value_info
  without a shape or with stale shapes, dimensions with neither value nor name, ``-1`` / ``0`` sizes,
  an old IR version or opset - is repaired here, never refused, and each repair is one line of the
  list the report shows (``export.graphs.<g>.rewrites``).
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

import re
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.config import FrozenInput, GraphSpec
from edgeq.errors import ModelError

__all__ = ["MIN_OPSET", "check_ifs", "check_same_function", "complete_output_shapes", "count_ops", "declared_shapes",
           "fix_inputs", "freeze_inputs", "opset", "ort_check", "ort_reason", "stale_shapes", "tf_node_names",
           "tidy_slices", "unroll_lstms", "upgrade"]

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

    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # metadata only: onnxruntime's run below gives the shapes inference could not
        pass

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


_TF_SCOPE = re.compile(r"^[A-Za-z0-9_.\\/>-]*$")


def tf_node_names(model: Any, rewrites: list[str]) -> None:
    """Node names TensorFlow accepts as scope names (onnx2tf names its ops after the nodes): other
    characters become '_', kept unique. Only node names change; tensor names and values do not."""
    taken = {n.name for n in model.graph.node}
    renamed = []
    for n in model.graph.node:
        if _TF_SCOPE.match(n.name):
            continue
        new = re.sub(r"[^A-Za-z0-9_.\\/>-]", "_", n.name)
        if new[:1] in (".", "/", "\\", ">", "-"):
            new = "_" + new
        base, k = new, 1
        while new in taken:
            new, k = f"{base}_{k}", k + 1
        taken.add(new)
        renamed.append((n.name, new))
        n.name = new
    if renamed:
        more = f" and {len(renamed) - 3} more" if len(renamed) > 3 else ""
        shown = ", ".join(f"'{a}' -> '{b}'" for a, b in renamed[:3]) + more
        rewrites.append(f"{len(renamed)} node name(s) made valid TensorFlow scope names ({shown})")


def _shapes(model: Any) -> dict[str, list[int]]:
    """Static shapes of the graph's tensors, as far as onnx's shape inference knows them."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # metadata only: a tensor without a known shape is simply left out
        inferred = model
    out = {}
    for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        tt = v.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") and d.dim_value > 0 for d in tt.shape.dim):
            out[v.name] = [d.dim_value for d in tt.shape.dim]
    return out


def unroll_lstms(model: Any, rewrites: list[str]) -> None:
    """Each ONNX LSTM with a static sequence length (a streaming cell has length 1), default gate
    activations, constant weights and no peepholes, clip or sequence lengths is written out step by
    step as the function the ONNX spec defines: per step gates = x W^T + h R^T + Wb + Rb, split
    i, o, f, c; c' = f * c + i * tanh(c~); h' = o * tanh(c'). These ops have int8 kernels; onnx2tf's
    own LSTM conversion fails on a state fed as a graph input and would not be int8."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    shapes = _shapes(model)
    count = 0
    new_nodes: list[Any] = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        ins = list(node.input) + [""] * (8 - len(node.input))
        x, w, r, b, seq_lens, h0, c0, peep = ins[:8]
        ok = (node.op_type == "LSTM" and node.domain in ("", "ai.onnx") and x in shapes and w in inits and r in inits
              and (not b or b in inits) and not seq_lens and not peep and attrs.get("layout", 0) == 0
              and not attrs.get("input_forget", 0) and "clip" not in attrs
              and [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
              in ([], ["Sigmoid", "Tanh", "Tanh"], ["Sigmoid", "Tanh", "Tanh"] * 2))
        if not ok:
            new_nodes.append(node)
            continue
        count += 1
        p = f"{node.name or 'lstm'}__edgeq"
        steps, batch, _ = shapes[x]
        W, R = numpy_helper.to_array(inits[w]), numpy_helper.to_array(inits[r])
        hidden = R.shape[-1]
        B = numpy_helper.to_array(inits[b]) if b else np.zeros((W.shape[0], 8 * hidden), np.float32)
        direction = attrs.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        consts = {f"{p}/sizes": np.array([hidden] * 4, np.int64), f"{p}/axes0": np.array([0], np.int64),
                  f"{p}/axes01": np.array([0, 1], np.int64)}
        consts.update({f"{p}/idx{k}": np.array(k, np.int64) for k in range(max(steps, len(dirs)))})
        if not h0 or not c0:
            consts[f"{p}/zeros"] = np.zeros((batch, hidden), np.float32)
        finals_h, finals_c, per_dir = [], [], []
        for d, name in enumerate(dirs):
            q = f"{p}/d{d}"
            consts[f"{q}/Wt"] = np.ascontiguousarray(W[d].T)
            consts[f"{q}/Rt"] = np.ascontiguousarray(R[d].T)
            consts[f"{q}/bias"] = (B[d, : 4 * hidden] + B[d, 4 * hidden :]).astype(np.float32)
            h = c = f"{p}/zeros"
            if h0:
                new_nodes.append(helper.make_node("Gather", [h0, f"{p}/idx{d}"], [f"{q}/h0"], axis=0, name=f"{q}/h0"))
                h = f"{q}/h0"
            if c0:
                new_nodes.append(helper.make_node("Gather", [c0, f"{p}/idx{d}"], [f"{q}/c0"], axis=0, name=f"{q}/c0"))
                c = f"{q}/c0"
            outs = []
            order = range(steps) if name == "forward" else reversed(range(steps))
            for t in order:
                s = f"{q}/t{t}"
                new_nodes += [
                    helper.make_node("Gather", [x, f"{p}/idx{t}"], [f"{s}/x"], axis=0, name=f"{s}/x"),
                    helper.make_node("MatMul", [f"{s}/x", f"{q}/Wt"], [f"{s}/xw"], name=f"{s}/xw"),
                    helper.make_node("MatMul", [h, f"{q}/Rt"], [f"{s}/hr"], name=f"{s}/hr"),
                    helper.make_node("Add", [f"{s}/xw", f"{s}/hr"], [f"{s}/sum"], name=f"{s}/sum"),
                    helper.make_node("Add", [f"{s}/sum", f"{q}/bias"], [f"{s}/gates"], name=f"{s}/gates"),
                    helper.make_node("Split", [f"{s}/gates", f"{p}/sizes"], [f"{s}/{g}" for g in "iofc"], axis=1,
                                     name=f"{s}/split"),
                    *[helper.make_node("Sigmoid", [f"{s}/{g}"], [f"{s}/{g}s"], name=f"{s}/{g}s") for g in "iof"],
                    helper.make_node("Tanh", [f"{s}/c"], [f"{s}/ct"], name=f"{s}/ct"),
                    helper.make_node("Mul", [f"{s}/fs", c], [f"{s}/keep"], name=f"{s}/keep"),
                    helper.make_node("Mul", [f"{s}/is", f"{s}/ct"], [f"{s}/new"], name=f"{s}/new"),
                    helper.make_node("Add", [f"{s}/keep", f"{s}/new"], [f"{s}/cN"], name=f"{s}/cN"),
                    helper.make_node("Tanh", [f"{s}/cN"], [f"{s}/cNt"], name=f"{s}/cNt"),
                    helper.make_node("Mul", [f"{s}/os", f"{s}/cNt"], [f"{s}/hN"], name=f"{s}/hN"),
                ]
                h, c = f"{s}/hN", f"{s}/cN"
                outs.append(h)
            if name == "reverse":
                outs.reverse()
            y = f"{q}/Y"
            new_nodes += [helper.make_node("Unsqueeze", [o, f"{p}/axes01"], [f"{o}4"], name=f"{o}4") for o in outs]
            new_nodes.append(helper.make_node("Concat", [f"{o}4" for o in outs], [y], axis=0, name=y))  # [T, 1, B, H]
            per_dir.append(y)
            for final, into in ((h, finals_h), (c, finals_c)):
                new_nodes.append(helper.make_node("Unsqueeze", [final, f"{p}/axes0"], [f"{final}3"], name=f"{final}3"))
                into.append(f"{final}3")
        outputs = list(node.output) + [""] * (3 - len(node.output))
        for out, parts, axis in ((outputs[0], per_dir, 1), (outputs[1], finals_h, 0), (outputs[2], finals_c, 0)):
            if out:
                new_nodes.append(helper.make_node("Concat", parts, [out], axis=axis, name=f"{p}/{out}"))
        model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    if count:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        rewrites.append(f"LSTM x{count} written out step by step (MatMul, Sigmoid, Tanh, Mul, Add: the same function, "
                        "ops with int8 kernels)")



def tidy_slices(model: Any, rewrites: list[str]) -> None:
    """A constant Slice keeps only the axes it really cuts, with ends clamped to the dimension (the same
    values). Exporters write every axis (start 0, end INT64_MAX); onnx2tf, which holds a Conv1d output
    channels-last, then cuts the wrong axis of it."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    shapes = _shapes(model)

    def const(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]).astype(np.int64) if name in inits else None

    n = 0
    for node in model.graph.node:
        if node.op_type != "Slice" or node.input[0] not in shapes or len(node.input) < 4:
            continue
        dims = shapes[node.input[0]]
        starts, ends, axes = const(node.input[1]), const(node.input[2]), const(node.input[3])
        steps = const(node.input[4]) if len(node.input) > 4 and node.input[4] else np.ones_like(starts)
        if starts is None or ends is None or axes is None or steps is None:
            continue
        keep = []
        for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
            size = dims[a]
            trivial = st == 1 and (s == 0 or s <= -size) and e >= size
            if not trivial:
                keep.append((int(s), int(min(e, size)) if st > 0 else int(e), int(a) % len(dims), int(st)))
        if len(keep) == len(starts) and all(e == k[1] for e, k in zip(ends, keep, strict=True)):
            continue
        if not keep:
            node.op_type = "Identity"
            del node.input[1:]
        else:
            base = f"{node.name or node.output[0]}__edgeq"
            for k, part in enumerate(("starts", "ends", "axes", "steps")):
                model.graph.initializer.append(numpy_helper.from_array(np.array([v[k] for v in keep], np.int64),
                                                                       f"{base}_{part}"))
            del node.input[1:]
            node.input.extend(f"{base}_{part}" for part in ("starts", "ends", "axes", "steps"))
        n += 1
    if n:
        rewrites.append(f"Slice x{n}: only the axes each one cuts, ends clamped (the same values; onnx2tf cuts the "
                        "wrong axis of a channels-last tensor when a Slice names every axis)")


def declared_shapes(model: Any) -> dict[str, list[int | str] | None]:
    """The shapes the file declares for its intermediate tensors (value_info) and outputs: None for a
    declaration without a shape; a dynamic dimension as ``onnx_dim`` writes it."""
    from edgeq.onnx_files import onnx_dim

    out: dict[str, list[int | str] | None] = {}
    for v in (*model.graph.value_info, *model.graph.output):
        tt = v.type.tensor_type
        out[v.name] = [onnx_dim(d) for d in tt.shape.dim] if tt.HasField("shape") else None
    return out


def stale_shapes(declared: dict[str, list[int | str] | None], model: Any) -> list[str]:
    """One line for the declarations the repaired model contradicts: a tensor declared with no shape, a
    different rank, or a static size other than the one inferred from the fixed inputs. Declarations
    that merely left a dimension dynamic are not wrong and not listed."""
    final = _shapes(model)
    missing = [n for n, dims in declared.items() if dims is None]
    wrong = [(n, dims, final[n]) for n, dims in declared.items() if dims is not None and n in final
             and (len(dims) != len(final[n]) or any(isinstance(d, int) and d != f for d, f in zip(dims, final[n],
                                                                                              strict=True)))]
    lines = []
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        lines.append(f"{len(missing)} tensor(s) declared without a shape ({', '.join(repr(n) for n in missing[:3])}{more}): "
                     "shapes inferred")
    if wrong:
        shown = "; ".join(f"'{n}' declared {d}, is {f}" for n, d, f in wrong[:3])
        more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
        lines.append(f"{len(wrong)} stale or contradictory shape declaration(s) replaced by the inferred shapes: {shown}{more}")
    return lines
