"""convert: float ONNX -> TF SavedModel (onnx2tf) -> float32 and INT8 .tflite (TFLiteConverter), per graph.

Rules:

* The converters run in a child process (``_convert_child``): a crash, ``sys.exit`` or global state
  of theirs never reaches the build; this module reads the child's result and the log.
* onnx2tf writes a SavedModel only; its own quantized outputs are not used (its INT8 path breaks
  on integer inputs). It runs with the network blocked: for models whose inputs are all 4-D with
  3 channels it wants to download sample images; edgeq hands it the user's calibration samples
  instead. Its console output goes to ``convert.log`` in the build folder.
* Both .tflite files come from ``tf.lite.TFLiteConverter.from_saved_model``. The INT8 one uses
  ``TFLITE_BUILTINS_INT8``. An op the INT8 file computes in float32 (the converter may keep one
  without an int8 kernel in float between DEQUANTIZE and QUANTIZE, or refuse it) is an error naming
  it, unless ``[quantization].allow_float_ops`` / ``--allow-float-op`` accepts that op; then the
  report lists it. Ops only TensorFlow kernels can run (Flex / select-TF-ops) are always refused:
  edgeq never ships a model that needs the TensorFlow runtime on the phone. The calibration data
  is the representative dataset, transposed to the SavedModel's layout (onnx2tf turns NCHW into
  NHWC). I/O tensors are float32 or int8 as the target says.
* Each .tflite artifact records how its signature maps to the ONNX inputs/outputs: names,
  the permutation from ONNX layout to TFLite layout, dtypes and quantization parameters.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from edgeq._fds import redirect_output
from edgeq._proc import exit_text, run_job
from edgeq.artifacts import Artifact
from edgeq.context import BuildContext
from edgeq.errors import ModelError
from edgeq.layout import channels_last_perm, input_perm, match_name
from edgeq.results import CalibrationResult, ConvertResult

__all__ = ["STAGE", "ConvertStage", "check_float_ops", "io_mapping", "onnx_output_shapes", "run_child"]

SIGNATURE = "serving_default"


class ConvertStage:
    """The convert stage: each graph's float ONNX to a SavedModel, a float32 .tflite and an INT8 .tflite."""

    name = "convert"
    cacheable = True  # its outputs are kept in the stage cache (edgeq.runner)
    requires: tuple[str | type, ...] = ("onnx_float", CalibrationResult)
    produces: tuple[str | type, ...] = ("saved_model", "tflite_float32", "tflite_int8", ConvertResult)

    def run(self, ctx: BuildContext) -> ConvertResult:
        """Convert each graph in a child process, check its float ops, add the artifacts with their I/O mapping."""
        log_path = ctx.build_dir / "convert.log"
        io_dtype = ctx.target.io_dtype
        graphs = {}
        confinement: dict[str, None] = {}  # each child's status, in order, once
        for graph in ctx.spec.graphs:
            onnx_art = ctx.artifact("onnx_float", graph.name)
            saved = ctx.build_dir / f"{graph.name}.saved_model"
            f32_path = ctx.build_dir / f"{graph.name}.float32.tflite"
            int8_path = ctx.build_dir / f"{graph.name}.int8.tflite"
            calibration = ctx.result(CalibrationResult).sets[graph.name]
            job = {
                "onnx": str(onnx_art.path), "saved_model": str(saved), "workdir": str(ctx.build_dir),
                "tflite_float32": str(f32_path), "tflite_int8": str(int8_path), "io_dtype": io_dtype,
                "calibration": str(calibration.folder), "limit": calibration.count, "confine": str(ctx.build_dir),
                "allow_float_ops": list(ctx.spec.quantization.allow_float_ops),
                "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype, "layout": i.layout}
                           for i in graph.inputs],
            }
            result = run_child(job, ctx.build_dir / f"{graph.name}.convert_job.json", log_path, ctx.convert_timeout)
            confinement[str(result.get("confinement", "not confined: the convert child did not say"))] = None
            check_float_ops(int8_path, onnx_art.path, ctx.spec.quantization.allow_float_ops,
                            graph.name if len(ctx.spec.graphs) > 1 else None, result.get("strategies", []))
            ctx.add(Artifact("saved_model", saved, "saved_model", "float32", graph=graph.name))
            onnx_outputs = onnx_art.meta["outputs"]
            out_shapes = onnx_output_shapes(onnx_art.path)
            for key, path, precision in (("tflite_float32", f32_path, "float32"), ("tflite_int8", int8_path, "int8")):
                meta = io_mapping(path, graph.inputs, onnx_outputs, out_shapes)
                ctx.add(Artifact(key, path, "tflite", precision, meta, graph=graph.name))
            graphs[graph.name] = {"float_fallback": result.get("float_fallback"), "strategies": result.get("strategies", [])}
        return ConvertResult(
            converter="onnx2tf -> SavedModel -> tf.lite.TFLiteConverter (child process)",
            int8_ops_set="TFLITE_BUILTINS_INT8",
            io_dtype=io_dtype,
            log=log_path.name,
            graphs=graphs,
            confinement="; ".join(confinement),
        )


