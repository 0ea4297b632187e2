"""ONNX models built in code the way production exporters write them: the cases that a tool which
only reads current exporters' output refuses although onnxruntime runs them.

Used by the tests (tests/test_onnx_repair.py) and by the coverage set (bench/model_coverage.py).
Each builder returns a ``Case``: the model, the edgeq.toml [[inputs]] it needs, and how to make
data for its fed inputs. Weights come from a fixed seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["CASES", "Case", "conv_transpose_head", "data_for", "lstm_state", "minus_one_dims", "old_exporter",
           "recurrent_state", "scalar_config_and_ifs", "unnamed_dim", "write_model_dir"]

F = TensorProto.FLOAT


@dataclass
class Case:
    model: onnx.ModelProto
    inputs: list[dict[str, Any]]  # edgeq.toml [[inputs]] tables
    data: dict[str, tuple[int, ...]]  # fed input -> one sample's shape (data files are [N, *shape])
    kind: str = "generic"
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # --input-shape, if any


def _w(rng: np.random.Generator, name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _const(name: str, value: Any, dtype: Any = np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any], opset: int = 17,
           ir: int | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgeq-tests")
    if ir is not None:
        model.ir_version = ir
    return model


def _cnn_nodes(rng: np.random.Generator, x: str, classes: int = 4) -> tuple[list[Any], list[Any]]:
    """conv 3->8 -> relu -> conv 8->8 stride 2 -> relu -> global pool -> Reshape to [N, -1] with N read
    from the tensor's Shape (as exporters write a flatten) -> Gemm -> logits."""
    nodes = [
        helper.make_node("Conv", [x, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="/conv1/Conv"),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="/conv2/Conv"),
        helper.make_node("Relu", ["c2"], ["r2"], name="/relu2/Relu"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"], name="/pool/GlobalAveragePool"),
        helper.make_node("Shape", ["pooled"], ["pshape"], name="/flatten/Shape"),
        helper.make_node("Gather", ["pshape", "zero"], ["n"], axis=0, name="/flatten/Gather"),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="/flatten/Unsqueeze"),
        helper.make_node("Concat", ["n1", "minus_one"], ["flat_shape"], axis=0, name="/flatten/Concat"),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"], name="/flatten/Reshape"),
        helper.make_node("Gemm", ["flat", "wfc", "bfc"], ["logits"], transB=1, name="/fc/Gemm"),
    ]
    inits = [_w(rng, "w1", 8, 3, 3, 3), _w(rng, "b1", 8, scale=0.1), _w(rng, "w2", 8, 8, 3, 3),
             _w(rng, "b2", 8, scale=0.1), _w(rng, "wfc", classes, 8), _w(rng, "bfc", classes, scale=0.1),
             _const("zero", 0), _const("axes0", [0]), _const("minus_one", [-1])]
    return nodes, inits


def unnamed_dim() -> Case:
    """Input [batch, 3, ?, 32]: the height has neither a value nor a name (PaddleOCR-style exports);
    the output's shape is declared with names only, and the flatten is a Reshape of computed shape."""
    nodes, inits = _cnn_nodes(np.random.default_rng(0), "x")
    x = helper.make_tensor_value_info("x", F, ["batch", 3, None, 32])
    x.type.tensor_type.shape.dim[2].Clear()  # neither dim_value nor dim_param
    out = helper.make_tensor_value_info("logits", F, ["batch", "classes"])
    return Case(_model(nodes, [x], [out], inits), [{"name": "x", "shape": [1, 3, 16, 32]}], {"x": (1, 3, 16, 32)})


def minus_one_dims() -> Case:
    """Dynamic dimensions written as -1 and 0 (older exporters), sizes given with --input-shape."""
    nodes, inits = _cnn_nodes(np.random.default_rng(1), "x")
    x = helper.make_tensor_value_info("x", F, [-1, 3, 0, -1])
    out = helper.make_tensor_value_info("logits", F, [-1, 4])
    return Case(_model(nodes, [x], [out], inits), [], {"x": (1, 3, 16, 16)}, input_shapes={"x": (1, 3, 16, 16)})


def _branch(name: str, nodes: list[Any], out: str, inits: list[Any] = ()) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, F, None)], list(inits))


