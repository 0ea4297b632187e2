"""export: the user's model -> float ONNX with the fixed input shapes from edgeq.toml, checked and simplified.

Rules:

* PyTorch models are rebuilt from their code and loaded from weights without pickle
  (safetensors, or ``torch.load(weights_only=True)`` for .pt/.pth), then exported with the
  TorchScript-based exporter at a fixed opset (deterministic: same weights, same bytes), in a
  child process (``_torch_export_child``), as Keras / SavedModel go through tf2onnx in theirs
  (``_tf_export_child``): the user's code, torch and TensorFlow never run in edgeq's process.
* ONNX models keep their graph. onnxruntime decides whether a model is valid; metadata that only
  onnx's checker objects to is repaired, inputs get their shapes from edgeq.toml and frozen inputs
  become constants (``edgeq.onnx_repair``). The graph is simplified with onnxslim (shape logic and
  If nodes whose conditions became constant fold away), its outputs restricted to edgeq.toml's
  [[outputs]] when it lists them, and then compared with the model on onnxruntime: every rewrite
  keeps what it computes, and each is listed in the report.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from edgeq.artifacts import Artifact
from edgeq.config import GraphSpec
from edgeq.context import BuildContext
from edgeq.errors import ModelError
from edgeq.hashing import sha256_files
from edgeq.onnx_files import check_weights_fit, load_onnx_checked
from edgeq.results import ExportResult

__all__ = ["OPSET", "STAGE", "ExportStage"]

OPSET = 17


class ExportStage:
    """The export stage: the model to each graph's float ONNX, repaired, fixed-shape and simplified."""

    name = "export"
    cacheable = True  # its outputs are kept in the stage cache (edgeq.runner)
    requires: tuple[str | type, ...] = ()
    produces = ("onnx_float", ExportResult)

    def run(self, ctx: BuildContext) -> ExportResult:
        """Export the model to ONNX (in a child process unless it is ONNX) and add each graph's float ONNX."""
        spec = ctx.spec
        confinement = None  # the export child's write confinement (ONNX models need no child)
        if spec.format == "pytorch":
            confinement = _export_pytorch(ctx)  # every graph at once: the model is loaded once
        graphs = {}
        for graph in spec.graphs:
            if spec.format in ("keras", "saved_model"):
                confinement = _export_tf(ctx, graph, ctx.build_dir / f"{graph.name}.exported.onnx")
            graphs[graph.name] = self._graph(ctx, graph)
        return ExportResult(sha256_files(spec.source_files), graphs, confinement)

    def _graph(self, ctx: BuildContext, graph: GraphSpec) -> dict[str, Any]:
        import onnx

        from edgeq.onnx_repair import (
            check_ifs,
            check_same_function,
            complete_output_shapes,
            count_ops,
            fix_inputs,
            freeze_inputs,
            opset,
            ort_check,
            upgrade,
        )
        from edgeq.onnx_rewrites import declared_shapes, stale_shapes, tf_node_names, tidy_slices, unroll_lstms

        raw = ctx.build_dir / f"{graph.name}.exported.onnx"
        if ctx.spec.format in ("pytorch", "keras", "saved_model"):  # written by the export child
            source = ctx.spec.file
            model = _load_onnx(raw, source)
        else:
            source = graph.file
            model = load_onnx_checked(source)  # external data checked to stay in the model's folder
        original = model.SerializeToString()
        ort_check(original, source)  # onnxruntime, not onnx's checker, decides what a valid model is
        rewrites: list[str] = []
        declared = declared_shapes(model)  # value_info and outputs as the file declares them
        model = upgrade(model, rewrites)
        fix_inputs(model, graph, source, rewrites, exported=ctx.spec.format != "onnx")
        frozen = freeze_inputs(model, graph.frozen, rewrites)
        model = _select_outputs(model, graph)
        del model.graph.value_info[:]
        for o in model.graph.output:  # re-inferred from the fixed inputs
            if o.type.HasField("tensor_type"):
                o.type.tensor_type.ClearField("shape")
        ifs = count_ops(model.graph, "If")
        model, slim_error = _simplify(model)
        check_ifs(model, slim_error)
        if ifs:
            rewrites.append(f"If x{ifs}: each condition became a constant once shapes were fixed and inputs frozen; "
                            "replaced by its branch (onnxslim)")
        unroll_lstms(model, rewrites)
        tidy_slices(model, rewrites)
        rewrites += _fuse_exact_gelu(model) + _int8_friendly(model)
        tf_node_names(model, rewrites)
        model = complete_output_shapes(model, source, rewrites)
        _check_declared_slices(model, graph)
        rewrites += stale_shapes(declared, model)
        drift = check_same_function(original, model, frozen, source, rewrites)
        check_weights_fit(model, source)  # before writing: the float32 .tflite must hold these tensors
        out = ctx.build_dir / f"{graph.name}.float.onnx"
        onnx.save_model(model, str(out))
        outputs = [o.name for o in model.graph.output]
        task_out = ctx.spec.task.output
        if task_out is not None and len(ctx.spec.graphs) == 1 and task_out not in outputs:
            raise ModelError(f"[task].output '{task_out}' is not an output of {source.name}; its outputs: {', '.join(outputs)}")
        ctx.add(Artifact("onnx_float", out, "onnx", "float32", {"outputs": outputs}, graph=graph.name))
        return {"opset": opset(model), "outputs": outputs, "nodes": len(model.graph.node), "rewrites": rewrites,
                "frozen_inputs": frozen, "rewrite_max_rel_diff": drift}


