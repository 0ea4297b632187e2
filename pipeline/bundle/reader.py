"""Using a finished bundle on its own, as an app would: model.json says how to feed each file.

``translate`` runs a translation bundle's encoder.tflite and decoder.tflite on LiteRT with the
bundle's tokenizer and the decode loop model.json describes (edgeq.decode.greedy_decode) - nothing
from the build is needed, so it checks that the bundle is complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.artifacts import Artifact
from edgeq.bundle.layout import MODEL_JSON
from edgeq.decode import DecodeSpec, greedy_decode
from edgeq.errors import ConfigError
from edgeq.inputs.files import inside, load_json, read_bytes
from edgeq.inputs.shown import shown

__all__ = ["Bundle", "translate"]


MAX_MODEL = 2**31 - 1  # a .tflite flatbuffer's limit


class _Shape:
    """Checks a decoded model.json: each key a bundle reader uses is there with the right type."""

    def __init__(self, where: str) -> None:
        self.where = where

    def get(self, obj: Any, key: str, kind: type | tuple[type, ...], path: str) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            raise ConfigError(f"{self.where}: {path}{key} is missing; the bundle is incomplete, rebuild it")
        value = obj[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise ConfigError(f"{self.where}: {path}{key} has the wrong type; the bundle is damaged, rebuild it")
        return value


def _check_tensors(shape: _Shape, g: dict[str, Any], graph: str) -> None:
    for side in ("inputs", "outputs"):
        items = shape.get(g, side, list, f"graphs.{graph}.")
        for k, t in enumerate(items):
            at = f"graphs.{graph}.{side}[{k}]."
            shape.get(t, "name", str, at)
            shape.get(t, "tensor", str, at)
            shape.get(t, "dtype", str, at)
            dims = shape.get(t, "shape", list, at)
            if not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in dims):
                raise ConfigError(f"{shape.where}: {at}shape is not a list of sizes; the bundle is damaged, rebuild it")
            q = t.get("quantization")
            if q is not None and not (isinstance(q, dict) and _numbers(q.get("scale"), positive=True)
                                      and _numbers(q.get("zero_point"))):
                raise ConfigError(f"{shape.where}: {at}quantization is damaged; rebuild the bundle")


def _numbers(value: Any, positive: bool = False) -> bool:
    """A number or a flat list of numbers, each a finite float32 (a scale: also over zero)."""
    items = value if isinstance(value, list) else [value]
    return all(isinstance(x, int | float) and not isinstance(x, bool) and abs(x) < 3.4e38
               and (not positive or x > 1.2e-38) for x in items)


@dataclass(frozen=True)
class Bundle:
    """A finished bundle: its folder and its model.json, decoded."""

    path: Path
    model: dict[str, Any]

    @classmethod
    def open(cls, path: Path, task: str | None = None) -> Bundle:
        """A bundle folder whose model.json is edgeq's: read bounded, every key checked, every file
        it names inside the bundle (see edgeq.inputs.files). ``task``: the kind of model it must hold."""
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"{shown(str(path))!r} is not a folder; pass the folder `edgeq build` wrote")
        if not os.path.lexists(path / MODEL_JSON):
            raise ConfigError(f"{shown(str(path))!r} is not an edgeq bundle (no model.json); pass the folder `edgeq build` wrote")
        where = f"{shown(str(path))}/model.json"
        model_json = inside(path, MODEL_JSON, "the bundle's model.json")
        model = load_json(model_json, where)
        if not isinstance(model, dict):
            raise ConfigError(f"{where} is not a JSON object; the bundle is damaged, rebuild it")
        bundle = cls(path, model)
        if task is not None:
            _check_kind(bundle, task)
        shape = _Shape(where)
        graphs = bundle.graphs()
        if not isinstance(graphs, dict) or not graphs:
            raise ConfigError(f"{where}: graphs is damaged; rebuild the bundle")
        for name, g in graphs.items():
            shape.get(g, "file", str, f"graphs.{shown(name)}.")
            shape.get(g, "signature", str, f"graphs.{shown(name)}.")
            _check_tensors(shape, g, shown(name))
        return bundle

    def graphs(self) -> dict[str, dict[str, Any]]:
        """The graphs model.json lists by name; a one-graph bundle's model.json is its only graph, "model"."""
        return self.model.get("graphs") or {"model": self.model}

    def file(self, rel: Any, key: str) -> Path:
        """A file model.json names, confined to the bundle (no absolute path, '..' or symlink)."""
        if not isinstance(rel, str):
            raise ConfigError(f"{shown(str(self.path))}/model.json: {key} is not a file name; rebuild the bundle")
        return inside(self.path, rel, f"the bundle's model.json {key}", fix="the bundle is not edgeq's, rebuild it")

    def runtime(self, graph: str, runtime: str = "litert", threads: int = 1) -> Any:
        """A runtime loaded with one graph's file; feeds and outputs in the .tflite's own layout."""
        from edgeq.runtimes import create_runtime

        art = self.artifact(graph)
        rt = create_runtime(runtime, threads=threads)
        try:
            rt.load(art)
        except (ValueError, RuntimeError) as e:
            raise ConfigError(f"the bundle's {shown(art.path.name)} does not load in LiteRT "
                              f"({shown(str(e).splitlines()[0] if str(e) else type(e).__name__)}); rebuild the bundle") from e
        return rt

    def decode_spec(self) -> DecodeSpec:
        """The decode loop of a translation bundle, from model.json."""
        return _decode_spec(self.model["task"])

    def artifact(self, graph: str) -> Artifact:
        """One graph's .tflite as an Artifact, its I/O mapping read from model.json (layouts as shipped)."""
        g = self.graphs()[graph]
        path = self.file(g["file"], f"graphs.{shown(graph)}.file")
        read_bytes(path, MAX_MODEL, "the bundle's model file")  # a regular file under the limit, not a FIFO or device
        def tensors(side: str) -> list[dict[str, Any]]:
            return [{"name": t["name"], "tflite_name": t["tensor"], "dtype": t["dtype"], "quantization": t.get("quantization"),
                     "perm": list(range(len(t["shape"])))} for t in g[side]]

        meta = {"signature": g["signature"], "inputs": tensors("inputs"), "outputs": tensors("outputs")}
        return Artifact("bundle", path, "tflite", str(self.model.get("precision", "int8")), meta, graph)


