"""export stage: PyTorch or ONNX -> checked float ONNX with the fixed shapes from edgeq.toml."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from bad_inputs import Mutation, both, edit, save, write_bytes, write_text
from conftest import (
    INPUT,
    MODEL_PY,
    N_CALIBRATION,
    N_EVAL,
    OUTPUT,
    SHAPE,
    make_context,
    make_model_dir,
    run_stage,
    tiny_logits,
)
from onnx import TensorProto, helper, numpy_helper

from edgeq.errors import ModelError
from edgeq.results import ExportResult
from edgeq.stages.export import OPSET, STAGE


def export(root: Path, work: Path) -> Any:
    ctx = make_context(root, work)
    run_stage(STAGE, ctx)
    return ctx


def _dims(value_info: Any) -> list[Any]:
    return [
        d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim
    ]


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {INPUT: x})[0]


# --- PyTorch ---------------------------------------------------------------------------------------


def test_pytorch_export_matches_the_torch_model(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path)
    ctx = export(root, tmp_path / "work")
    assert set(ctx.artifacts["onnx_float"]) == {"model"}
    art = ctx.artifacts["onnx_float"]["model"]
    assert art is ctx.artifact("onnx_float")
    assert (art.path, art.graph) == (ctx.build_dir / "model.float.onnx", "model")
    assert (art.format, art.precision, art.meta) == ("onnx", "float32", {"outputs": [OUTPUT]})
    model = onnx.load(str(art.path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == [INPUT]
    assert _dims(model.graph.input[0]) == list(SHAPE)
    assert [o.name for o in model.graph.output] == [OUTPUT]
    assert _dims(model.graph.output[0]) == [1, 4]
    info = ctx.result(ExportResult).facts()
    assert set(info) == {"source_sha256", "graphs", "confinement"} and list(info["graphs"]) == ["model"]
    assert info["confinement"].startswith(("landlock ABI", "not confined: "))  # the export child's (edgeq.landlock)
    g = info["graphs"]["model"]
    assert g["opset"] == OPSET and g["outputs"] == [OUTPUT] and g["nodes"] == len(model.graph.node)
    expected_sha = hashlib.sha256(
        (root / "model.py").read_bytes() + (root / "weights.safetensors").read_bytes()
    )
    assert info["source_sha256"] == expected_sha.hexdigest()
    x = ctx.eval.sample(0)[INPUT]
    np.testing.assert_allclose(_run_onnx(art.path, x), tiny_logits(x), rtol=1e-4, atol=1e-4)


def test_pytorch_export_is_deterministic(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path)
    a = export(root, tmp_path / "a").artifact("onnx_float").path.read_bytes()
    b = export(root, tmp_path / "b").artifact("onnx_float").path.read_bytes()
    assert a == b


def test_pytorch_weights_from_a_state_dict_pt_file(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    root = make_model_dir(tmp_path, model={"weights": "weights.pt"})
    torch.save(load_file(str(root / "weights.safetensors")), root / "weights.pt")
    ctx = export(root, tmp_path / "work")
    x = ctx.eval.sample(1)[INPUT]
    np.testing.assert_allclose(
        _run_onnx(ctx.artifact("onnx_float").path, x), tiny_logits(x), rtol=1e-4, atol=1e-4
    )


def _torch_save(obj_factory: Callable[[], Any]) -> Mutation:
    def run(root: Path) -> None:
        import torch

        torch.save(obj_factory(), root / "weights.pt")

    return run


def _mismatched_weights(channels: int) -> Mutation:
    def run(root: Path) -> None:
        import torch
        from safetensors.torch import save_file

        namespace: dict[str, Any] = {}
        exec(MODEL_PY, namespace)
        torch.manual_seed(1)
        save_file(namespace["TinyNet"](channels=channels).state_dict(), root / "weights.safetensors")

    return run


def _drop_weight(key: str) -> Mutation:
    def run(root: Path) -> None:
        from safetensors.torch import load_file, save_file

        state = load_file(str(root / "weights.safetensors"))
        del state[key]
        save_file(state, root / "weights.safetensors")

    return run


def _zeros_tensor() -> Any:
    import torch

    return torch.zeros(3)


PT = {"weights": "weights.pt"}

PYTORCH_CASES = [
    pytest.param(
        _mismatched_weights(16), "weights.safetensors does not match TinyNet", id="weights-other-shapes"
    ),
    pytest.param(
        _drop_weight("fc.bias"), "weights.safetensors does not match TinyNet", id="weights-missing-key"
    ),
    pytest.param(
        edit(model={"class": "Nope"}), "model.py has no class 'Nope'; fix [model].class", id="no-such-class"
    ),
    pytest.param(
        write_text("model.py", "import torch\nraise RuntimeError('broken on import')\n"),
        "importing model.py failed: RuntimeError: broken on import",
        id="import-fails",
    ),
    pytest.param(
        write_text("model.py", MODEL_PY + "\ndef oops(:\n"),
        "importing model.py failed: SyntaxError",
        id="syntax-error",
    ),
    pytest.param(
        edit(model={"init_args": {"bogus": 1}}), "TinyNet(**init_args) failed: TypeError", id="bad-init-args"
    ),
    pytest.param(
        both(
            write_text(
                "model.py", MODEL_PY + "\nclass Plain:\n    def __init__(self, **kw):\n        pass\n"
            ),
            edit(model={"class": "Plain"}),
        ),
        "Plain is not a torch.nn.Module",
        id="not-a-module",
    ),
    pytest.param(
        both(
            edit(inputs=[{"name": INPUT, "shape": [1, 5, 8, 8]}]),
            save(f"data/calibration/{INPUT}.npy", np.random.default_rng(0).random((N_CALIBRATION, 5, 8, 8), np.float32)),
            save(f"data/eval/{INPUT}.npy", np.zeros((N_EVAL, 5, 8, 8), np.float32)),
        ),
        "TinyNet failed on inputs of shapes [[1, 5, 8, 8]]: RuntimeError",
        id="forward-fails",
    ),
    pytest.param(
        edit(outputs=[{"name": OUTPUT}, {"name": "features"}]),
        "TinyNet returns 1 output(s) but edgeq.toml lists 2",
        id="output-count",
    ),
    pytest.param(
        both(write_bytes("weights.npz", b"PK"), edit(model={"weights": "weights.npz"})),
        "weights file weights.npz: unsupported extension",
        id="weights-extension",
    ),
    pytest.param(
        write_bytes("weights.safetensors", b"not safetensors"),
        "is not a readable safetensors file",
        id="weights-corrupt",
    ),
    pytest.param(
        both(_torch_save(_zeros_tensor), edit(model=PT)),
        "weights.pt holds a Tensor, not a state_dict",
        id="pt-not-a-state-dict",
    ),
    pytest.param(
        both(write_bytes("weights.pt", b"garbage"), edit(model=PT)),
        "weights.pt could not be loaded without running pickled code",
        id="pt-corrupt",
    ),
    pytest.param(
        write_text("model.py", MODEL_PY + "\nimport os\nTinyNet.forward = lambda self, x: os.abort()\n"),
        "exporting model.py to ONNX crashed (SIGABRT) (in TinyNet's code or torch)",
        id="forward-aborts",
    ),
    pytest.param(
        both(write_text("model.py", MODEL_PY + "\nimport sys\nclass Quits(TinyNet):\n"
                        "    def __init__(self, **kw):\n        sys.exit(3)\n"), edit(model={"class": "Quits"})),
        "exporting model.py to ONNX exited with code 3 (in Quits's code or torch)",
        id="init-calls-sys-exit",
    ),
]


@pytest.mark.parametrize(("mutate", "fragment"), PYTORCH_CASES)
def test_pytorch_model_errors(tmp_path: Path, mutate: Mutation, fragment: str) -> None:
    root = make_model_dir(tmp_path)
    mutate(root)
    with pytest.raises(ModelError) as info:
        export(root, tmp_path / "work")
    assert fragment in str(info.value)


# --- ONNX ------------------------------------------------------------------------------------------


def test_onnx_dynamic_batch_is_fixed_to_the_configured_shape(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    source = onnx.load(str(root / "model.onnx"))
    assert _dims(source.graph.input[0]) == ["batch", 3, 8, 8]
    ctx = export(root, tmp_path / "work")
    model = onnx.load(str(ctx.artifact("onnx_float").path))
    assert _dims(model.graph.input[0]) == list(SHAPE)
    assert _dims(model.graph.output[0]) == [1, 4]
    assert (
        ctx.result(ExportResult).facts()["source_sha256"]
        == hashlib.sha256((root / "model.onnx").read_bytes()).hexdigest()
    )
    x = ctx.eval.sample(2)[INPUT]
    np.testing.assert_allclose(
        _run_onnx(ctx.artifact("onnx_float").path, x), tiny_logits(x), rtol=1e-4, atol=1e-4
    )


def test_onnx_dynamic_batch_takes_a_larger_configured_batch(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx", inputs=[{"name": INPUT, "shape": [2, 3, 8, 8]}])
    model = onnx.load(str(export(root, tmp_path / "work").artifact("onnx_float").path))
    assert _dims(model.graph.input[0]) == [2, 3, 8, 8]
    assert _dims(model.graph.output[0]) == [2, 4]


def tiny_onnx(
    *,
    shape: tuple[Any, ...] = ("N", 3, 8, 8),
    elem: int = TensorProto.FLOAT,
    extra_input: bool = False,
    fc_in: int = 3,
    nodes: bool = True,
    opset: int = 17,
) -> bytes:
    """image -> GlobalAveragePool -> Flatten -> Gemm -> logits, built with onnx.helper."""
    inputs = [helper.make_tensor_value_info(INPUT, elem, shape)]
    graph_nodes = []
    x = INPUT
    if elem != TensorProto.FLOAT:
        graph_nodes.append(helper.make_node("Cast", [INPUT], ["as_float"], to=TensorProto.FLOAT))
        x = "as_float"
    graph_nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "B"], [OUTPUT]),
    ]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 4]))
        graph_nodes[-1] = helper.make_node("Gemm", ["flat", "W", "B"], ["pre"])
        graph_nodes.append(helper.make_node("Add", ["pre", "mask"], [OUTPUT]))
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((fc_in, 4)).astype(np.float32), "W"),
        numpy_helper.from_array(np.zeros(4, np.float32), "B"),
    ]
    graph = helper.make_graph(
        graph_nodes if nodes else [],
        "tiny",
        inputs,
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, None)],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def _rename_input_data(new: str) -> Mutation:
    def run(root: Path) -> None:
        for folder in ("calibration", "eval"):
            (root / "data" / folder / f"{INPUT}.npy").rename(root / "data" / folder / f"{new}.npy")

    return run


def _flatten_data(root: Path) -> None:
    for folder in ("calibration", "eval"):
        p = root / "data" / folder / f"{INPUT}.npy"
        np.save(p, np.load(p).reshape(-1, 192))


ONNX_CASES = [
    pytest.param(
        write_bytes("model.onnx", tiny_onnx(shape=[1, 3, 16, 16])),
        "input 'image' dimension 2 is 16 in the model but 8 in edgeq.toml",
        id="static-dim-conflict",
    ),
    pytest.param(
        write_bytes("model.onnx", tiny_onnx(shape=[4, 3, 8, 8])),
        "input 'image' dimension 0 is 4 in the model but 1 in edgeq.toml",
        id="static-batch-conflict",
    ),
    pytest.param(
        both(edit(inputs=[{"name": "pixels", "shape": list(SHAPE)}]), _rename_input_data("pixels")),
        "edgeq.toml names input 'pixels' but the model's inputs are: image",
        id="input-name-not-in-model",
    ),
    pytest.param(
        edit(outputs=[{"name": "probs"}], task={"output": "probs"}),
        "edgeq.toml names output(s) ['probs'] but the model's outputs are: logits",
        id="output-not-in-model",
    ),
    pytest.param(
        both(edit(inputs=[{"name": INPUT, "shape": [1, 192]}]), _flatten_data),
        "input 'image' has rank 4 in the model but shape [1, 192] in edgeq.toml",
        id="rank-mismatch",
    ),
    pytest.param(
        write_bytes("model.onnx", tiny_onnx(extra_input=True)),
        "the model has inputs not listed in edgeq.toml: mask",
        id="unlisted-model-input",
    ),
    pytest.param(
        write_bytes("model.onnx", tiny_onnx(elem=TensorProto.INT64)),
        "input 'image' is INT64 in the model but float32 in edgeq.toml",
        id="input-dtype",
    ),
    pytest.param(
        write_bytes("model.onnx", b"\x08\x07garbage that is not a protobuf"),
        "model.onnx is not a readable ONNX file",
        id="corrupt-file",
    ),
    pytest.param(
        write_bytes("model.onnx", tiny_onnx(nodes=False)), "model.onnx has an empty graph", id="empty-graph"
    ),
]


@pytest.mark.parametrize(("mutate", "fragment"), ONNX_CASES)
def test_onnx_model_errors(tmp_path: Path, mutate: Mutation, fragment: str) -> None:
    root = make_model_dir(tmp_path, "onnx")
    mutate(root)
    with pytest.raises(ModelError) as info:
        export(root, tmp_path / "work")
    assert fragment in str(info.value)


def test_helper_built_onnx_model_exports(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    (root / "model.onnx").write_bytes(tiny_onnx())
    model = onnx.load(str(export(root, tmp_path / "work").artifact("onnx_float").path))
    assert _dims(model.graph.input[0]) == list(SHAPE)


def test_old_opset_is_upgraded_for_per_channel_qdq(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    (root / "model.onnx").write_bytes(tiny_onnx(opset=11))
    ctx = export(root, tmp_path / "work")
    assert ctx.result(ExportResult).facts()["graphs"]["model"]["opset"] >= 13
    x = ctx.eval.sample(0)[INPUT]
    assert _run_onnx(ctx.artifact("onnx_float").path, x).shape == (1, 4)


def test_outputs_are_restricted_to_the_listed_ones(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    model = onnx.load_model_from_string(tiny_onnx())
    model.graph.output.append(helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None))
    (root / "model.onnx").write_bytes(model.SerializeToString())
    ctx = export(root, tmp_path / "work")
    assert [o.name for o in onnx.load(str(ctx.artifact("onnx_float").path)).graph.output] == [OUTPUT]
    assert ctx.artifact("onnx_float").meta == {"outputs": [OUTPUT]}


def test_a_model_onnxruntime_rejects_is_refused_with_its_reason(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path, "onnx")
    (root / "model.onnx").write_bytes(tiny_onnx(fc_in=5))  # Gemm weight [5, 4] after 3 channels
    with pytest.raises(ModelError, match=r"onnxruntime cannot load model.onnx: .*Gemm.*Dimension mismatch"):
        export(root, tmp_path / "work")


def test_int64_token_input_becomes_int32_with_the_same_results() -> None:
    """Exporters write token ids as int64; edgeq.toml's int32 makes the device input int32."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgeq.config import GraphSpec, InputSpec, OutputSpec
    from edgeq.onnx_repair import fix_inputs

    table = np.arange(40, dtype=np.float32).reshape(10, 4)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["emb"]),
         helper.make_node("ReduceSum", ["emb"], ["out"], keepdims=0)],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    spec = GraphSpec("model", (InputSpec("ids", (1, 3), "int32", "NC"),), (OutputSpec("out"),))
    original = model.SerializeToString()
    fixed = model
    fix_inputs(fixed, spec, Path("model.onnx"), [])
    assert fixed.graph.input[0].type.tensor_type.elem_type == TensorProto.INT32
    ids = np.array([[1, 7, 9]])
    before = ort.InferenceSession(original).run(None, {"ids": ids.astype(np.int64)})[0]
    after = ort.InferenceSession(fixed.SerializeToString()).run(None, {"ids": ids.astype(np.int32)})[0]
    np.testing.assert_array_equal(before, after)


def test_the_models_code_runs_in_a_child_process(tmp_path: Path) -> None:
    """The user's model code and torch run in the export child: what they print goes to export.log,
    and their process is not edgeq's."""
    root = make_model_dir(tmp_path)
    code = MODEL_PY + "\nimport os\nprint('TinyNet imported in process', os.getpid())\n"
    (root / "model.py").write_text(code, encoding="utf-8")
    ctx = export(root, tmp_path / "work")
    log = (ctx.build_dir / "export.log").read_text()
    assert "TinyNet imported in process" in log
    assert int(log.split("TinyNet imported in process")[1].split()[0]) != os.getpid()
