"""edgeq.config for multi-graph models: [[graphs]] parsing and the translation task's wiring checks."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import DELETE, INPUT, OUTPUT, make_model_dir, write_config
from tiny_translator import D_MODEL, LENGTH, make_translation_dir, translation_config

from edgeq.artifacts import SINGLE_GRAPH
from edgeq.config import GraphSpec, load_model_spec
from edgeq.errors import ConfigError, ModelError

Config = dict[str, Any]


def cfg_edit(fn: Callable[[Config], None]) -> Callable[[Config], Config]:
    def run(cfg: Config) -> Config:
        out = copy.deepcopy(cfg)
        fn(out)
        return out

    return run


def _enc(cfg: Config) -> Config:
    return cfg["graphs"][0]


def _dec(cfg: Config) -> Config:
    return cfg["graphs"][1]


def _dec_input(name: str) -> Callable[[Config], Config]:
    return lambda cfg: next(i for i in _dec(cfg)["inputs"] if i["name"] == name)


def _set(where: Callable[[Config], Config], **values: Any) -> Callable[[Config], Config]:
    return cfg_edit(lambda cfg: where(cfg).update(values))


def _drop_dec_input(name: str) -> Callable[[Config], Config]:
    def run(cfg: Config) -> None:
        _dec(cfg)["inputs"] = [i for i in _dec(cfg)["inputs"] if i["name"] != name]

    return cfg_edit(run)


def _task(**values: Any) -> Callable[[Config], Config]:
    def run(cfg: Config) -> None:
        for k, v in values.items():
            if v is DELETE:
                cfg["task"].pop(k, None)
            else:
                cfg["task"][k] = v

    return cfg_edit(run)


def _as_onnx(**files: str) -> Callable[[Config], Config]:
    """format = "onnx": no [model].file/class/weights; each graph names its own file (if given)."""

    def run(cfg: Config) -> None:
        cfg["model"] = {"name": cfg["model"]["name"], "format": "onnx"}
        for g in cfg["graphs"]:
            g.pop("method")
            if g["name"] in files:
                g["file"] = files[g["name"]]

    return cfg_edit(run)


_IDS = {"shape": [1, LENGTH], "dtype": "int32"}

# (mutation of the valid translation edgeq.toml, error, message fragment)
GRAPH_CASES = [
    pytest.param(
        cfg_edit(lambda c: c.update(inputs=[{"name": "src_ids", **_IDS}])), ConfigError,
        "use either top-level [[inputs]]/[[outputs]] (one graph) or [[graphs]], not both", id="inputs-and-graphs",
    ),
    pytest.param(
        cfg_edit(lambda c: c.update(outputs=[{"name": "logits"}])), ConfigError, "not both", id="outputs-and-graphs",
    ),
    pytest.param(cfg_edit(lambda c: c.update(graphs=[])), ConfigError, "[[graphs]] must list at least one graph", id="no-graphs"),
    pytest.param(
        _set(_enc, name="enc"), ConfigError,
        "[task].encoder names graph 'encoder', but the [[graphs]] are: enc, decoder", id="missing-encoder-graph",
    ),
    pytest.param(
        cfg_edit(lambda c: c["graphs"].pop(1)), ConfigError,
        "[task].decoder names graph 'decoder', but the [[graphs]] are: encoder", id="missing-decoder-graph",
    ),
    pytest.param(
        _task(decoder="dec"), ConfigError, "[task].decoder names graph 'dec'", id="task-names-another-decoder",
    ),
    pytest.param(
        cfg_edit(lambda c: c["graphs"].append({**copy.deepcopy(c["graphs"][1]), "name": "extra"})), ConfigError,
        "a translation model has two [[graphs]], an encoder and a decoder", id="three-graphs",
    ),
    pytest.param(
        cfg_edit(lambda c: c["graphs"].append(copy.deepcopy(c["graphs"][1]))), ConfigError,
        "graph names must be unique, got ['encoder', 'decoder', 'decoder']", id="duplicate-graph-names",
    ),
    pytest.param(
        _set(_enc, inputs=[{"name": "tokens", **_IDS}]), ConfigError,
        "the encoder graph must take exactly one input, 'src_ids' (source token ids)", id="encoder-input-misnamed",
    ),
    pytest.param(
        _set(_enc, inputs=[{"name": "src_ids", **_IDS}, {"name": "lengths", **_IDS}]), ConfigError,
        "the encoder graph must take exactly one input, 'src_ids'", id="encoder-two-inputs",
    ),
    pytest.param(
        _set(_enc, outputs=[{"name": "memory"}, {"name": "pooled"}]), ConfigError,
        "the encoder graph must list exactly one output, 'memory'", id="encoder-two-outputs",
    ),
    pytest.param(
        _set(_enc, outputs=[]), ConfigError, "the encoder graph must list exactly one output, 'memory'", id="encoder-no-outputs",
    ),
    pytest.param(
        _drop_dec_input("memory"), ConfigError,
        "the decoder graph's inputs must be 'tgt_ids' and 'memory' (and optionally 'src_ids'), got ['src_ids', 'tgt_ids']",
        id="decoder-missing-memory",
    ),
    pytest.param(
        _drop_dec_input("tgt_ids"), ConfigError, "the decoder graph's inputs must be 'tgt_ids' and 'memory'",
        id="decoder-missing-target-ids",
    ),
    pytest.param(
        cfg_edit(lambda c: _dec(c)["inputs"].append({"name": "step", **_IDS})), ConfigError,
        "got ['memory', 'src_ids', 'step', 'tgt_ids']", id="decoder-extra-input",
    ),
    pytest.param(
        _set(_dec, outputs=[{"name": "scores"}]), ConfigError,
        "the decoder graph must list exactly one output, 'logits'", id="decoder-output-misnamed",
    ),
    pytest.param(
        cfg_edit(lambda c: _enc(c)["inputs"][0].update(dtype="float32")), ConfigError,
        "graph 'encoder' input 'src_ids' holds token ids: it must be int32 with shape [1, max_length], got float32 [1, 8]",
        id="encoder-ids-float",
    ),
    pytest.param(
        _set(_dec_input("tgt_ids"), dtype="float32"), ConfigError,
        "graph 'decoder' input 'tgt_ids' holds token ids: it must be int32", id="decoder-target-ids-float",
    ),
    pytest.param(
        _set(_dec_input("src_ids"), dtype="float32"), ConfigError,
        "graph 'decoder' input 'src_ids' holds token ids: it must be int32", id="decoder-source-ids-float",
    ),
    pytest.param(
        cfg_edit(lambda c: _enc(c)["inputs"][0].update(shape=[2, LENGTH])), ConfigError,
        "got int32 [2, 8]", id="encoder-ids-batch-2",
    ),
    pytest.param(
        _set(_dec_input("tgt_ids"), shape=[1, LENGTH, 1]), ConfigError,
        "graph 'decoder' input 'tgt_ids' holds token ids: it must be int32 with shape [1, max_length], got int32 [1, 8, 1]",
        id="decoder-ids-rank-3",
    ),
    pytest.param(
        _set(_dec_input("tgt_ids"), shape=[LENGTH]), ConfigError, "got int32 [8]", id="decoder-ids-rank-1",
    ),
    pytest.param(
        _set(_dec_input("memory"), dtype="int32"), ConfigError, "decoder input 'memory' must be float32", id="memory-int32",
    ),
    pytest.param(
        _task(tokenizer=DELETE), ConfigError,
        "[task].tokenizer is required for translation (a SentencePiece .model)", id="no-tokenizer",
    ),
    pytest.param(
        _task(tokenizer="spm.model"), ConfigError, "spm.model' does not exist; fix the path", id="tokenizer-missing-file",
    ),
    pytest.param(
        _set(_enc, method="encode", inputs_extra=1), ConfigError, "unknown key 'inputs_extra' in [graphs[0]]",
        id="typo-in-graph",
    ),
    pytest.param(
        cfg_edit(lambda c: _enc(c).pop("inputs")), ConfigError, "[[graphs[0].inputs]] must list at least one input",
        id="graph-without-inputs",
    ),
    pytest.param(
        cfg_edit(lambda c: _enc(c).pop("name")), ConfigError, "missing required key 'name' in [graphs[0]]",
        id="graph-without-name",
    ),
    pytest.param(
        cfg_edit(lambda c: _dec(c)["inputs"].append({"name": "memory", "shape": [1, LENGTH, D_MODEL]})), ConfigError,
        "input names must be unique", id="duplicate-input-names",
    ),
    pytest.param(_as_onnx(), ConfigError, "graphs[0].file is required for format = 'onnx' (one .onnx file per graph)",
                 id="onnx-graph-without-file"),
    pytest.param(_as_onnx(encoder="encoder.onnx"), ModelError, "graphs[0].file", id="onnx-graph-file-missing"),
]


@pytest.mark.parametrize(("mutate", "error", "fragment"), GRAPH_CASES)
def test_bad_graphs_config_is_refused_with_one_line(
    tmp_path: Path, mutate: Callable[[Config], Config], error: type, fragment: str
) -> None:
    root = make_translation_dir(tmp_path)
    load_model_spec(root)  # valid as made
    write_config(root, mutate(translation_config()))
    with pytest.raises(error) as info:
        load_model_spec(root)
    message = str(info.value)
    assert fragment in message, message
    assert "\n" not in message and info.value.exit_code == 2


def test_translation_spec_reads_graphs_and_wiring(tmp_path: Path) -> None:
    spec = load_model_spec(make_translation_dir(tmp_path))
    assert [g.name for g in spec.graphs] == ["encoder", "decoder"]
    enc, dec = spec.graph("encoder"), spec.graph("decoder")
    assert (enc.method, dec.method, enc.file, dec.file) == ("encode", "decode", None, None)
    assert [(i.name, i.shape, i.dtype, i.layout) for i in enc.inputs] == [("src_ids", (1, 8), "int32", "NC")]
    assert [(i.name, i.shape, i.dtype, i.layout) for i in dec.inputs] == [
        ("tgt_ids", (1, 8), "int32", "NC"),
        ("memory", (1, 8, 16), "float32", "NTC"),
        ("src_ids", (1, 8), "int32", "NC"),
    ]
    assert [o.name for o in enc.outputs] == ["memory"] and [o.name for o in dec.outputs] == ["logits"]
    t = spec.task
    assert (t.kind, t.tokenizer, t.output, t.labels) == ("translation", spec.root / "tokenizer.model", None, None)
    assert (t.encoder, t.decoder, t.source_ids, t.target_ids, t.memory, t.logits) == (
        "encoder", "decoder", "src_ids", "tgt_ids", "memory", "logits",
    )
    assert spec.source_files == [spec.root / "model.py", spec.root / "weights.safetensors"]


def test_a_multi_graph_spec_has_no_single_graph(tmp_path: Path) -> None:
    spec = load_model_spec(make_translation_dir(tmp_path))
    for attr in ("single", "inputs", "outputs"):
        with pytest.raises(ConfigError, match="has 2 graphs; this needs a one-graph model"):
            getattr(spec, attr)


def test_decoder_without_source_ids_is_valid(tmp_path: Path) -> None:
    root = make_translation_dir(tmp_path)
    write_config(root, _drop_dec_input("src_ids")(translation_config()))
    assert [i.name for i in load_model_spec(root).graph("decoder").inputs] == ["tgt_ids", "memory"]


def test_renamed_wiring(tmp_path: Path) -> None:
    """Graph and tensor names are the user's: [task] says which is which."""
    cfg = translation_config()
    cfg["graphs"][0]["name"], cfg["graphs"][1]["name"] = "enc", "dec"
    cfg["graphs"][0]["inputs"][0]["name"] = "source"
    cfg["graphs"][0]["outputs"] = [{"name": "hidden"}]
    cfg["graphs"][1]["inputs"] = [{"name": "target", **_IDS}, {"name": "hidden", "shape": [1, LENGTH, D_MODEL]}]
    cfg["graphs"][1]["outputs"] = [{"name": "scores"}]
    cfg["task"].update(encoder="enc", decoder="dec", source_ids="source", target_ids="target", memory="hidden",
                       logits="scores")
    root = make_translation_dir(tmp_path)
    write_config(root, cfg)
    spec = load_model_spec(root)
    assert (spec.task.encoder, spec.task.memory, spec.graph("dec").input("hidden").layout) == ("enc", "hidden", "NCW")