def _check_translation(model: dict[str, Any], where: str, graphs: dict[str, Any]) -> dict[str, Any]:
    """The task section of a translation bundle: every key the decode loop reads, typed."""
    shape = _Shape(where)
    task = shape.get(model, "task", dict, "")
    shape.get(task, "tokenizer", str, "task.")
    for key in ("bos_id", "eos_id", "pad_id"):
        if not 0 <= shape.get(task, key, int, "task.") < 2**31:  # token rows are int32
            raise ConfigError(f"{where}: task.{key} is not a token id; the bundle is damaged, rebuild it")
    for key in ("source_length", "target_length"):
        if not 0 < shape.get(task, key, int, "task.") < 1 << 16:
            raise ConfigError(f"{where}: task.{key} is not a length; the bundle is damaged, rebuild it")
    enc = shape.get(task, "encoder", dict, "task.")
    dec = shape.get(task, "decoder", dict, "task.")
    for key in ("graph", "input"):
        shape.get(enc, key, str, "task.encoder.")
    for key in ("graph", "target_input", "memory_input", "output"):
        shape.get(dec, key, str, "task.decoder.")
    shape.get(dec, "source_input", (str, type(None)), "task.decoder.")
    for side in (enc, dec):
        if side["graph"] not in graphs:
            raise ConfigError(f"{where}: task names graph {shown(side['graph'])!r}, which graphs does not list; "
                              "rebuild the bundle")
    return task


def _decode_spec(task: dict[str, Any]) -> DecodeSpec:
    enc, dec = task["encoder"], task["decoder"]
    return DecodeSpec(
        source_ids=enc["input"], target_ids=dec["target_input"], memory=dec["memory_input"], logits=dec["output"],
        decoder_takes_source=dec["source_input"] is not None, target_len=task["target_length"],
        bos_id=task["bos_id"], eos_id=task["eos_id"], pad_id=task["pad_id"],
    )


def _check_kind(bundle: Bundle, kind: str) -> None:
    task = bundle.model.get("task")
    held = task.get("kind") if isinstance(task, dict) else None
    if held != kind:
        raise ConfigError(f"{shown(str(bundle.path))} holds a {shown(str(held or 'unknown'))} model, not a {kind} model")


def translate(bundle: Bundle, texts: list[str], runtime: str = "litert") -> list[str]:
    """The bundle's translations of ``texts``: its encoder and decoder on ``runtime``, decoded greedily."""
    from edgeq.text import Tokenizer

    _check_kind(bundle, "translation")
    task = _check_translation(bundle.model, f"{shown(str(bundle.path))}/model.json", bundle.graphs())
    tok = Tokenizer(bundle.file(task["tokenizer"], "task.tokenizer"))
    enc, dec = task["encoder"], task["decoder"]
    spec = bundle.decode_spec()
    encoder, decoder = bundle.runtime(enc["graph"], runtime), bundle.runtime(dec["graph"], runtime)
    out = []
    for k, text in enumerate(texts, 1):
        try:
            row = tok.source_row(text, task["source_length"])
        except ValueError as e:
            raise ConfigError(f"input {k} is {e} with EOS, over the model's source length {task['source_length']}") from e
        try:
            ids, _ = greedy_decode(encoder.run, decoder.run, row, spec)
        except (ValueError, RuntimeError, KeyError, IndexError, TypeError) as e:
            raise ConfigError(f"the bundle does not run as its model.json says ({type(e).__name__}: "
                              f"{shown(str(e).splitlines()[0] if str(e) else '')}); rebuild the bundle") from e
        unknown = [i for i in ids if not 0 <= i < tok.vocab_size]
        if unknown:
            raise ConfigError(f"the bundle's decoder chose token {unknown[0]}, but its tokenizer has {tok.vocab_size} "
                              "pieces; the bundle is damaged, rebuild it")
        out.append(tok.decode(ids))
    return out