def recurrent_state(*, sr: bool = False) -> Case:
    """A streaming cell: audio frame x [1, 64] and state [1, 32] in; speech score [1, 1] and the next
    state out (h' = z * h + (1 - z) * tanh(x Wx + h Wh), z = sigmoid(x Uz + h Vz)).
    ``sr``: also a scalar int64 sample-rate input, as a voice-activity detector has, read by If nodes:
    the frame is scaled by a weight chosen by sr == 16000, and checked against its expected length
    (Shape -> Gather -> Equal), as exporters of such models write them."""
    rng = np.random.default_rng(2)
    inits = [_w(rng, "wx", 64, 32), _w(rng, "wh", 32, 32), _w(rng, "uz", 64, 32), _w(rng, "vz", 32, 32),
             _w(rng, "wo", 32, 1), numpy_helper.from_array(np.float32(1.0), "one")]
    nodes = []
    frame = "x"
    inputs = [helper.make_tensor_value_info("x", F, ["batch", "samples"]),
              helper.make_tensor_value_info("state", F, ["batch", 32])]
    if sr:
        inputs.append(helper.make_tensor_value_info("sr", TensorProto.INT64, []))
        inits += [_const("sr16k", 16000), _const("one_idx", 1), _const("frame_len", 64),
                  numpy_helper.from_array(np.float32(1.0), "gain16k"), numpy_helper.from_array(np.float32(2.0), "gain8k")]
        nodes += [
            helper.make_node("Equal", ["sr", "sr16k"], ["is16k"], name="/sr/Equal"),
            helper.make_node("If", ["is16k"], ["gain"], name="/sr/If", then_branch=_branch(
                "then", [helper.make_node("Identity", ["gain16k"], ["g16"])], "g16"), else_branch=_branch(
                "else", [helper.make_node("Identity", ["gain8k"], ["g8"])], "g8")),
            helper.make_node("Mul", ["x", "gain"], ["scaled"], name="/sr/Mul"),
            helper.make_node("Shape", ["x"], ["xshape"], name="/len/Shape"),
            helper.make_node("Gather", ["xshape", "one_idx"], ["xlen"], axis=0, name="/len/Gather"),
            helper.make_node("Equal", ["xlen", "frame_len"], ["len_ok"], name="/len/Equal"),
            helper.make_node("If", ["len_ok"], ["framed"], name="/len/If", then_branch=_branch(
                "then", [helper.make_node("Identity", ["scaled"], ["same"])], "same"), else_branch=_branch(
                "else", [helper.make_node("Mul", ["scaled", "one"], ["other"])], "other")),
        ]
        frame = "framed"
    nodes += [
        helper.make_node("MatMul", [frame, "wx"], ["a"], name="/cell/MatMul"),
        helper.make_node("MatMul", ["state", "wh"], ["b"], name="/cell/MatMul_1"),
        helper.make_node("Add", ["a", "b"], ["ab"], name="/cell/Add"),
        helper.make_node("Tanh", ["ab"], ["cand"], name="/cell/Tanh"),
        helper.make_node("MatMul", [frame, "uz"], ["c"], name="/cell/MatMul_2"),
        helper.make_node("MatMul", ["state", "vz"], ["d"], name="/cell/MatMul_3"),
        helper.make_node("Add", ["c", "d"], ["cd"], name="/cell/Add_1"),
        helper.make_node("Sigmoid", ["cd"], ["z"], name="/cell/Sigmoid"),
        helper.make_node("Mul", ["z", "state"], ["keep"], name="/cell/Mul"),
        helper.make_node("Sub", ["one", "z"], ["zc"], name="/cell/Sub"),
        helper.make_node("Mul", ["zc", "cand"], ["new"], name="/cell/Mul_1"),
        helper.make_node("Add", ["keep", "new"], ["stateN"], name="/cell/Add_2"),
        helper.make_node("MatMul", ["stateN", "wo"], ["score_logit"], name="/head/MatMul"),
        helper.make_node("Sigmoid", ["score_logit"], ["score"], name="/head/Sigmoid"),
    ]
    outputs = [helper.make_tensor_value_info("score", F, None), helper.make_tensor_value_info("stateN", F, None)]
    specs = [{"name": "x", "shape": [1, 64]}, {"name": "state", "shape": [1, 32]}]
    if sr:
        specs.append({"name": "sr", "value": 16000})
    return Case(_model(nodes, inputs, outputs, inits), specs, {"x": (1, 64), "state": (1, 32)})