STAGE = ConvertStage()


def run_child(job: dict[str, Any], job_path: Path, log_path: Path, timeout: float | None = None) -> dict[str, Any]:
    """Run the converters in ``edgeq.stages._convert_child``; its output goes to ``log_path``. Killed
    after ``timeout`` seconds (ModelError): onnx2tf can search layouts for an op it cannot convert
    for hours."""
    import subprocess

    try:
        code, result = run_job("edgeq.stages._convert_child", job, job_path, log_path, timeout)
    except subprocess.TimeoutExpired:
        where = failed_node(log_path, Path(job["onnx"]))
        raise ModelError(
            f"the converter was stopped after {timeout:g} s{where}: onnx2tf keeps retrying an op it cannot convert, or "
            "the model is that large; replace the op it names, or allow more time with --convert-timeout SECONDS "
            f"(full log: {log_path.name} in the build folder, kept with --keep-build)") from None
    if code == 0 and result and result.get("ok"):
        return result
    if result and not result.get("ok"):
        where = failed_node(log_path, Path(job["onnx"]))
        raise ModelError(f"{result['error']}{where} (full log: {log_path.name} in the build folder, kept with --keep-build)")
    if code < 0:
        raise ModelError(f"the converter {exit_text(code)} on this model; {_tail(log_path)}")
    raise ModelError(f"the converter failed (exit {code}); {_tail(log_path)}")


def check_float_ops(int8_path: Path, onnx_path: Path, allowed: tuple[str, ...], graph: str | None = None,
                    strategies: list[str] | None = None) -> None:
    """ModelError listing the ops the INT8 .tflite computes in float32 that edgeq.toml does not allow.

    With ``TFLITE_BUILTINS_INT8`` the converter does not always refuse an op without an int8 kernel:
    it may keep it in float32 between DEQUANTIZE and QUANTIZE. The file itself is the truth."""
    from edgeq.onnx_files import describe_nodes
    from edgeq.tflite_inspect import inspect_tflite

    float_ops = inspect_tflite(int8_path)["float_ops"]
    refused = {op: info for op, info in float_ops.items() if op not in allowed}
    if not refused:
        return
    parts = []
    for op, info in refused.items():
        where = describe_nodes(onnx_path, op, info["count"]) or f"TFLite tensor {info['tensors'][0]!r}"
        parts.append(f"{op} x{info['count']} ({where})")
    in_graph = f" of graph '{graph}'" if graph else ""
    after = f" (after: {'; '.join(strategies)})" if strategies else ""
    ops = ", ".join(f'"{op}"' for op in refused)
    raise ModelError(
        f"the INT8 model{in_graph} would compute {', '.join(parts)} in float32: TFLite's builtin INT8 ops have no "
        f"int8 kernel for {'them' if len(refused) > 1 else 'it'}; replace {'them' if len(refused) > 1 else 'it'} in "
        f"the model, or accept float32 there with [quantization] allow_float_ops = [{ops}] in edgeq.toml "
        f"(or --allow-float-op {' --allow-float-op '.join(refused)}){after}"
    )


def failed_node(log_path: Path, onnx_path: Path) -> str:
    """", at node 'NAME' (OP, inputs [shapes])" for the last node onnx2tf names in its error log, or ""."""
    try:
        text = re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text(errors="replace"))
    except OSError:
        return ""
    names = re.findall(r"onnx_op_name: (\S+)", text)
    if not names:
        return ""
    name = names[-1]
    try:
        import onnx

        model = onnx.shape_inference.infer_shapes(onnx.load_model(str(onnx_path), load_external_data=False))
    except Exception:  # the log's node name is still worth giving
        return f", at node '{name}'"
    node = next((n for n in model.graph.node if n.name == name or re.sub("^wa/", "/", n.name) == name), None)
    if node is None:
        return f", at node '{name}'"
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.input, *model.graph.value_info, *model.graph.output)}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    ins = ", ".join(str(shapes.get(i, "?")) for i in node.input if i)
    return f", at node '{node.name}' ({node.op_type}, inputs {ins})"


def _tail(log_path: Path) -> str:
    try:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines if "Error" in ln or "ERROR" in ln]
    last = re.sub(r"\x1b\[[0-9;]*m", "", (errors or lines or ["(empty log)"])[-1]).strip()
    return f"last error: {last[:300]}"


