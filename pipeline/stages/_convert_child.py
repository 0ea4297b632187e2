"""The convert stage's child process: onnx2tf -> SavedModel -> float32 and INT8 .tflite.

Run as ``python -m edgeq.stages._convert_child JOB.json`` by ``edgeq.stages.convert``. A child
process keeps the converters' crashes (segfault, abort, out of memory), ``sys.exit`` calls, global
state (Keras name counters, which change the bytes of a second conversion in one process) and
console output away from the build. Everything it prints goes to convert.log.

Protocol: JOB.json holds the paths and input specs; the child writes JOB.result.json with
``{"ok": true}`` or ``{"ok": false, "error": "<one line>"}`` and exits 0 or 2. Any other exit
(a signal, an uncaught exception) is reported by the parent as a converter crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.config import InputSpec
from edgeq.data import ArrayDataset
from edgeq.landlock import confine_child
from edgeq.layout import input_perm, keeps_shape, match_name
from edgeq.onnx_files import describe_nodes

SIGNATURE = "serving_default"


class ConversionFailed(Exception):
    """A conversion failure with a message for the user."""


class NetworkBlocked(RuntimeError):
    pass


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


def _sample_images(inputs: list[InputSpec], calibration: ArrayDataset) -> np.ndarray:
    """What onnx2tf would download: up to 20 channels-last images, here from the calibration data."""
    spec = inputs[0]
    rows = [calibration.sample(k)[spec.name].transpose(input_perm(spec)) for k in range(min(20, len(calibration)))]
    return np.concatenate(rows, axis=0).astype(np.float32)


def onnx_to_saved_model(onnx_path: Path, out_dir: Path, inputs: list[InputSpec], calibration: ArrayDataset) -> list[str]:
    """onnx2tf: ONNX -> SavedModel in ``out_dir``. Returns the retry strategies it needed (for the
    report), [] if the first attempt worked."""
    import onnx2tf
    import onnx2tf.onnx2tf as o2t_module

    images = _sample_images(inputs, calibration)
    o2t_module.download_test_image_data = lambda: images  # never the network
    # onnx2tf writes its own shape-inferred graph back over the file it is given: give it a copy, so
    # that the float ONNX stays the reference export wrote (onnx2tf's copy drops custom-domain tags).
    work_copy = out_dir.parent / f"{out_dir.name}.onnx2tf-input.onnx"
    shutil.copyfile(onnx_path, work_copy)
    failure = ""
    # First as is; if onnx2tf fails (typically a layout it guessed wrong), once more with the
    # parameter-replacement JSON it generates itself for the failing ops.
    for attempt, extra in enumerate(({}, {"auto_generate_json": True})):
        if attempt:
            print(f"edgeq: onnx2tf failed ({failure}); retrying with auto_generate_json=True", flush=True)
            shutil.rmtree(out_dir, ignore_errors=True)
            shutil.copyfile(onnx_path, work_copy)
        try:
            with _no_network():
                onnx2tf.convert(
                    input_onnx_file_path=str(work_copy),
                    output_folder_path=str(out_dir),
                    output_signaturedefs=True,
                    keep_nwc_or_nhwc_or_ndhwc_input_names=[
                        s.name for s in inputs if len(s.shape) >= 3 and s.layout.endswith("C") and not keeps_shape(s)
                    ] or None,
                    keep_shape_absolutely_input_names=[s.name for s in inputs if keeps_shape(s)] or None,
                    non_verbose=True,
                    verbosity="error",
                    **extra,
                )
        except SystemExit as e:  # onnx2tf calls sys.exit on some conversion errors
            failure = f"it exited with {e.code}"
        except NetworkBlocked as e:
            raise ConversionFailed(str(e)) from e
        except ModuleNotFoundError as e:  # onnx2tf imports onnx2tf.ops.<OpType>: no converter for that op
            op = (e.name or "").rpartition(".")[2]
            if not (e.name or "").startswith("onnx2tf.ops.") or not op:
                raise
            raise ConversionFailed(
                f"onnx2tf has no converter for the ONNX op {op} ({describe_nodes(onnx_path, op) or 'no such node'}); "
                "TFLite cannot run this model as exported: replace that op (e.g. an LSTM exported as a Loop: "
                "export it unrolled) and build again"
            ) from e
        except Exception as e:  # onnx2tf raises whatever TensorFlow raised for the op it was converting
            if flex_ops(str(e)):  # onnx2tf runs the TFLite converter too; same refusal as edgeq's own conversion
                raise _flex_error(str(e), "float32", onnx_path) from e
            failure = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:200]
        else:
            if (out_dir / "saved_model.pb").is_file():
                if not attempt:
                    return []
                return [f"onnx2tf retried with its auto-generated parameter JSON (auto_generate_json=True) after: {failure}"]
            failure = "it wrote no SavedModel"
    raise ConversionFailed(f"onnx2tf could not convert the model ({failure}), also with its auto-generated parameter JSON")


def _signature_inputs(saved: Path) -> list[str]:
    import tensorflow as tf

    fn = tf.saved_model.load(str(saved)).signatures[SIGNATURE]
    _, kwargs = fn.structured_input_signature
    # TFLite names signature inputs after the TensorSpec's name ("input.1"), not the SavedModel's
    # keyword ("input_1"); the representative dataset must use the TFLite names.
    return [spec.name or key for key, spec in kwargs.items()]


def saved_model_to_tflite(
    saved: Path, inputs: list[InputSpec], calibration: ArrayDataset, io_dtype: str,
    allow_float_ops: list[str], onnx_path: Path,
) -> tuple[bytes, bytes, str | None]:
    """float32 and INT8 .tflite bytes, and why ops stayed float in the INT8 file (None: none did).

    The INT8 file is converted with TFLite's builtin int8 kernels only. If the converter refuses an
    op, that is a ConversionFailed naming it, unless edgeq.toml allows float kernels for some ops
    (``allow_float_ops``): then it is converted again with float kernels allowed, and the
    converter's reason is returned for the report. Ops that only TensorFlow kernels (Flex /
    select-TF-ops) could run are always refused. Which ops the INT8 file really runs in float is
    checked by the parent on the file itself.
    """
    import tensorflow as tf

    sig_inputs = _signature_inputs(saved)
    names = {}
    for spec in inputs:
        match = match_name(spec.name, sig_inputs) or (sig_inputs[0] if len(sig_inputs) == 1 else None)
        if match is None:
            raise ConversionFailed(f"input '{spec.name}' not found in the converted model's inputs {sig_inputs}")
        names[spec.name] = match

    def representative() -> Iterator[dict[str, np.ndarray]]:
        for sample in calibration:
            yield {names[s.name]: sample[s.name].transpose(input_perm(s)) for s in inputs}

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[SIGNATURE])
    f32 = _convert(conv, "float32", onnx_path)

    def int8_converter(ops: list[Any]) -> Any:
        conv = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[SIGNATURE])
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = ops
        if io_dtype == "int8":
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        return conv

    try:
        return f32, _convert(int8_converter([tf.lite.OpsSet.TFLITE_BUILTINS_INT8]), "INT8", onnx_path), None
    except _Refused as strict:
        reason = strict.message
    if not allow_float_ops:
        raise ConversionFailed(
            f"TFLite's builtin INT8 ops cannot run this model: {reason}; replace those ops, or accept float32 kernels "
            "for them with [quantization] allow_float_ops = [\"OP\", ...] in edgeq.toml (or --allow-float-op OP)"
        )
    try:
        mixed = _convert(int8_converter([tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]),
                         "INT8 (float kernels allowed)", onnx_path)
    except _Refused as e:
        raise ConversionFailed(f"INT8 conversion failed: {reason}; with float kernels allowed: {e.message}") from e
    return f32, mixed, reason


class _Refused(ConversionFailed):
    """The TFLite converter refused the model (not a Flex op); ``message`` is the converter's reason."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(f"the TFLite converter refused the {what} model: {message}")
        self.message = message