def test_token_ids_of_another_length_per_graph(tmp_path: Path) -> None:
    """Source and target lengths may differ ([1, S] and [1, T])."""
    cfg = translation_config()
    cfg["graphs"][1]["inputs"][0]["shape"] = [1, 12]
    root = make_translation_dir(tmp_path)
    write_config(root, cfg)
    spec = load_model_spec(root)
    assert spec.graph("decoder").input("tgt_ids").shape == (1, 12)


@pytest.mark.parametrize("key", ["tokenizer", "encoder", "decoder", "source_ids", "target_ids", "memory", "logits"])
def test_translation_keys_are_refused_for_other_tasks(tmp_path: Path, key: str) -> None:
    root = make_model_dir(tmp_path, task={key: "tokenizer.model" if key == "tokenizer" else "x"})
    (root / "tokenizer.model").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"\[task\] tokenizer/encoder/decoder keys are for kind = 'translation' only"):
        load_model_spec(root)


@pytest.mark.parametrize("kind", ["classification", "generic"])
def test_one_graph_tasks_refuse_two_graphs(tmp_path: Path, kind: str) -> None:
    cfg = translation_config()
    cfg["task"] = {"kind": kind, **({"output": "logits"} if kind == "classification" else {})}
    root = make_translation_dir(tmp_path)
    write_config(root, cfg)
    with pytest.raises(ConfigError, match=f"task '{kind}' takes one graph; use top-level"):
        load_model_spec(root)