STAGE = ExportStage()


def _check_declared_slices(model: Any, graph: GraphSpec) -> None:
    """edgeq.toml's [[outputs]] axis and slices against the outputs' shapes, before any conversion."""
    from edgeq.tasks.metrics import check_declared_slices

    shapes = {o.name: tuple(d.dim_value if d.HasField("dim_value") else 0 for d in o.type.tensor_type.shape.dim)
              for o in model.graph.output if o.type.HasField("tensor_type") and o.type.tensor_type.HasField("shape")}
    for spec in graph.outputs:
        if spec.slices and spec.name in shapes:
            check_declared_slices(spec.name, (spec.axis, spec.slices), shapes[spec.name])

def _load_onnx(path: Path, source: Path) -> Any:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelError(f"{source.name} is not a readable ONNX file ({type(e).__name__}); re-export the model") from e
    if not model.graph.node:
        raise ModelError(f"{source.name} has an empty graph; re-export the model")
    return model


def _export_tf(ctx: BuildContext, graph: GraphSpec, out: Path) -> str:
    """Keras / SavedModel -> ONNX with tf2onnx, in a child process (``_tf_export_child``) whose writes are
    confined to the build folder. Returns the child's confinement status."""
    from edgeq._proc import exit_text, run_job

    job = {"format": ctx.spec.format, "path": str(ctx.spec.file), "out": str(out), "trust": ctx.trust_model,
           "inputs": graph.declared_inputs(), "confine": str(ctx.build_dir)}
    code, result = run_job("edgeq.stages._tf_export_child", job, ctx.build_dir / "export.job.json",
                           ctx.build_dir / "export.log")
    name = ctx.spec.file.name
    if result is None:
        raise ModelError(f"converting {name} to ONNX {exit_text(code)}; see export.log with --keep-build")
    if not result["ok"]:
        raise ModelError(f"converting {name} to ONNX failed: {result['error']} (export.log with --keep-build)")
    return str(result.get("confinement", "not confined: the export child did not say"))


def _export_pytorch(ctx: BuildContext) -> str:
    """Every graph of a PyTorch model -> ``<graph>.exported.onnx``, in a child process (``_torch_export_child``)
    whose writes are confined to the build folder. Returns the child's confinement status."""
    from edgeq._proc import exit_text, run_job

    if importlib.util.find_spec("torch") is None:
        raise ModelError("format = 'pytorch' needs torch: pip install 'edgeq[torch]'")
    spec = ctx.spec
    assert spec.file is not None and spec.weights is not None
    job = {
        "file": str(spec.file), "class_name": spec.class_name, "init_args": spec.init_args,
        "weights": str(spec.weights), "opset": OPSET,
        "graphs": [{"name": g.name, "method": g.method, "out": str(ctx.build_dir / f"{g.name}.exported.onnx"),
                    "inputs": g.declared_inputs(),
                    "outputs": [o.name for o in g.outputs]} for g in spec.graphs],
        "confine": str(ctx.build_dir),
    }
    code, result = run_job("edgeq.stages._torch_export_child", job, ctx.build_dir / "export.job.json",
                           ctx.build_dir / "export.log")
    if result is None or (code != 0 and result.get("ok")):
        raise ModelError(f"exporting {spec.file.name} to ONNX {exit_text(code)} (in {spec.class_name}'s code or torch); "
                         "its output is in export.log, kept with --keep-build")
    if not result["ok"]:
        raise ModelError(result["error"])
    return str(result.get("confinement", "not confined: the export child did not say"))


def _select_outputs(model: Any, graph: GraphSpec) -> Any:
    wanted = [o.name for o in graph.outputs]
    if not wanted:
        return model
    have = {o.name: o for o in model.graph.output}
    missing = [n for n in wanted if n not in have]
    if missing:
        raise ModelError(
            f"edgeq.toml names output(s) {missing} but the model's outputs are: {', '.join(have)}; fix [[outputs]]"
        )
    keep = [have[n] for n in wanted]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    return model


def _scalar(model: Any, name: str) -> float | None:
    """The value of a one-element constant (initializer or Constant node) named ``name``, else None."""
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == name:
            a = numpy_helper.to_array(t)
            return float(a.reshape(-1)[0]) if a.size == 1 else None
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name and n.attribute and n.attribute[0].name == "value":
            a = numpy_helper.to_array(n.attribute[0].t)
            return float(a.reshape(-1)[0]) if a.size == 1 else None
    return None