def scalar_config_and_ifs() -> Case:
    """The recurrent cell with a scalar int64 ``sr`` input frozen with value = 16000, and If nodes
    whose conditions come from sr and from the frame's shape."""
    return recurrent_state(sr=True)


def conv_transpose_head() -> Case:
    """A segmentation / text-detection head: conv down, ConvTranspose up (TFLite TRANSPOSE_CONV, whose
    first operand is its output shape), sigmoid probability map."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2], name="/down/Conv"),
        helper.make_node("Relu", ["c1"], ["r1"], name="/down/Relu"),
        helper.make_node("ConvTranspose", ["r1", "wt", "bt"], ["up"], strides=[2, 2], kernel_shape=[2, 2],
                         name="/up/ConvTranspose"),
        helper.make_node("Relu", ["up"], ["r2"], name="/up/Relu"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="/head/Conv"),
        helper.make_node("Sigmoid", ["c3"], ["prob"], name="/head/Sigmoid"),
    ]
    inits = [_w(rng, "w1", 8, 3, 3, 3), _w(rng, "b1", 8, scale=0.1), _w(rng, "wt", 8, 8, 2, 2),
             _w(rng, "bt", 8, scale=0.1), _w(rng, "w3", 1, 8, 1, 1), _w(rng, "b3", 1, scale=0.1)]
    x = helper.make_tensor_value_info("x", F, ["batch", 3, "h", "w"])
    out = helper.make_tensor_value_info("prob", F, ["batch", 1, "h", "w"])
    return Case(_model(nodes, [x], [out], inits), [{"name": "x", "shape": [1, 3, 16, 16]}], {"x": (1, 3, 16, 16)})


def old_exporter() -> Case:
    """As an exporter of a few years ago writes a model: opset 11, IR version 6, every initializer also
    listed as a graph input, Squeeze / Unsqueeze with an axes attribute, stale value_info (a shape
    from another input size) and a value_info entry with no shape at all."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="Conv_0"),
        helper.make_node("Relu", ["c1"], ["r1"], name="Relu_1"),
        helper.make_node("GlobalAveragePool", ["r1"], ["p"], name="GlobalAveragePool_2"),
        helper.make_node("Squeeze", ["p"], ["s"], axes=[2, 3], name="Squeeze_3"),
        helper.make_node("Gemm", ["s", "wfc", "bfc"], ["fc"], transB=1, name="Gemm_4"),
        helper.make_node("Unsqueeze", ["fc"], ["u"], axes=[1], name="Unsqueeze_5"),
        helper.make_node("Squeeze", ["u"], ["sq"], axes=[1], name="Squeeze_6"),
        helper.make_node("Softmax", ["sq"], ["probs"], axis=1, name="Softmax_7"),
    ]
    inits = [_w(rng, "w1", 8, 3, 3, 3), _w(rng, "b1", 8, scale=0.1), _w(rng, "wfc", 5, 8), _w(rng, "bfc", 5, scale=0.1)]
    inputs = [helper.make_tensor_value_info("x", F, ["N", 3, 16, 16])]
    inputs += [helper.make_tensor_value_info(t.name, F, list(t.dims)) for t in inits]
    model = _model(nodes, inputs, [helper.make_tensor_value_info("probs", F, ["N", 5])], inits, opset=11, ir=6)
    model.graph.value_info.extend([helper.make_tensor_value_info("c1", F, [1, 8, 32, 32]),  # stale
                                   helper.make_tensor_value_info("fc", F, None)])  # no shape
    model.graph.value_info[-1].type.tensor_type.ClearField("shape")
    return Case(model, [{"name": "x", "shape": [1, 3, 16, 16]}], {"x": (1, 3, 16, 16)}, kind="classification")


