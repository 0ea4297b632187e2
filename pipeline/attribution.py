"""Where quantization error comes from: every intermediate tensor of the INT8 ONNX model against the
float ONNX model, on the same feeds, and the tensors where the error *originates* ranked first.

Both models run on onnxruntime with every float tensor made an output (graph optimizations off, so
each node's own value is seen). A tensor of the float model is compared with its quantized version
in the QDQ model: ``<name>_DequantizeLinear_Output`` where the quantizer inserted one (the value the
next node really reads), else the tensor of the same name; a graph input with its quantized value.
Per tensor: SQNR, the mean SQNR of its channels (axis 1), cosine, the float range and the int8
scale. A node's *drop* is the channel SQNR its least accurate input carries (measured, or that of the
nearest measured tensors upstream) minus its output's: error that appears at that node, rather than
error carried in from before. The ranking is by drop; propagated error does not push a node up.

The same for a quantized .tflite against the float32 .tflite (``attribute_tflite``): both run on
LiteRT's builtin kernels with every tensor kept (``experimental_preserve_all_tensors``; no XNNPACK,
whose fused subgraphs keep no intermediates); a tensor of the quantized model is dequantized and
compared with the float model's tensor of the same name (the converter and litert-quantizer keep
names; a requantized copy, ``<name>_quantized...``, with its original). Channels are the last axis
(NHWC). A row names the op that writes the tensor; ``origin_ops`` turns the ranking into the ops to
give more precision.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.tflite_run import every_tensor

__all__ = ["MATCH_TOLERANCE", "MAX_SAMPLES", "attribute", "attribute_tflite", "onnx_nodes"]

MAX_SAMPLES = 32  # feeds run through both models (the first ones of the calibration set)
CLEAN_DB = 120.0  # the SQNR of a tensor without error (graph inputs, weights), for the drop
MATCH_TOLERANCE = 1e-3  # relative L2 distance of two tensors' sorted values that still makes them the same


class _Sums:
    """Sums over the samples, for the whole tensor and per channel (axis 1: NCHW's channels, a matrix's
    features): an outlier channel sets the scale and drowns the others, which the whole tensor's SQNR,
    dominated by that channel, does not show; the mean of the channels' SQNRs does."""

    def __init__(self, channel_axes: tuple[int, ...] = (1,)) -> None:
        self.channel_axes = channel_axes
        self.ref_sq = self.err_sq = self.dot = self.art_sq = 0.0
        self.lo, self.hi = math.inf, -math.inf
        self.ch_ref: dict[int, np.ndarray] | None = None  # channel axis -> per-channel sums
        self.ch_err: dict[int, np.ndarray] | None = None

    def update(self, r: np.ndarray, a: np.ndarray) -> None:
        r, a = r.astype(np.float64), a.astype(np.float64)
        d = r - a
        self.ref_sq += float((r * r).sum())
        self.art_sq += float((a * a).sum())
        self.dot += float((r * a).sum())
        self.err_sq += float((d * d).sum())
        if r.size:
            self.lo, self.hi = min(self.lo, float(r.min())), max(self.hi, float(r.max()))
        if self.ch_ref is None or self.ch_err is None:
            self.ch_ref, self.ch_err = {}, {}
        for axis in dict.fromkeys(a % r.ndim for a in self.channel_axes) if r.ndim >= 2 else ():
            rest = tuple(k for k in range(r.ndim) if k != axis)
            ref, err = (r * r).sum(axis=rest), (d * d).sum(axis=rest)
            if axis not in self.ch_ref or self.ch_ref[axis].shape != ref.shape:
                self.ch_ref[axis], self.ch_err[axis] = np.zeros(ref.shape), np.zeros(err.shape)
            self.ch_ref[axis] += ref
            self.ch_err[axis] += err

    def sqnr(self) -> float:
        """The whole tensor's SQNR in dB (``CLEAN_DB`` at most)."""
        return _db(self.ref_sq, self.err_sq)

    def channel_sqnr(self) -> float:
        """The mean, in dB, of the SQNR of every channel that carries signal (the lowest such mean over
        the channel axes measured)."""
        means = []
        for axis, ch_ref in (self.ch_ref or {}).items():
            live = ch_ref > 0
            if live.any():
                errs = (self.ch_err or {})[axis][live]
                means.append(float(np.mean([_db(r, e) for r, e in zip(ch_ref[live], errs, strict=True)])))
        return min(means) if means else self.sqnr()

    def cosine(self) -> float:
        """Cosine similarity of the whole tensor."""
        denom = math.sqrt(self.ref_sq * self.art_sq)
        return self.dot / denom if denom > 0 else (1.0 if self.err_sq == 0 else 0.0)