def _fuse_exact_gelu(model: Any) -> list[str]:
    """x * 0.5 * (1 + erf(x / sqrt(2))) as exporters write it (PyTorch's nn.GELU: Div -> Erf -> Add ->
    Mul -> Mul, or Mul by 1/sqrt(2) for the Div) becomes one com.microsoft Gelu node: the same
    function (onnxruntime runs it), which onnx2tf turns into TFLite's GELU, an op with an int8 kernel.
    Left as it is, the Erf has no TFLite kernel at all. Returns what was rewritten, for the report."""
    from onnx import helper

    nodes = list(model.graph.node)
    consumers: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in model.graph.output}

    def only_user(out: str, op: str) -> Any:
        users = consumers.get(out, [])
        return users[0] if len(users) == 1 and users[0].op_type == op and out not in graph_outputs else None

    def other(node: Any, name: str) -> str | None:
        rest = [i for i in node.input if i != name]
        return rest[0] if len(node.input) == 2 and len(rest) == 1 else None

    def near(value: float | None, want: float) -> bool:
        return value is not None and abs(value - want) < 1e-4 * max(1.0, abs(want))

    fused: list[tuple[list[Any], Any]] = []
    for erf in (n for n in nodes if n.op_type == "Erf"):
        scale = next((n for n in nodes if erf.input[0] in n.output), None)
        if scale is None or len(consumers.get(scale.output[0], [])) != 1:
            continue
        if scale.op_type == "Div" and near(_scalar(model, scale.input[1]), 2 ** 0.5):
            x = scale.input[0]
        elif scale.op_type == "Mul" and len(scale.input) == 2:
            x = next((i for i, c in zip(scale.input, reversed(scale.input), strict=True)
                      if near(_scalar(model, c), 2 ** -0.5)), None)
        else:
            continue
        add = only_user(erf.output[0], "Add")
        if x is None or add is None or not near(_scalar(model, other(add, erf.output[0]) or ""), 1.0):
            continue
        mul_x = only_user(add.output[0], "Mul")
        if mul_x is None or other(mul_x, add.output[0]) != x:
            continue
        half = only_user(mul_x.output[0], "Mul")
        if half is None or not near(_scalar(model, other(half, mul_x.output[0]) or ""), 0.5):
            continue
        name = (erf.name or "gelu").rsplit("/", 1)[0] + "/Gelu__edgeq"
        fused.append(([scale, erf, add, mul_x, half],
                      helper.make_node("Gelu", [x], [half.output[0]], name=name, domain="com.microsoft")))
    if not fused:
        return []
    drop = {id(n) for group, _ in fused for n in group}
    at = {id(group[-1]): gelu for group, gelu in fused}  # the Gelu takes the place of the last Mul
    kept = [at.get(id(n), n) for n in nodes if id(n) not in drop or id(n) in at]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return [f"exact GELU (Div/Erf/Add/Mul/Mul) -> com.microsoft Gelu (x{len(fused)}): the same function; "
            "converts to TFLite's GELU, which has an int8 kernel (an Erf has no TFLite kernel)"]


def _int8_friendly(model: Any) -> list[str]:
    """Rewrite float ops that TFLite has no int8 kernel for into the same function of ops that have
    one: Neg(x) -> Mul(x, -1) (exact: -1 is exact in float32 and in a symmetric int8 scale). Exporters
    write Neg inside LayerNorm and exact GELU decompositions. Returns what was rewritten, for the report."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    elem = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.value_info, *model.graph.output)}
    elem.update({t.name: t.data_type for t in model.graph.initializer})
    negs = [n for n in model.graph.node if n.op_type == "Neg" and elem.get(n.input[0]) == TensorProto.FLOAT]
    if not negs:
        return []
    minus_one = "edgeq_minus_one"
    model.graph.initializer.append(numpy_helper.from_array(np.array(-1.0, np.float32), minus_one))
    for n in negs:
        mul = helper.make_node("Mul", [n.input[0], minus_one], list(n.output), name=f"{n.name}__edgeq_mul" if n.name else "")
        n.CopyFrom(mul)
    return [f"Neg -> Mul by -1 (x{len(negs)}): same values; TFLite has no int8 NEG kernel"]


def _simplify(model: Any) -> tuple[Any, str | None]:
    """onnxslim with the fixed shapes: constant and shape folding (an If whose condition folds is replaced
    by its branch), dead code removed. Returns the model and, if onnxslim failed, why (the graph is kept)."""
    import onnxslim

    try:
        slim = onnxslim.slim(model)
    except Exception as e:  # onnxslim is an optimisation; the unsimplified graph is still correct
        return model, f"{type(e).__name__}: {e}"
    return (slim, None) if slim is not None else (model, "it returned no model")