def lstm_state() -> Case:
    """A streaming LSTM as the ONNX LSTM op with its state as an input / output pair ([1, 1, 16])."""
    rng = np.random.default_rng(5)
    hidden = 16
    nodes = [
        helper.make_node("Unsqueeze", ["x", "axes0"], ["seq"], name="/rnn/Unsqueeze"),
        helper.make_node("LSTM", ["seq", "W", "R", "B", "", "h", "c"], ["y", "hN", "cN"], hidden_size=hidden,
                         name="/rnn/LSTM"),
        helper.make_node("Squeeze", ["hN", "axes0"], ["h1"], name="/rnn/Squeeze"),
        helper.make_node("MatMul", ["h1", "wo"], ["out"], name="/head/MatMul"),
    ]
    inits = [_w(rng, "W", 1, 4 * hidden, 8), _w(rng, "R", 1, 4 * hidden, hidden), _w(rng, "B", 1, 8 * hidden, scale=0.1),
             _w(rng, "wo", hidden, 3), _const("axes0", [0])]
    inputs = [helper.make_tensor_value_info("x", F, [1, 8]), helper.make_tensor_value_info("h", F, [1, 1, hidden]),
              helper.make_tensor_value_info("c", F, [1, 1, hidden])]
    outputs = [helper.make_tensor_value_info(n, F, None) for n in ("out", "hN", "cN")]
    specs = [{"name": "x", "shape": [1, 8]}, {"name": "h", "shape": [1, 1, hidden], "layout": "DNC"},
             {"name": "c", "shape": [1, 1, hidden], "layout": "DNC"}]
    return Case(_model(nodes, inputs, outputs, inits), specs, {"x": (1, 8), "h": (1, 1, hidden), "c": (1, 1, hidden)})


# name -> builder, in the coverage table's order
CASES: dict[str, Callable[[], Case]] = {
    "ONNX: input [batch, 3, ?, 32] (a dimension with neither value nor name)": unnamed_dim,
    "ONNX: -1 and 0 dynamic dimensions (--input-shape)": minus_one_dims,
    "ONNX: scalar int64 sr frozen (value =), shape-driven If nodes, state in/out": scalar_config_and_ifs,
    "ONNX: recurrent state input/output pair": recurrent_state,
    "ONNX: ConvTranspose upsampling head": conv_transpose_head,
    "ONNX: old exporter (opset 11, IR 6, initializers as inputs, stale value_info)": old_exporter,
    "ONNX: LSTM op with its state as inputs/outputs": lstm_state,
}


def data_for(case: Case, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` samples per fed input, stacked on a new first axis: [n, *shape]."""
    rng = np.random.default_rng(seed)
    ints = {t["name"] for t in case.inputs if t.get("dtype") == "int32"}
    return {name: np.full((n, *shape), 16000, np.int32) if name in ints
            else (rng.standard_normal((n, *shape)) * 0.5).astype(np.float32) for name, shape in case.data.items()}


def _toml_value(v: Any) -> str:
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def write_model_dir(case: Case, root: Any, *, name: str = "model", n_cal: int = 24, n_eval: int = 16) -> None:
    """A complete model folder for ``case``: model.onnx, edgeq.toml, calibration and eval data (and for a
    classifier, labels that are the float model's own top-1 on onnxruntime, and labels.txt)."""
    import onnxruntime as ort

    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(case.model.SerializeToString())
    lines = ["[model]", f"name = {_toml_value(name)}", 'format = "onnx"', 'file = "model.onnx"', ""]
    for table in case.inputs:
        lines += ["[[inputs]]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()] + [""]
    lines += ["[task]", f"kind = {_toml_value(case.kind)}"]
    if case.kind == "classification":
        lines += ['labels = "labels.txt"', f"output = {_toml_value(case.model.graph.output[0].name)}"]
    lines += ["", "[data]", 'calibration = "data/calibration"', 'eval = "data/eval"', ""]
    (root / "edgeq.toml").write_text("\n".join(lines), encoding="utf-8")
    for role, n, seed in (("calibration", n_cal, 0), ("eval", n_eval, 1)):
        folder = root / "data" / role
        folder.mkdir(parents=True)
        arrays = data_for(case, n, seed)
        for k, arr in arrays.items():
            np.save(folder / f"{k}.npy", arr)
        if role == "eval" and case.kind == "classification":
            sess = ort.InferenceSession(case.model.SerializeToString(), providers=["CPUExecutionProvider"])
            frozen = {t["name"]: np.array(t["value"], np.int64) for t in case.inputs if "value" in t}
            out = case.model.graph.output[0].name
            labels = [int(np.argmax(sess.run([out], {**{k: a[i] for k, a in arrays.items()}, **frozen})[0]))
                      for i in range(n)]
            np.save(folder / "labels.npy", np.array(labels, np.int64))
            classes = sess.get_outputs()[0].shape[-1]
            (root / "labels.txt").write_text("".join(f"class{c}\n" for c in range(classes)), encoding="utf-8")
