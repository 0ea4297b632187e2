"""convert: float ONNX -> TF SavedModel (onnx2tf) -> float32 and full-integer INT8 .tflite (TFLiteConverter).

Rules:

* onnx2tf writes a SavedModel only; its own quantized outputs are not used (its INT8 path breaks
  on integer inputs). It runs with the network blocked: for models whose inputs are all 4-D with
  3 channels it wants to download sample images; edgeq hands it the user's calibration samples
  instead. Its console output goes to ``convert.log`` in the build folder.
* Both .tflite files come from ``tf.lite.TFLiteConverter.from_saved_model``. The INT8 one uses
  ``TFLITE_BUILTINS_INT8`` only (an op without an int8 kernel is an error, never a silent float
  fallback) and the calibration data as representative dataset, transposed to the SavedModel's
  layout (onnx2tf turns NCHW into NHWC). I/O tensors are float32 or int8 as the target says.
* Each .tflite artifact records how its signature maps to the ONNX inputs/outputs: names,
  the permutation from ONNX layout to TFLite layout, dtypes and quantization parameters.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeq._fds import redirect_output
from edgeq.context import Artifact, BuildContext
from edgeq.errors import ModelError
from edgeq.stages import StageResult

__all__ = ["STAGE", "ConvertStage", "channels_last_perm", "io_mapping"]

SIGNATURE = "serving_default"


class ConvertStage:
    name = "convert"
    requires = ("onnx_float",)
    produces = ("saved_model", "tflite_float32", "tflite_int8")

    def run(self, ctx: BuildContext) -> StageResult:
        onnx_art = ctx.artifacts["onnx_float"]
        saved = ctx.build_dir / "saved_model"
        log_path = ctx.build_dir / "convert.log"
        _onnx2tf(onnx_art.path, saved, log_path, ctx)
        ctx.add(Artifact("saved_model", saved, "saved_model", "float32"))

        io_dtype = ctx.target.io_dtype
        with redirect_output(log_path):
            f32, int8, sig_inputs = _tflite(saved, ctx, io_dtype)
        f32_path = ctx.build_dir / "model.float32.tflite"
        int8_path = ctx.build_dir / "model.int8.tflite"
        f32_path.write_bytes(f32)
        int8_path.write_bytes(int8)
        onnx_outputs = onnx_art.meta["outputs"]
        for key, path, precision in (("tflite_float32", f32_path, "float32"), ("tflite_int8", int8_path, "int8")):
            meta = io_mapping(path, ctx.spec.inputs, onnx_outputs, _onnx_output_shapes(onnx_art.path))
            ctx.add(Artifact(key, path, "tflite", precision, meta))
        info = {
            "converter": "onnx2tf -> SavedModel -> tf.lite.TFLiteConverter",
            "int8_ops_set": "TFLITE_BUILTINS_INT8",
            "io_dtype": io_dtype,
            "log": log_path.name,
        }
        ctx.results["convert"] = info
        return StageResult(self.produces, info)


STAGE = ConvertStage()


def channels_last_perm(rank: int) -> tuple[int, ...]:
    """ONNX channels-first -> TFLite channels-last: (0, 2, ..., rank-1, 1); identity below rank 3."""
    if rank < 3:
        return tuple(range(rank))
    return (0, *range(2, rank), 1)


class NetworkBlocked(RuntimeError):
    pass


def input_perm(spec: Any) -> tuple[int, ...]:
    """ONNX layout -> TFLite layout of an input: onnx2tf makes channels-first inputs channels-last
    and is told to keep inputs that edgeq.toml declares channels-last (layout ending in C)."""
    rank = len(spec.shape)
    if spec.layout.endswith("C") and rank >= 3:
        return tuple(range(rank))
    return channels_last_perm(rank)


@contextlib.contextmanager
def _no_network() -> Iterator[None]:
    """Refuse every outgoing connection from this process while converting."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise NetworkBlocked("edgeq runs offline: a converter tried to open a network connection")

    orig = socket.socket.connect, socket.socket.connect_ex, socket.create_connection
    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.create_connection = orig  # type: ignore[method-assign]


def _set_tf_env() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")


def _sample_images(ctx: BuildContext) -> np.ndarray:
    """What onnx2tf would download: up to 20 channels-last images, here from the calibration data."""
    spec = ctx.spec.inputs[0]
    rows = []
    for k in range(min(20, len(ctx.calibration))):
        rows.append(ctx.calibration.sample(k)[spec.name].transpose(input_perm(spec)))
    return np.concatenate(rows, axis=0).astype(np.float32)


