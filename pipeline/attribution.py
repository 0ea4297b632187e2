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
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAX_SAMPLES", "attribute"]

MAX_SAMPLES = 32  # feeds run through both models (the first ones of the calibration set)
CLEAN_DB = 120.0  # the SQNR of a tensor without error (graph inputs, weights), for the drop


class _Sums:
    """Sums over the samples, for the whole tensor and per channel (axis 1: NCHW's channels, a matrix's
    features): an outlier channel sets the scale and drowns the others, which the whole tensor's SQNR,
    dominated by that channel, does not show; the mean of the channels' SQNRs does."""

    def __init__(self) -> None:
        self.ref_sq = self.err_sq = self.dot = self.art_sq = 0.0
        self.lo, self.hi = math.inf, -math.inf
        self.ch_ref: np.ndarray | None = None
        self.ch_err: np.ndarray | None = None

    def update(self, r: np.ndarray, a: np.ndarray) -> None:
        r, a = r.astype(np.float64), a.astype(np.float64)
        d = r - a
        self.ref_sq += float((r * r).sum())
        self.art_sq += float((a * a).sum())
        self.dot += float((r * a).sum())
        self.err_sq += float((d * d).sum())
        if r.size:
            self.lo, self.hi = min(self.lo, float(r.min())), max(self.hi, float(r.max()))
        axes = tuple(k for k in range(r.ndim) if k != 1) if r.ndim >= 2 else tuple(range(r.ndim))
        ref, err = (r * r).sum(axis=axes), (d * d).sum(axis=axes)
        if self.ch_ref is None or self.ch_err is None or self.ch_ref.shape != np.shape(ref):
            self.ch_ref, self.ch_err = np.zeros(np.shape(ref)), np.zeros(np.shape(err))
        self.ch_ref += ref
        self.ch_err += err

    def sqnr(self) -> float:
        """The whole tensor's SQNR in dB (``CLEAN_DB`` at most)."""
        return _db(self.ref_sq, self.err_sq)

    def channel_sqnr(self) -> float:
        """The mean, in dB, of the SQNR of every channel that carries signal."""
        if self.ch_ref is None or self.ch_err is None:
            return self.sqnr()
        live = self.ch_ref > 0
        return float(np.mean([_db(r, e) for r, e in zip(self.ch_ref[live], self.ch_err[live], strict=True)])) \
            if live.any() else self.sqnr()

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
    rows = []
    for n in fm.graph.node:
        carried = min((upstream.get(i, CLEAN_DB) for i in n.input if i), default=CLEAN_DB)
        for o in n.output:
            if o not in seen:
                upstream[o] = carried
                continue
            m = sums[o]
            upstream[o] = m.channel_sqnr()
            rows.append({"tensor": o, "node": n.name, "op": n.op_type, "sqnr_db": m.sqnr(),
                         "channel_sqnr_db": m.channel_sqnr(), "cosine": m.cosine(), "float_range": [m.lo, m.hi],
                         "scale": scales.get(o), "drop_db": carried - m.channel_sqnr()})
    rows.sort(key=lambda r: -r["drop_db"])
    return rows
