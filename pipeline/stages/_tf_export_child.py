"""Child process of the export stage for Keras (.keras) and TF SavedModel inputs: load, convert to
ONNX with tf2onnx. A separate process, like the converters': TensorFlow's crashes and global state
stay out of edgeq's process, and the network is refused while it runs.

    python -m edgeq.stages._tf_export_child JOB.json   ->   JOB.result.json
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from edgeq._proc import error_line
from edgeq.landlock import confine_child
from edgeq.stages._convert_child import _no_network

OPSET = 17


def _specs(tf: Any, inputs: list[dict[str, Any]]) -> list[Any]:
    return [tf.TensorSpec(i["shape"], getattr(tf, i["dtype"]), name=i["name"]) for i in inputs]


def _keras(job: dict[str, Any], tf: Any) -> Any:
    import keras
    import tf2onnx

    model = keras.saving.load_model(job["path"], safe_mode=not job["trust"], compile=False)
    # An input's name is its InputLayer's (a KerasTensor's own name can change across save/load).
    have = [getattr(getattr(t, "_keras_history", None), "operation", t).name.split(":")[0] for t in model.inputs]
    want = [i["name"] for i in job["inputs"]]
    if sorted(have) != sorted(want):
        raise ValueError(f"the model's inputs are {have}; edgeq.toml [[inputs]] names {want}: make them match")
    order = {n: k for k, n in enumerate(have)}
    inputs = sorted(job["inputs"], key=lambda i: order[i["name"]])
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=_specs(tf, inputs), opset=OPSET)
    return proto


def _saved_model(job: dict[str, Any], tf: Any) -> Any:
    import tf2onnx

    loaded = tf.saved_model.load(job["path"])
    if "serving_default" not in loaded.signatures:
        raise ValueError(f"the SavedModel has no serving_default signature (it has {list(loaded.signatures)})")
    sig = loaded.signatures["serving_default"]
    have = sorted(sig.structured_input_signature[1])
    want = [i["name"] for i in job["inputs"]]
    if have != sorted(want):
        raise ValueError(f"the SavedModel's serving_default inputs are {have}; edgeq.toml [[inputs]] names {want}; match them")
    keys = sorted(sig.structured_outputs)

    @tf.function(input_signature=_specs(tf, job["inputs"]))
    def serve(*args: Any) -> Any:
        out = sig(**dict(zip(want, args, strict=True)))
        return [out[k] for k in keys]

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=_specs(tf, job["inputs"]), opset=OPSET)
    # name the outputs as the signature does
    for out, key in zip(list(proto.graph.output), keys, strict=True):
        old = out.name
        for node in proto.graph.node:
            node.output[:] = [key if o == old else o for o in node.output]
            node.input[:] = [key if i == old else i for i in node.input]
        out.name = key
    return proto


def _replace_erfc(proto: Any) -> int:
    """tf2onnx writes TensorFlow's Erfc (Keras' exact gelu) as an ONNX op "Erfc", which ONNX does not
    have; rewrite each as 1 - Erf(x), the same function. Returns how many were rewritten."""
    import numpy as np
    from onnx import helper, numpy_helper

    nodes = list(proto.graph.node)
    erfc = [n for n in nodes if n.op_type == "Erfc" and n.domain in ("", "ai.onnx")]
    if not erfc:
        return 0
    one = "edgeq_erfc_one"
    proto.graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
    out = []
    for n in nodes:
        if n in erfc:
            erf = f"{n.output[0]}__edgeq_erf"
            out.append(helper.make_node("Erf", [n.input[0]], [erf], name=f"{n.name}/Erf"))
            out.append(helper.make_node("Sub", [one, erf], [n.output[0]], name=f"{n.name}/OneMinus"))
        else:
            out.append(n)
    del proto.graph.node[:]
    proto.graph.node.extend(out)
    return len(erfc)


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    confinement = confine_child(job.get("confine"))  # before TensorFlow or the model loads
    result_path = Path(job_path).with_suffix(".result.json")
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with _no_network():
            import tensorflow as tf

            proto = _keras(job, tf) if job["format"] == "keras" else _saved_model(job, tf)
        if _replace_erfc(proto):
            print("edgeq: rewrote tf2onnx's Erfc nodes (not an ONNX op) as 1 - Erf", flush=True)
        import onnx

        onnx.save_model(proto, job["out"])
        result = {"ok": True, "inputs": [i.name for i in proto.graph.input], "outputs": [o.name for o in proto.graph.output]}
    except Exception as e:  # every failure goes back to the parent as one line
        traceback.print_exc()
        result = {"ok": False, "error": error_line(e)[:400]}
    result["confinement"] = confinement
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