def onnx_output_shapes(onnx_path: Path) -> dict[str, list[int]]:
    """Each output of the ONNX model and its shape as the graph declares it (0 for a dynamic dimension)."""
    import onnx

    model = onnx.load_model(str(onnx_path), load_external_data=False)
    return {
        o.name: [d.dim_value for d in o.type.tensor_type.shape.dim]
        for o in model.graph.output
    }


def _quant(details: dict[str, Any]) -> dict[str, Any] | None:
    qp = details.get("quantization_parameters", {})
    scales = qp.get("scales", np.zeros(0))
    if len(scales) == 0:
        return None
    return {
        "scale": [float(s) for s in scales],
        "zero_point": [int(z) for z in qp.get("zero_points", [])],
    }


def _output_step(interp: Any, index: int) -> float | None:
    """One quantization step of an output, in output units: its own scale if it is quantized, or
    the scale of the int8 tensor a final DEQUANTIZE reads. None for a float output computed in float."""
    tensors = {t["index"]: t for t in interp.get_tensor_details()}

    def scale(i: int) -> float | None:
        scales = tensors[i].get("quantization_parameters", {}).get("scales", [])
        return float(scales[0]) if len(scales) == 1 else None

    own = scale(index)
    if own is not None:
        return own
    for op in interp._get_ops_details():  # the public API has no op list; this one is stable in LiteRT
        if index in list(op["outputs"]) and op["op_name"] == "DEQUANTIZE":
            return scale(int(op["inputs"][0]))
    return None


def _layout_perm(onnx_shape: list[int], tfl_shape: list[int], what: str, expected: tuple[int, ...] | None = None) -> list[int]:
    """The permutation p with ``tfl_shape == onnx_shape[p]``: ``expected`` if it fits, else
    channels-last, else identity, else the first other permutation that fits (onnx2tf may move the
    axes of a tensor it took for channels-first, e.g. a recurrent state [2, 1, H] out as [1, 2, H]).
    A wrong guess among equal sizes cannot pass: validation compares every output with the float model."""
    import itertools

    candidates = [list(expected)] if expected is not None else []
    candidates += [list(channels_last_perm(len(onnx_shape))), list(range(len(onnx_shape)))]
    if len(onnx_shape) <= 6:
        candidates += [list(q) for q in itertools.permutations(range(len(onnx_shape)))]
    if len(onnx_shape) == len(tfl_shape):
        for perm in candidates:
            if [onnx_shape[i] for i in perm] == list(tfl_shape):
                return perm
    raise ModelError(f"{what}: converted shape {list(tfl_shape)} does not correspond to ONNX shape {list(onnx_shape)}")


def io_mapping(path: Path, inputs: Any, onnx_outputs: list[str], onnx_out_shapes: dict[str, list[int]]) -> dict[str, Any]:
    """How to feed ``path``: per ONNX input/output, its TFLite signature name, layout permutation,
    dtype and quantization. Outputs map by position (onnx2tf keeps the ONNX output order)."""
    from ai_edge_litert.interpreter import Interpreter

    with redirect_output(stdout=False):
        interp = Interpreter(model_path=str(path))
    runner = interp.get_signature_runner(SIGNATURE)
    in_details = runner.get_input_details()
    out_details = runner.get_output_details()
    sig_in = list(in_details)
    meta_in = []
    for spec in inputs:
        name = match_name(spec.name, sig_in) or (sig_in[0] if len(sig_in) == 1 else None)
        if name is None:
            raise ModelError(f"input '{spec.name}' not found among the .tflite inputs {sig_in}")
        d = in_details[name]
        meta_in.append({
            "name": spec.name, "tflite_name": name, "onnx_shape": list(spec.shape),
            "shape": [int(x) for x in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
            "perm": _layout_perm(list(spec.shape), [int(x) for x in d["shape"]], f"input '{spec.name}'", input_perm(spec)),
            "quantization": _quant(d),
        })
    sig_out = sorted(out_details, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
    if len(sig_out) != len(onnx_outputs):
        raise ModelError(f"the .tflite has {len(sig_out)} outputs, the ONNX model {len(onnx_outputs)}")
    meta_out = []
    for onnx_name, name in zip(onnx_outputs, sig_out, strict=False):
        d = out_details[name]
        shape = [int(x) for x in d["shape"]]
        meta_out.append({
            "name": onnx_name, "tflite_name": name, "onnx_shape": onnx_out_shapes[onnx_name], "shape": shape,
            "dtype": np.dtype(d["dtype"]).name,
            "perm": _layout_perm(onnx_out_shapes[onnx_name], shape, f"output '{onnx_name}'"),
            "quantization": _quant(d),
            "step": _output_step(interp, int(d["index"])),
        })
    return {"signature": SIGNATURE, "inputs": meta_in, "outputs": meta_out}