def _convert(conv: Any, what: str, onnx_path: Path) -> bytes:
    """``conv.convert()``; ops only TensorFlow kernels could run are a ConversionFailed naming them."""
    try:
        return conv.convert()
    except Exception as e:  # ConverterError; its text names the ops it could not convert
        if flex_ops(str(e)):
            raise _flex_error(str(e), what, onnx_path) from e
        raise _Refused(what, _converter_message(e)) from e


def _flex_error(message: str, what: str, onnx_path: Path) -> ConversionFailed:
    flex = flex_ops(message)
    where = "; ".join(f"{op}: {describe_nodes(onnx_path, op) or 'no ONNX node of that type'}" for op in flex)
    # onnx2tf can rebuild Erf from builtin ops (replace_to_pseudo_operators), but that INT8 model
    # keeps a NEG in float32 and its int8 DIV fails on a zero input (measured): not offered.
    hint = (" (an Erf is usually an exact GELU; edgeq fuses PyTorch's x * 0.5 * (1 + erf(x / sqrt(2))) itself, "
            "this one has another form: its tanh approximation converts to int8, PyTorch "
            "nn.GELU(approximate='tanh'), Keras gelu(x, approximate=True))") if "Erf" in flex else ""
    return ConversionFailed(
        f"the {what} model needs TensorFlow ops that TFLite's builtin ops cannot run ({where}); edgeq does "
        "not ship select-TF-ops (Flex) models, which need the TensorFlow runtime on the phone: replace those "
        f"ops in the model and build again{hint}"
    )