def _onnx2tf(onnx_path: Path, out_dir: Path, log_path: Path, ctx: BuildContext) -> None:
    _set_tf_env()
    with redirect_output(log_path):
        import onnx2tf
        import onnx2tf.onnx2tf as o2t_module

    images = _sample_images(ctx)
    patched = {"download_test_image_data": lambda: images}
    originals = {k: getattr(o2t_module, k) for k in patched}
    cwd = os.getcwd()
    try:
        for k, v in patched.items():
            setattr(o2t_module, k, v)
        os.chdir(ctx.build_dir)  # onnx2tf writes scratch files into the working directory
        with redirect_output(log_path), _no_network():
            onnx2tf.convert(
                input_onnx_file_path=str(onnx_path),
                output_folder_path=str(out_dir),
                output_signaturedefs=True,
                keep_nwc_or_nhwc_or_ndhwc_input_names=[
                    s.name for s in ctx.spec.inputs if len(s.shape) >= 3 and s.layout.endswith("C")
                ] or None,
                non_verbose=True,
                verbosity="error",
            )
    except SystemExit as e:  # onnx2tf calls sys.exit on some conversion errors
        raise ModelError(f"onnx2tf could not convert the model (exit {e.code}); see {_tail(log_path)}") from e
    except NetworkBlocked as e:
        raise ModelError(str(e)) from e
    finally:
        os.chdir(cwd)
        for k, v in originals.items():
            setattr(o2t_module, k, v)
    if not (out_dir / "saved_model.pb").is_file():
        raise ModelError(f"onnx2tf wrote no SavedModel; {_tail(log_path)}")


def _tail(log_path: Path) -> str:
    try:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines if "ERROR" in ln or "Error" in ln]
    last = re.sub(r"\x1b\[[0-9;]*m", "", (errors or lines or ["(empty log)"])[-1]).strip()
    return f"last error: {last[:300]} (full log: {log_path})"


def _signature_inputs(saved: Path) -> list[str]:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved))
    fn = loaded.signatures[SIGNATURE]
    _, kwargs = fn.structured_input_signature
    # TFLite names signature inputs after the TensorSpec's name ("input.1"), not the SavedModel's
    # keyword ("input_1"); the representative dataset must use the TFLite names.
    return [spec.name or key for key, spec in kwargs.items()]


def _match_name(onnx_name: str, candidates: list[str]) -> str | None:
    if onnx_name in candidates:
        return onnx_name
    sanitized = re.sub(r"[^A-Za-z0-9_]", "_", onnx_name)
    for c in candidates:
        if re.sub(r"[^A-Za-z0-9_]", "_", c) == sanitized:
            return c
    return None


def _tflite(saved: Path, ctx: BuildContext, io_dtype: str) -> tuple[bytes, bytes, list[str]]:
    import tensorflow as tf

    sig_inputs = _signature_inputs(saved)
    names = {}
    for spec in ctx.spec.inputs:
        match = _match_name(spec.name, sig_inputs) or (sig_inputs[0] if len(sig_inputs) == 1 else None)
        if match is None:
            raise ModelError(f"input '{spec.name}' not found in the converted model's inputs {sig_inputs}")
        names[spec.name] = match

    def representative() -> Iterator[dict[str, np.ndarray]]:
        for sample in ctx.calibration:
            yield {
                names[s.name]: sample[s.name].transpose(input_perm(s)) for s in ctx.spec.inputs
            }

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[SIGNATURE])
    f32 = conv.convert()

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[SIGNATURE])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io_dtype == "int8":
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    try:
        int8 = conv.convert()
    except Exception as e:  # the converter raises ConverterError with the op list in its text
        msg = " ".join(str(e).split())
        raise ModelError(f"full-integer INT8 conversion failed: {msg[:400]}") from e
    return f32, int8, sig_inputs


def _onnx_output_shapes(onnx_path: Path) -> dict[str, list[int]]:
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


def _layout_perm(onnx_shape: list[int], tfl_shape: list[int], what: str, expected: tuple[int, ...] | None = None) -> list[int]:
    """The permutation p with ``tfl_shape == onnx_shape[p]``: ``expected`` if it fits, else
    channels-last, else identity."""
    candidates = [list(expected)] if expected is not None else []
    candidates += [list(channels_last_perm(len(onnx_shape))), list(range(len(onnx_shape)))]
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
        name = _match_name(spec.name, sig_in) or (sig_in[0] if len(sig_in) == 1 else None)
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
    for onnx_name, name in zip(onnx_outputs, sig_out):
        d = out_details[name]
        shape = [int(x) for x in d["shape"]]
        meta_out.append({
            "name": onnx_name, "tflite_name": name, "onnx_shape": onnx_out_shapes[onnx_name], "shape": shape,
            "dtype": np.dtype(d["dtype"]).name,
            "perm": _layout_perm(onnx_out_shapes[onnx_name], shape, f"output '{onnx_name}'"),
            "quantization": _quant(d),
        })
    return {"signature": SIGNATURE, "inputs": meta_in, "outputs": meta_out}