def test_one_graph_model_is_the_graph_named_model(tmp_path: Path) -> None:
    spec = load_model_spec(make_model_dir(tmp_path))
    (graph,) = spec.graphs
    assert isinstance(graph, GraphSpec) and graph.name == SINGLE_GRAPH == "model"
    assert spec.single is graph and spec.inputs == graph.inputs and spec.outputs == graph.outputs
    assert [i.name for i in graph.inputs] == [INPUT] and [o.name for o in graph.outputs] == [OUTPUT]
    assert graph.method is None and graph.file is None


def test_one_graph_onnx_model_names_its_file_on_the_graph(tmp_path: Path) -> None:
    spec = load_model_spec(make_model_dir(tmp_path, "onnx"))
    assert spec.single.file == spec.file == spec.root / "model.onnx"
    assert spec.source_files == [spec.root / "model.onnx"]


def test_a_one_graph_model_may_use_graphs_for_generic_tasks(tmp_path: Path) -> None:
    """[[graphs]] with one graph is a one-graph model of that name (for PyTorch, a method other than forward)."""
    root = make_model_dir(
        tmp_path, inputs=DELETE, outputs=DELETE, task={"kind": "generic", "output": DELETE, "labels": DELETE},
        graphs=[{"name": "net", "method": "forward", "inputs": [{"name": INPUT, "shape": [1, 3, 8, 8]}],
                 "outputs": [{"name": OUTPUT}]}],
    )
    spec = load_model_spec(root)
    assert spec.single.name == "net" and spec.single.method == "forward"


def test_onnx_translation_model_names_one_file_per_graph(tmp_path: Path) -> None:
    root = make_translation_dir(tmp_path)
    for name in ("encoder.onnx", "decoder.onnx"):
        (root / name).write_bytes(b"onnx")
    write_config(root, _as_onnx(encoder="encoder.onnx", decoder="decoder.onnx")(translation_config()))
    spec = load_model_spec(root)
    assert spec.file is None and spec.class_name is None and spec.weights is None
    assert [g.file for g in spec.graphs] == [root / "encoder.onnx", root / "decoder.onnx"]
    assert spec.source_files == [root / "encoder.onnx", root / "decoder.onnx"]
