"""calibrate stage: every graph's calibration set. Export and calibrate only (no converter runs).

Also the token-id checks: token ids in a one-graph model's calibration or eval arrays must index a
row of the embedding table they feed (a translation model's ids come from its tokenizer, whose
size is checked against the decoder's logits instead: see test_text.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import (
    DELETE,
    invoke_cli,
    make_context,
    make_model_dir,
    run_stage,
    snapshot,
    staging_leftovers,
    write_config,
)
from onnx import TensorProto, helper, numpy_helper
from tiny_translator import (
    BOS,
    EOS,
    LENGTH,
    PAD,
    load_translator,
    make_translation_dir,
    translator_assets,
)

from edgeq.config import InputSpec, load_model_spec, load_target
from edgeq.context import BuildContext
from edgeq.data import ArrayDataset, check_token_ids
from edgeq.errors import ConfigError, DataError
from edgeq.onnx_files import embedding_rows
from edgeq.results import CalibrationResult, ExportResult, QuantizeResult
from edgeq.stages.calibrate import STAGE
from edgeq.stages.export import STAGE as EXPORT
from edgeq.stages.quantize import STAGE as QUANTIZE
from edgeq.tasks.translation import PREFIXES_PER_SENTENCE, prefix_lengths
from edgeq.text import Tokenizer


def translation_context(model_dir: Path, work: Path) -> BuildContext:
    """A BuildContext for a translation folder as edgeq.build makes it, without running any stage."""
    from edgeq.tasks import make_task

    spec = load_model_spec(model_dir)
    target = load_target("android")
    task = make_task(spec)
    calibration, evaluation = task.open_data()
    (work / "build").mkdir(parents=True)
    (work / "bundle").mkdir(parents=True)
    return BuildContext(spec=spec, target=target, build_dir=work / "build", bundle_dir=work / "bundle",
                        gates=target.gate_limits(spec.gates, {}), task=task, calibration=calibration, eval=evaluation)


# --- prefix_lengths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "k", "expected"),
    [
        (0, 4, [1]),
        (1, 4, [1]),
        (2, 4, [1, 2]),
        (3, 4, [1, 2, 3]),
        (4, 4, [1, 2, 3, 4]),
        (7, 4, [1, 3, 5, 7]),
        (8, 4, [1, 3, 6, 8]),
        (10, 4, [1, 4, 7, 10]),
        (8, 2, [1, 8]),
        (5, 3, [1, 3, 5]),
    ],
)
def test_prefix_lengths(n: int, k: int, expected: list[int]) -> None:
    assert prefix_lengths(n, k) == expected


@pytest.mark.parametrize("n", range(1, 40))
def test_prefix_lengths_are_distinct_in_range_and_include_both_ends(n: int) -> None:
    lengths = prefix_lengths(n)
    assert lengths == sorted(set(lengths))
    assert lengths[0] == 1 and lengths[-1] == n
    assert len(lengths) == min(n, PREFIXES_PER_SENTENCE)


# --- the translation model: export then calibrate -----------------------------------------------------


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> BuildContext:
    root = tmp_path_factory.mktemp("calibrate")
    ctx = translation_context(make_translation_dir(root), root / "work")
    run_stage(EXPORT, ctx)
    run_stage(STAGE, ctx)
    return ctx


def test_export_writes_one_float_onnx_per_graph(calibrated: BuildContext) -> None:
    ctx = calibrated
    assert set(ctx.artifacts["onnx_float"]) == {"encoder", "decoder"}
    for graph, outputs in (("encoder", ["memory"]), ("decoder", ["logits"])):
        art = ctx.artifact("onnx_float", graph)
        assert (art.path, art.graph, art.meta) == (ctx.build_dir / f"{graph}.float.onnx", graph, {"outputs": outputs})
        model = onnx.load(str(art.path))
        assert all(i.type.tensor_type.elem_type in (TensorProto.INT32, TensorProto.FLOAT) for i in model.graph.input)
    info = ctx.result(ExportResult).facts()
    assert list(info["graphs"]) == ["encoder", "decoder"]
    assert info["graphs"]["encoder"]["outputs"] == ["memory"] and info["graphs"]["decoder"]["outputs"] == ["logits"]
    assert {g["opset"] for g in info["graphs"].values()} == {17}
    with pytest.raises(ConfigError, match="has 2 graphs; this needs a one-graph model"):
        ctx.artifact("onnx_float")  # a two-graph model has no default graph


def test_exported_graphs_compute_encode_and_decode(calibrated: BuildContext) -> None:
    import onnxruntime as ort
    import torch

    ctx = calibrated
    net = load_translator()
    tok = Tokenizer(ctx.spec.task.tokenizer)
    src = tok.source_row("red cat dog", LENGTH)
    tgt = np.full((1, LENGTH), PAD, np.int32)
    tgt[0, :3] = [BOS, *tok.encode("rouge chat")]
    enc = ort.InferenceSession(str(ctx.artifact("onnx_float", "encoder").path), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(ctx.artifact("onnx_float", "decoder").path), providers=["CPUExecutionProvider"])
    (memory,) = enc.run(None, {"src_ids": src})
    (logits,) = dec.run(None, {"tgt_ids": tgt, "memory": memory, "src_ids": src})
    with torch.no_grad():
        want_memory = net.encode(torch.from_numpy(src)).numpy()
        want_logits = net.decode(torch.from_numpy(tgt), torch.from_numpy(memory), torch.from_numpy(src)).numpy()
    assert memory.shape == (1, LENGTH, 16) and logits.shape == (1, LENGTH, translator_assets().vocab_size)
    np.testing.assert_allclose(memory, want_memory, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-4)


def test_encoder_set_is_the_tokenized_sources(calibrated: BuildContext) -> None:
    ctx = calibrated
    tok = Tokenizer(ctx.spec.task.tokenizer)
    enc = ctx.result(CalibrationResult).sets["encoder"]
    assert isinstance(enc, ArrayDataset) and enc.folder == ctx.build_dir / "calibration" / "encoder"
    assert len(enc) == len(ctx.calibration) == len(translator_assets().calibration)
    for k, source in enumerate(ctx.calibration.sources):
        sample = enc.sample(k)
        assert list(sample) == ["src_ids"]
        np.testing.assert_array_equal(sample["src_ids"], tok.source_row(source, LENGTH))
        assert sample["src_ids"].dtype == np.int32


def test_decoder_set_is_teacher_forced_prefixes_with_the_float_memory(calibrated: BuildContext) -> None:
    import onnxruntime as ort

    ctx = calibrated
    tok = Tokenizer(ctx.spec.task.tokenizer)
    enc = ort.InferenceSession(str(ctx.artifact("onnx_float", "encoder").path), providers=["CPUExecutionProvider"])
    dec = ctx.result(CalibrationResult).sets["decoder"]
    assert [i.name for i in dec.inputs] == ["tgt_ids", "memory", "src_ids"]
    expected = []
    for source, target in zip(ctx.calibration.sources, ctx.calibration.targets, strict=True):
        fed = tok.target_ids(target)[:-1]  # BOS + pieces
        src = tok.source_row(source, LENGTH)
        (memory,) = enc.run(None, {"src_ids": src})
        for n in prefix_lengths(len(fed)):
            row = np.full((1, LENGTH), PAD, np.int32)
            row[0, :n] = fed[:n]
            expected.append((row, memory, src))
    assert len(dec) == len(expected)
    assert ctx.result(CalibrationResult).samples == {"encoder": len(ctx.calibration), "decoder": len(expected)}
    for k, (row, memory, src) in enumerate(expected):
        sample = dec.sample(k)
        np.testing.assert_array_equal(sample["tgt_ids"], row)
        assert sample["tgt_ids"][0, 0] == BOS and EOS not in sample["tgt_ids"]  # EOS is only ever predicted
        np.testing.assert_allclose(sample["memory"], memory, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(sample["src_ids"], src)


def test_quantize_uses_each_graphs_own_set(calibrated: BuildContext, tmp_path: Path) -> None:
    ctx = calibrated
    run_stage(QUANTIZE, ctx)
    assert set(ctx.artifacts["onnx_int8"]) == {"encoder", "decoder"}
    for graph in ("encoder", "decoder"):
        art = ctx.artifact("onnx_int8", graph)
        assert art.path == ctx.build_dir / f"{graph}.int8.onnx"
        ops = [n.op_type for n in onnx.load(str(art.path)).graph.node]
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    samples = ctx.result(QuantizeResult).recipe["calibration_samples"]
    assert samples == {"encoder": len(ctx.calibration), "decoder": len(ctx.result(CalibrationResult).sets["decoder"])}


def test_calibration_sample_limit_counts_sentences(tmp_path: Path) -> None:
    root = make_translation_dir(tmp_path, data={"calibration_samples": 3})
    ctx = translation_context(root, tmp_path / "work")
    run_stage(EXPORT, ctx)
    result = run_stage(STAGE, ctx)
    tok = Tokenizer(root / "tokenizer.model")
    first3 = ctx.calibration.targets[:3]
    assert result.samples == {
        "encoder": 3,
        "decoder": sum(len(prefix_lengths(len(tok.target_ids(t)) - 1)) for t in first3),
    }
    assert len(ctx.result(CalibrationResult).sets["encoder"]) == 3


def test_decoder_without_source_ids_gets_no_source_set(tmp_path: Path) -> None:
    """A decoder that does not take the source ids: its set has only tgt_ids and memory."""
    import tomllib

    root = make_translation_dir(tmp_path)
    cfg = tomllib.loads((root / "edgeq.toml").read_text())
    cfg["graphs"][1]["inputs"] = cfg["graphs"][1]["inputs"][:2]
    cfg["graphs"][1]["method"] = "decode_no_source"
    write_config(root, cfg)
    with open(root / "model.py", "a", encoding="utf-8") as fh:
        fh.write(
            "\n\ndef _decode_no_source(self, tgt_ids, memory):\n"
            "    return self.decode(tgt_ids, memory, torch.ones(memory.shape[:2], dtype=torch.int32))\n\n\n"
            "TinyTranslator.decode_no_source = _decode_no_source\n"
        )
    ctx = translation_context(root, tmp_path / "work")
    run_stage(EXPORT, ctx)
    run_stage(STAGE, ctx)
    dec = ctx.result(CalibrationResult).sets["decoder"]
    assert list(dec.sample(0)) == ["tgt_ids", "memory"]
    assert sorted(p.name for p in (ctx.build_dir / "calibration" / "decoder").iterdir()) == ["memory.npy", "tgt_ids.npy"]


def test_one_graph_model_is_calibrated_on_the_users_arrays(tmp_path: Path) -> None:
    ctx = make_context(make_model_dir(tmp_path), tmp_path / "work")
    run_stage(EXPORT, ctx)
    result = run_stage(STAGE, ctx)
    assert ctx.result(CalibrationResult).sets == {"model": ctx.calibration}
    assert ctx.result(CalibrationResult).sets["model"] is ctx.calibration  # nothing copied
    assert result.samples == {"model": len(ctx.calibration)}
    assert not (ctx.build_dir / "calibration").exists()


# --- token ids outside the vocabulary ------------------------------------------------------------------

VOCAB = 10
IDS_SHAPE = (1, 6)

EMBED_PY = '''\
import torch
from torch import nn


class EmbedNet(nn.Module):
    def __init__(self, vocab_size: int = 10):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids):
        return self.fc(self.embed(ids.long()).mean(dim=1))
'''


def make_embed_dir(tmp_path: Path, calibration: np.ndarray | None = None, evaluation: np.ndarray | None = None) -> Path:
    """A generic one-graph model whose int32 input indexes an embedding table of VOCAB rows."""
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    root = tmp_path / "embed"
    (root / "data" / "calibration").mkdir(parents=True)
    (root / "data" / "eval").mkdir(parents=True)
    (root / "model.py").write_text(EMBED_PY, encoding="utf-8")
    namespace: dict[str, Any] = {}
    exec(EMBED_PY, namespace)
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in namespace["EmbedNet"]().state_dict().items()}, str(root / "weights.safetensors"))
    for role, arr in (("calibration", calibration), ("eval", evaluation)):
        ids = arr if arr is not None else rng.integers(0, VOCAB, (12, IDS_SHAPE[1])).astype(np.int32)
        np.save(root / "data" / role / "ids.npy", ids)
    write_config(root, {
        "model": {"name": "embed", "format": "pytorch", "file": "model.py", "class": "EmbedNet",
                  "weights": "weights.safetensors", "init_args": {"vocab_size": VOCAB}},
        "inputs": [{"name": "ids", "shape": list(IDS_SHAPE), "dtype": "int32"}],
        "outputs": [{"name": "out"}],
        "task": {"kind": "generic"},
        "data": {"calibration": "data/calibration", "eval": "data/eval"},
    })
    return root


def _with(value: int, row: int, col: int = 2, n: int = 12) -> np.ndarray:
    ids = np.random.default_rng(1).integers(0, VOCAB, (n, IDS_SHAPE[1])).astype(np.int32)
    ids[row, col] = value
    return ids


def test_embedding_rows_of_an_exported_model(tmp_path: Path) -> None:
    ctx = make_context(make_embed_dir(tmp_path), tmp_path / "work")
    run_stage(EXPORT, ctx)
    assert embedding_rows(ctx.artifact("onnx_float").path, ctx.spec.inputs) == {"ids": VOCAB}
    run_stage(STAGE, ctx)  # ids 0..VOCAB-1 pass
    assert ctx.result(CalibrationResult).sets["model"] is ctx.calibration


def _gather_model(*, via: list[str], const_table: bool = True, rows: int = 7, second_rows: int | None = None) -> bytes:
    """ids (int32 [1, 4]) -> ``via`` pass-through ops -> Gather(table, ids) [-> a second Gather]."""
    nodes, inits, inputs = [], [], [helper.make_tensor_value_info("ids", TensorProto.INT32, [1, 4])]
    cur = "ids"
    for k, op in enumerate(via):
        out = f"v{k}"
        if op == "Cast":
            nodes.append(helper.make_node("Cast", [cur], [out], to=TensorProto.INT64))
        elif op == "Reshape":
            inits.append(numpy_helper.from_array(np.array([4], np.int64), f"shape{k}"))
            nodes.append(helper.make_node("Reshape", [cur, f"shape{k}"], [out]))
        else:
            nodes.append(helper.make_node(op, [cur], [out]))
        cur = out
    table = np.zeros((rows, 3), np.float32)
    if const_table:
        inits.append(numpy_helper.from_array(table, "table"))
    else:
        inputs.append(helper.make_tensor_value_info("table", TensorProto.FLOAT, [rows, 3]))
    nodes.append(helper.make_node("Gather", ["table", cur], ["y"]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if second_rows is not None:
        inits.append(numpy_helper.from_array(np.zeros((second_rows, 2), np.float32), "table2"))
        nodes.append(helper.make_node("Gather", ["table2", cur], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({"via": []}, {"ids": 7}, id="direct"),
        pytest.param({"via": ["Cast"]}, {"ids": 7}, id="after-cast"),
        pytest.param({"via": ["Cast", "Reshape", "Identity"]}, {"ids": 7}, id="after-cast-reshape-identity"),
        pytest.param({"via": ["Cast"], "second_rows": 5}, {"ids": 5}, id="two-tables-smallest-wins"),
        pytest.param({"via": ["Cast"], "const_table": False}, {}, id="table-not-a-constant"),
        pytest.param({"via": ["Abs"]}, {}, id="ids-transformed-first"),
    ],
)
def test_embedding_rows_follows_pass_through_ops(tmp_path: Path, kwargs: dict[str, Any], expected: dict[str, int]) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(_gather_model(**kwargs))
    inputs = (InputSpec("ids", (1, 4), "int32", "NC"),)
    assert embedding_rows(path, inputs) == expected


def test_embedding_rows_ignores_float_inputs(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(_gather_model(via=["Cast"]))
    assert embedding_rows(path, (InputSpec("ids", (1, 4), "float32", "NC"),)) == {}


@pytest.mark.parametrize(
    ("value", "row"),
    [(VOCAB, 3), (VOCAB + 100, 0), (-1, 11)],
)
def test_check_token_ids_names_the_first_bad_id_and_its_row(tmp_path: Path, value: int, row: int) -> None:
    root = make_embed_dir(tmp_path, calibration=_with(value, row))
    spec = load_model_spec(root)
    ds = ArrayDataset.open(spec.data.calibration, spec.inputs, "calibration")
    with pytest.raises(DataError) as info:
        check_token_ids(ds, {"ids": VOCAB})
    assert str(info.value) == (
        f"calibration data: ids.npy holds token id {value} at row {row}, outside the model's vocabulary "
        f"(ids 0..{VOCAB - 1}); fix the data or the tokenizer"
    )
    check_token_ids(ds, {})  # no embedding input: nothing to check


def test_check_token_ids_only_reads_the_samples_in_use(tmp_path: Path) -> None:
    root = make_embed_dir(tmp_path, calibration=_with(VOCAB, 11))
    spec = load_model_spec(root)
    ds = ArrayDataset.open(spec.data.calibration, spec.inputs, "calibration", limit=11)
    check_token_ids(ds, {"ids": VOCAB})  # row 11 is past calibration_samples


def test_check_token_ids_scans_in_chunks(tmp_path: Path) -> None:
    root = make_embed_dir(tmp_path, calibration=_with(VOCAB, 2500, n=3000))
    spec = load_model_spec(root)
    ds = ArrayDataset.open(spec.data.calibration, spec.inputs, "calibration")
    with pytest.raises(DataError, match="holds token id 10 at row 2500,"):
        check_token_ids(ds, {"ids": VOCAB})


def _lines(text: str) -> list[str]:
    import re

    return [re.sub(r"\x1b\[[0-9;]*m", "", ln).rstrip() for ln in text.splitlines() if ln.strip()]


@pytest.mark.parametrize(
    ("role", "value", "row"),
    [("calibration", VOCAB, 4), ("calibration", -3, 0), ("eval", VOCAB + 5, 7)],
)
def test_build_with_token_ids_outside_the_vocabulary_exits_2(tmp_path: Path, role: str, value: int, row: int) -> None:
    """Found after export (the table size is read from the exported graph): exit 2, one error line,
    --out untouched."""
    arrays = {"calibration": None, "eval": None, role: _with(value, row)}
    root = make_embed_dir(tmp_path, calibration=arrays["calibration"], evaluation=arrays["eval"])
    out = tmp_path / "dist" / "embed"
    out.parent.mkdir()
    result = invoke_cli(["build", str(root), "--out", str(out)])
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    err = _lines(result.stderr)
    assert [ln for ln in err if ln.startswith("error")] == [err[-1]]
    assert err[-1] == (
        f"error: calibrate: {role} data: ids.npy holds token id {value} at row {row}, outside the model's "
        f"vocabulary (ids 0..{VOCAB - 1}); fix the data or the tokenizer"
    )
    assert "[2/7] calibrate failed after" in " ".join(err)
    assert not out.exists() and snapshot(out.parent) == {} and staging_leftovers(out.parent) == []


def test_token_id_check_does_not_apply_to_float_models(tmp_path: Path) -> None:
    ctx = make_context(make_model_dir(tmp_path, task={"kind": "generic", "labels": DELETE}), tmp_path / "work")
    run_stage(EXPORT, ctx)
    assert embedding_rows(ctx.artifact("onnx_float").path, ctx.spec.inputs) == {}


SMALL_SOURCE_PY = '''

class SmallSourceVocab(TinyTranslator):
    """A separate source embedding with fewer rows than the tokenizer has pieces (the logits keep all)."""

    def __init__(self, *, vocab_size: int, src_rows: int, **kw):
        super().__init__(vocab_size=vocab_size, **kw)
        self.src_embed = nn.Embedding(src_rows, self.src_pos.shape[1])

    def encode(self, src_ids):
        x = self.src_embed(src_ids.long()) + self.src_pos
        h = self.enc_ln1(x)
        x = x + self.enc_attn(h, h, self._src_mask(src_ids))
        x = x + torch.relu(self.enc_ff(self.enc_ln2(x)))
        return self.enc_norm(x)
'''


def test_translation_source_ids_outside_the_encoders_embedding_table(tmp_path: Path) -> None:
    import tomllib

    import torch
    from safetensors.torch import save_file
    from tiny_translator import TRANSLATOR_PY

    root = make_translation_dir(tmp_path)
    (root / "model.py").write_text(TRANSLATOR_PY + SMALL_SOURCE_PY, encoding="utf-8")
    namespace: dict[str, Any] = {}
    exec(TRANSLATOR_PY + SMALL_SOURCE_PY, namespace)
    torch.manual_seed(0)
    net = namespace["SmallSourceVocab"](vocab_size=translator_assets().vocab_size, src_rows=12)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(root / "weights.safetensors"))
    cfg = tomllib.loads((root / "edgeq.toml").read_text(encoding="utf-8"))
    cfg["model"]["class"] = "SmallSourceVocab"
    cfg["model"]["init_args"]["src_rows"] = 12
    write_config(root, cfg)
    out = tmp_path / "out"
    result = invoke_cli(["build", str(root), "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    err = _lines(result.stderr)
    assert [ln for ln in err if ln.startswith("error")] == [err[-1]]
    # the tokenizer can produce ids the encoder's embedding table does not have
    assert "graph 'encoder' embeds 'src_ids' with a table of 12 rows (ids 0..11)" in err[-1], err[-1]
