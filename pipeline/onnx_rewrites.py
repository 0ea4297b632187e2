"""Rewrites of a valid ONNX graph for the converter and for int8 kernels; each one is listed.

* ``tf_node_names``: node names TensorFlow refuses as scope names get '_' (onnx2tf names its ops
  after the nodes); tensor names and values do not change.
* ``unroll_lstms``: an LSTM with a static sequence length written out step by step as the function
  the ONNX spec defines, with ops that have int8 kernels (onnx2tf's own LSTM conversion fails on a
  state fed as a graph input and would not be int8).
* ``tidy_slices``: a constant Slice keeps only the axes it really cuts, its ends clamped (onnx2tf
  would cut the wrong axis of a channels-last tensor otherwise).

``declared_shapes`` / ``stale_shapes``: the shapes the model declared before, and the ones the
rewrites made wrong (listed, then dropped from the graph's metadata).

Every rewrite keeps what the graph computes; export checks that on onnxruntime afterwards
(edgeq.onnx_repair.check_same_function).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from edgeq.onnx_files import inferred_shapes

__all__ = ["declared_shapes", "stale_shapes", "tf_node_names", "tidy_slices", "unroll_lstms"]


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


def unroll_lstms(model: Any, rewrites: list[str]) -> None:
    """Each ONNX LSTM with a static sequence length (a streaming cell has length 1), default gate
    activations, constant weights and no peepholes, clip or sequence lengths is written out step by
    step as the function the ONNX spec defines: per step gates = x W^T + h R^T + Wb + Rb, split
    i, o, f, c; c' = f * c + i * tanh(c~); h' = o * tanh(c'). These ops have int8 kernels; onnx2tf's
    own LSTM conversion fails on a state fed as a graph input and would not be int8."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    shapes = inferred_shapes(model)
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
        W, R = numpy_helper.to_array(inits[w]), numpy_helper.to_array(inits[r])  # noqa: N806  (the ONNX spec's names)
        hidden = R.shape[-1]
        B = numpy_helper.to_array(inits[b]) if b else np.zeros((W.shape[0], 8 * hidden), np.float32)  # noqa: N806
        direction = attrs.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        consts = {f"{p}/sizes": np.array([hidden] * 4, np.int64), f"{p}/axes0": np.array([0], np.int64),
                  f"{p}/axes01": np.array([0, 1], np.int64)}
        consts.update({f"{p}/idx{k}": np.array(k, np.int64) for k in range(max(steps, len(dirs)))})
        if not h0 or not c0:
            consts[f"{p}/zeros"] = np.zeros((batch, hidden), np.float32)
        finals_h: list[str] = []
        finals_c: list[str] = []
        per_dir = []
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
    shapes = inferred_shapes(model)

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
    final = inferred_shapes(model)
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