def _db(signal: float, noise: float) -> float:
    if noise == 0 or signal == 0:
        return CLEAN_DB
    return min(CLEAN_DB, 10.0 * math.log10(signal / noise))


def _session(model: Any, names: list[str]) -> Any:
    import onnx
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    have = {o.name for o in model.graph.output}
    model.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names if n not in have])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def attribute(float_onnx: Path, int8_onnx: Path, feeds: Iterable[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Every float tensor the two models share, with its SQNR, cosine, float range, int8 scale and drop;
    sorted by drop (the largest first), at most ``MAX_SAMPLES`` feeds."""
    import onnx
    from onnx import numpy_helper

    fm = onnx.load_model(str(float_onnx))
    qm = onnx.load_model(str(int8_onnx))
    q_names = {o for n in qm.graph.node for o in n.output}
    inits = {t.name: t for t in qm.graph.initializer}
    scales: dict[str, float] = {}
    for n in qm.graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 1 and n.input[1] in inits:
            scales[n.input[0]] = float(np.max(numpy_helper.to_array(inits[n.input[1]])))  # per channel: the widest
    pairs: dict[str, str] = {}  # float tensor -> its quantized counterpart in the QDQ model
    for n in fm.graph.node:
        for o in n.output:
            dq = f"{o}_DequantizeLinear_Output"
            if dq in q_names or o in q_names:
                pairs[o] = dq if dq in q_names else o
    # Graph inputs are quantized on entry too: their quantized value is what the first node reads.
    fed = {i.name: f"{i.name}_DequantizeLinear_Output" for i in fm.graph.input
           if f"{i.name}_DequantizeLinear_Output" in q_names}
    f_sess = _session(fm, list(pairs))
    q_sess = _session(qm, list(dict.fromkeys([*pairs.values(), *fed.values()])))
    f_out = [o.name for o in f_sess.get_outputs()]
    q_out = [o.name for o in q_sess.get_outputs()]
    sums = {f: _Sums() for f in [*pairs, *fed]}
    for k, feed in enumerate(feeds):
        if k >= MAX_SAMPLES:
            break
        fv = dict(zip(f_out, f_sess.run(f_out, feed), strict=True))
        qv = dict(zip(q_out, q_sess.run(q_out, feed), strict=True))
        for f, q in [*pairs.items(), *fed.items()]:
            r, a = np.asarray(feed[f] if f in fed else fv[f]), np.asarray(qv[q])
            if r.dtype.kind == "f" and r.shape == a.shape:
                sums[f].update(r, a)
    seen = {f for f, m in sums.items() if m.ref_sq or m.err_sq}
    # The SQNR a node's input carries: its own where measured, else that of the nearest measured
    # tensors upstream (graph inputs and weights are clean). ONNX nodes are in topological order.
    upstream: dict[str, float] = {i: sums[i].channel_sqnr() for i in fed}
    rows: list[dict[str, Any]] = []
    for n in fm.graph.node:
        carried = min((upstream.get(i, CLEAN_DB) for i in n.input if i), default=CLEAN_DB)
        for o in n.output:
            if o not in seen:
                upstream[o] = carried
                continue
            m = sums[o]
            upstream[o] = m.channel_sqnr()
            rows.append({"tensor": o, "node": n.name, "op": n.op_type, "index": len(rows), "sqnr_db": m.sqnr(),
                         "channel_sqnr_db": m.channel_sqnr(), "cosine": m.cosine(), "float_range": [m.lo, m.hi],
                         "scale": scales.get(o), "drop_db": carried - m.channel_sqnr()})
    rows.sort(key=lambda r: -r["drop_db"])
    return rows


_REQUANTIZED = re.compile(r"(_quantized(_io)?|_requantized)+$")


def _promotion(op: dict[str, Any], ops: list[dict[str, Any]], details: dict[int, dict[str, Any]]) -> list[str]:
    """The ops (by output tensor, as named in the float model) to give 16-bit activations to undo the
    error that appears at ``op``: the op (or, when it only changes type - a requantizing QUANTIZE,
    where the error is the scale its consumer asks for - that consumer) and the ops that read its
    output, through data-movement ops (a concatenation, a reshape) to the ops that compute with it,
    so that the tensor stays 16-bit between them; then every data-movement op downstream of those,
    which would otherwise requantize the result back to 8 bits."""
    from edgeq.tflite_inspect import DATA_MOVEMENT_OPS, TYPE_CHANGE_OPS

    readers: dict[int, list[dict[str, Any]]] = {}
    for o in ops:
        for i in o["inputs"]:
            readers.setdefault(int(i), []).append(o)

    def consumers(o: dict[str, Any]) -> list[dict[str, Any]]:  # the ops that read its outputs, through type changes
        found = []
        for t in o["outputs"]:
            for r in readers.get(int(t), []):
                found += consumers(r) if r["op_name"] in TYPE_CHANGE_OPS else [r]
        return found

    def reach(o: dict[str, Any]) -> list[dict[str, Any]]:  # its readers, and through data movement the ops computing with it
        found = []
        for r in consumers(o):
            found += [r, *reach(r)] if r["op_name"] in DATA_MOVEMENT_OPS else [r]
        return found

    # The tensor stays 16-bit only if its writer and the ops that compute with it all take 16-bit
    # activations (a concatenation between them too, or it requantizes to 8 bits for its readers). A
    # requantizing op's error is the scale its consumer asks for: that consumer is the origin then.
    origins = consumers(op) if op["op_name"] in TYPE_CHANGE_OPS else [op]
    chosen: dict[int, dict[str, Any]] = {o["index"]: o for o in origins}
    for o in origins:
        for r in reach(o):
            chosen.setdefault(r["index"], r)
    todo, seen = list(chosen.values()), set(chosen)
    while todo:
        for t in todo.pop()["outputs"]:
            for r in readers.get(int(t), []):
                if r["index"] not in seen and (r["op_name"] in DATA_MOVEMENT_OPS or r["op_name"] in TYPE_CHANGE_OPS):
                    seen.add(r["index"])
                    todo.append(r)
                    if r["op_name"] in DATA_MOVEMENT_OPS:
                        chosen[r["index"]] = r
    names = [_REQUANTIZED.sub("", details[int(o["outputs"][0])]["name"]) for o in chosen.values() if len(o["outputs"])]
    return list(dict.fromkeys(names))


def _as_inputs_of(model: bytes, signature: str, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The float feeds quantized for the inputs of ``model`` that are int8 / int16 (a build with int8
    model I/O), with each input's own scale and zero point; other inputs as they are."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeq.tflite_io import quantize

    details = Interpreter(model_content=model).get_signature_runner(signature).get_input_details()
    wanted = {name: d for name, d in details.items() if np.dtype(d["dtype"]).kind == "i" and d["quantization"][0]}

    def one(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: quantize(v, {"scale": wanted[k]["quantization"][0], "zero_point": wanted[k]["quantization"][1]},
                            np.dtype(wanted[k]["dtype"]).name) if k in wanted and v.dtype.kind == "f" else v
                for k, v in feed.items()}

    return [one(f) for f in feeds]


def attribute_tflite(float_tflite: bytes, quant_tflite: bytes, signature: str, feeds: Iterable[dict[str, np.ndarray]],
                     onnx_map: dict[str, dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """Every activation of the quantized .tflite that has a float32 twin, with its SQNR, mean channel
    SQNR, cosine, float range, scale and drop; sorted by drop. ``feeds``: the signature's arguments.
    ``onnx_map`` (``onnx_nodes``): each row gets ``onnx_node``, the ONNX node its float twin maps to."""
    feeds = list(itertools.islice(feeds, MAX_SAMPLES))
    f_run = every_tensor(float_tflite, signature, feeds)
    q_run = every_tensor(quant_tflite, signature, _as_inputs_of(quant_tflite, signature, feeds))
    f_interp, f_list, f_ops = next(f_run)
    q_interp, q_list, q_ops = next(q_run)
    f_details = {d["index"]: d for d in f_list}
    q_details = {d["index"]: d for d in q_list}
    f_active = {o for op in f_ops for o in op["outputs"]} | {d["index"] for d in f_interp.get_input_details()}
    f_index = {d["name"]: d["index"] for d in f_details.values() if d["dtype"] == np.float32 and d["index"] in f_active}
    inputs = {d["index"] for d in q_interp.get_input_details()}
    twin: dict[int, int] = {}  # quantized activation -> float activation
    for i in inputs:
        if q_details[i]["name"] in f_index:
            twin[i] = f_index[q_details[i]["name"]]
    for op in q_ops:  # in execution order: a type change takes its input's twin when it has none of its own
        for o in op["outputs"]:
            name = q_details[o]["name"]
            name = name if name in f_index else _REQUANTIZED.sub("", name)
            if name in f_index and q_details[o]["dtype"] != np.int32 \
                    and list(f_details[f_index[name]]["shape"]) == list(q_details[o]["shape"]):
                twin[o] = f_index[name]
            elif op["op_name"] in ("QUANTIZE", "DEQUANTIZE") and op["inputs"][0] in twin:
                twin[o] = twin[op["inputs"][0]]
    # channels: the last axis (NHWC), and axis 1 too for tensors of 3 or more axes ([1, 4 + C, N])
    sums = {q: _Sums(channel_axes=(1, -1)) for q in twin}
    for _ in feeds:
        next(f_run)
        next(q_run)
        for q, f in list(twin.items()):
            try:
                r = np.asarray(f_interp.get_tensor(f))
                a = np.asarray(q_interp.get_tensor(q))
            except ValueError:  # "Tensor data is null": a tensor LiteRT did not keep (an unrolled loop's)
                del twin[q]
                sums.pop(q, None)
                continue
            qp = q_details[q]["quantization_parameters"]
            if a.dtype != np.float32 and len(qp["scales"]):
                a = (a.astype(np.float64) - qp["zero_points"].astype(np.float64)) * qp["scales"].astype(np.float64)
            if r.shape == a.shape:
                sums[q].update(r, a)
    upstream: dict[int, float] = {}
    rows = []
    for op in q_ops:
        carried = min((upstream.get(i, CLEAN_DB) for i in op["inputs"] if i >= 0), default=CLEAN_DB)
        for o in op["outputs"]:
            m = sums.get(o)
            if m is None or not (m.ref_sq or m.err_sq):
                upstream[o] = carried
                continue
            upstream[o] = m.channel_sqnr()
            if op["op_name"] in ("QUANTIZE", "DEQUANTIZE") and set(op["inputs"]) & inputs:
                continue  # the model input, quantized on entry: no op of the graph to promote
            qp = q_details[o]["quantization_parameters"]
            rows.append({"tensor": q_details[o]["name"], "op_index": op["index"], "op": op["op_name"],
                         "promote": _promotion(op, q_ops, q_details),
                         "dtype": np.dtype(q_details[o]["dtype"]).name, "sqnr_db": m.sqnr(),
                         "channel_sqnr_db": m.channel_sqnr(), "cosine": m.cosine(), "float_range": [m.lo, m.hi],
                         "scale": float(np.max(qp["scales"])) if len(qp["scales"]) else None,
                         "drop_db": carried - m.channel_sqnr()})
            if onnx_map is not None:
                rows[-1]["onnx_node"] = onnx_map.get(f_details[twin[o]]["name"])
    rows.sort(key=lambda r: -r["drop_db"])
    return rows


def onnx_nodes(float_onnx: Path, float_tflite: bytes, signature: str, onnx_feed: dict[str, np.ndarray],
               tflite_feed: dict[str, np.ndarray]) -> dict[str, dict[str, str]]:
    """Each float32 tensor an op of the .tflite writes, mapped to the ONNX node that computes the same
    values: ``{tflite tensor name: {"node": ONNX node name, "op": its op type}}``. The converter fuses
    (Conv + Relu is one CONV_2D), renames and moves layouts (NCHW to NHWC), so names cannot tell; the
    values can: both float models run on one feed, and a tensor matches an ONNX output of the same size
    whose sorted values (a layout change only permutes them) are within ``MATCH_TOLERANCE`` (relative
    L2). Of several, the first node in the graph's order: the one that computes the values, before
    reshapes and transposes carry them on. A tensor without such a node is left out."""
    import onnx

    fm = onnx.load_model(str(float_onnx))
    node_of = {o: n for n in fm.graph.node for o in n.output if o}
    sess = _session(fm, list(node_of))
    names = [o.name for o in sess.get_outputs()]
    by_size: dict[int, list[tuple[int, str, np.ndarray, float]]] = {}
    order = {o: k for k, o in enumerate(node_of)}
    for name, value in zip(names, sess.run(names, onnx_feed), strict=True):
        v = np.asarray(value)
        if v.dtype.kind != "f" or name not in node_of or not v.size:
            continue
        flat = np.sort(v.astype(np.float64).ravel())
        by_size.setdefault(flat.size, []).append((order[name], name, flat, float(np.linalg.norm(flat))))
    run = every_tensor(float_tflite, signature, [tflite_feed])
    interp, details, ops = next(run)
    next(run)
    by_index = {d["index"]: d for d in details}
    found: dict[str, dict[str, str]] = {}
    for op in ops:
        for t in op["outputs"]:
            d = by_index[int(t)]
            if d["dtype"] != np.float32:
                continue
            try:
                flat = np.sort(np.asarray(interp.get_tensor(int(t)), dtype=np.float64).ravel())
            except ValueError:  # not kept by LiteRT
                continue
            own = float(np.linalg.norm(flat))
            for _, name, ref, norm in sorted(by_size.get(flat.size, []), key=lambda c: c[0]):
                limit = MATCH_TOLERANCE * max(norm, 1e-12)
                # | |a| - |b| | <= |a - b|: most candidates are ruled out without the subtraction
                if abs(own - norm) <= limit and np.linalg.norm(flat - ref) <= limit:
                    node = node_of[name]
                    found[d["name"]] = {"node": node.name or name, "op": node.op_type}
                    break
    return found
