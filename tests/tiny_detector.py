"""A tiny YOLO-style detector built in code (ONNX): one output [1, 4 + C, N] of boxes and scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import write_config
from onnx import TensorProto, helper, numpy_helper

C, N = 3, 16  # classes, anchors
RNG_SEED = 0


def make_detector_dir(root: Path, outputs: dict[str, object] | None = None, *, pixels: bool = True,
                      task: dict[str, object] | None = None, gates: dict[str, float] | None = None,
                      separate: bool = False) -> Path:
    """An ONNX detector built in code: flatten -> two MatMuls -> boxes (sigmoid x 320: pixels, or
    sigmoid: normalized) and sigmoid scores, concatenated on axis 1 into one output [1, 4 + C, N];
    ``separate``: SSD-style, two outputs "boxes" [1, N, 4] and "scores" [1, N, C]."""
    rng = np.random.default_rng(RNG_SEED)
    w_box = numpy_helper.from_array(rng.normal(0, 0.3, (48, 4 * N)).astype(np.float32), "w_box")
    w_cls = numpy_helper.from_array(rng.normal(0, 0.3, (48, C * N)).astype(np.float32), "w_cls")
    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
              (("flat", [1, 48]), ("box_shape", [1, 4, N]), ("cls_shape", [1, C, N]))]
    consts.append(numpy_helper.from_array(np.array(320.0 if pixels else 1.0, np.float32), "pixels"))
    nodes = [
        helper.make_node("Reshape", ["image", "flat"], ["x"]),
        helper.make_node("MatMul", ["x", "w_box"], ["b0"]),
        helper.make_node("Reshape", ["b0", "box_shape"], ["b1"]),
        helper.make_node("Sigmoid", ["b1"], ["b2"]),
        helper.make_node("Mul", ["b2", "pixels"], ["boxes"]),
        helper.make_node("MatMul", ["x", "w_cls"], ["c0"]),
        helper.make_node("Reshape", ["c0", "cls_shape"], ["c1"]),
        helper.make_node("Sigmoid", ["c1"], ["scores"]),
    ]
    if separate:
        nodes += [helper.make_node("Transpose", ["boxes"], ["boxes_out"], perm=[0, 2, 1]),
                  helper.make_node("Transpose", ["scores"], ["scores_out"], perm=[0, 2, 1])]
        graph_outputs = [helper.make_tensor_value_info("boxes_out", TensorProto.FLOAT, [1, N, 4]),
                         helper.make_tensor_value_info("scores_out", TensorProto.FLOAT, [1, N, C])]
    else:
        nodes.append(helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1))
        graph_outputs = [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + C, N])]
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
                              graph_outputs,
                              [w_box, w_cls, *consts])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    d = root / "detector"
    (d / "data" / "calibration").mkdir(parents=True)
    (d / "data" / "eval").mkdir(parents=True)
    onnx.save(model, str(d / "model.onnx"))
    np.save(d / "data" / "calibration" / "image.npy", rng.normal(0, 1, (16, 1, 3, 4, 4)).astype(np.float32))
    np.save(d / "data" / "eval" / "image.npy", rng.normal(0, 1, (24, 1, 3, 4, 4)).astype(np.float32))
    write_config(d, {
        "model": {"name": "detector", "format": "onnx", "file": "model.onnx"},
        "inputs": [{"name": "image", "shape": [1, 3, 4, 4], "dtype": "float32", "layout": "NCHW"}],
        "outputs": [{"name": "boxes_out"}, {"name": "scores_out"}] if separate else [{"name": "output0", **(outputs or {})}],
        "task": task or {"kind": "generic"},
        "data": {"calibration": "data/calibration", "eval": "data/eval"},
        **({"gates": gates} if gates else {}),
    })
    return d