def _converter_message(e: Exception) -> str:
    lines = [" ".join(ln.split()) for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "error:" in ln.lower() or "not supported" in ln.lower()] or lines or [type(e).__name__]
    return "; ".join(dict.fromkeys(useful))[:600]


def flex_ops(message: str) -> list[str]:
    """The TensorFlow ops a converter error lists under "TF Select ops: A, B" (Flex) or "Custom ops: C"
    (not even Flex has them): the ops TFLite's builtins cannot run (empty if none)."""
    found: list[str] = []
    for m in re.finditer(r"(?:TF Select|Custom) ops:\s*([^\n]+)", message):
        found += [op.strip() for op in m.group(1).split(",") if op.strip()]
    return list(dict.fromkeys(found))


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Convert; the result's ``float_fallback`` (why ops stayed float, or None) and ``strategies``
    (what edgeq had to ask of the converters beyond the defaults, for the report)."""
    inputs = [InputSpec(i["name"], tuple(i["shape"]), i["dtype"], i["layout"]) for i in job["inputs"]]
    calibration = ArrayDataset.open(Path(job["calibration"]), tuple(inputs), "calibration", limit=job["limit"])
    saved, onnx_path = Path(job["saved_model"]), Path(job["onnx"])
    strategies = onnx_to_saved_model(onnx_path, saved, inputs, calibration)
    f32, int8, fallback = saved_model_to_tflite(saved, inputs, calibration, job["io_dtype"],
                                                job.get("allow_float_ops", []), onnx_path)
    Path(job["tflite_float32"]).write_bytes(f32)
    Path(job["tflite_int8"]).write_bytes(int8)
    return {"float_fallback": fallback, "strategies": strategies}


def main(argv: list[str]) -> int:
    job_path = Path(argv[1])
    job = json.loads(job_path.read_text(encoding="utf-8"))
    confinement = confine_child(job.get("confine"))  # before the converters or the model load
    result_path = job_path.with_suffix(".result.json")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    os.chdir(job["workdir"])  # onnx2tf writes scratch files into the working directory
    try:
        outcome = run(job)
    except ConversionFailed as e:
        traceback.print_exc()
        result_path.write_text(json.dumps({"ok": False, "error": str(e), "confinement": confinement}), encoding="utf-8")
        return 2
    result_path.write_text(json.dumps({"ok": True, **outcome, "confinement": confinement}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
