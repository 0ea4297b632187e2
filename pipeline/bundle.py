"""Using a finished bundle on its own, as an app would: model.json says how to feed each file.

``translate`` runs a translation bundle's encoder.tflite and decoder.tflite on LiteRT with the
bundle's tokenizer and the decode loop model.json describes (edgeq.decode.greedy_decode) - nothing
from the build is needed, so it checks that the bundle is complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.context import Artifact
from edgeq.decode import DecodeSpec, greedy_decode
from edgeq.errors import ConfigError

__all__ = ["Bundle", "translate"]


@dataclass(frozen=True)
class Bundle:
    path: Path
    model: dict[str, Any]

    @classmethod
    def open(cls, path: Path) -> Bundle:
        path = Path(path)
        model_json = path / "model.json"
        if not model_json.is_file():
            raise ConfigError(f"{str(path)!r} is not an edgeq bundle (no model.json); pass the folder `edgeq build` wrote")
        try:
            model = json.loads(model_json.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ConfigError(f"{model_json} is not valid JSON ({e}); rebuild the bundle") from e
        return cls(path, model)

    def graphs(self) -> dict[str, dict[str, Any]]:
        return self.model.get("graphs") or {"model": self.model}

    def runtime(self, graph: str, runtime: str = "litert", threads: int = 1) -> Any:
        """A runtime loaded with one graph's file; feeds and outputs in the .tflite's own layout."""
        from edgeq.runtimes import create_runtime

        rt = create_runtime(runtime, threads=threads)
        rt.load(self.artifact(graph))
        return rt

    def decode_spec(self) -> DecodeSpec:
        """The decode loop of a translation bundle, from model.json."""
        return _decode_spec(self.model["task"])

    def artifact(self, graph: str) -> Artifact:
        """One graph's .tflite as an Artifact, its I/O mapping read from model.json (layouts as shipped)."""
        g = self.graphs()[graph]
        meta = {
            "signature": g["signature"],
            "inputs": [{"name": i["name"], "tflite_name": i["tensor"], "dtype": i["dtype"], "quantization": i["quantization"],
                        "perm": list(range(len(i["shape"])))} for i in g["inputs"]],
            "outputs": [{"name": o["name"], "tflite_name": o["tensor"], "dtype": o["dtype"], "quantization": o["quantization"],
                         "perm": list(range(len(o["shape"])))} for o in g["outputs"]],
        }
        return Artifact("bundle", self.path / g["file"], "tflite", self.model.get("precision", "int8"), meta, graph)


def _decode_spec(task: dict[str, Any]) -> DecodeSpec:
    enc, dec = task["encoder"], task["decoder"]
    return DecodeSpec(
        source_ids=enc["input"], target_ids=dec["target_input"], memory=dec["memory_input"], logits=dec["output"],
        decoder_takes_source=dec["source_input"] is not None, target_len=task["target_length"],
        bos_id=task["bos_id"], eos_id=task["eos_id"], pad_id=task["pad_id"],
    )


def translate(bundle: Bundle, texts: list[str], runtime: str = "litert") -> list[str]:
    from edgeq.text import Tokenizer

    task = bundle.model.get("task", {})
    if task.get("kind") != "translation":
        raise ConfigError(f"{bundle.path} holds a {task.get('kind', 'unknown')} model, not a translation model")
    tok = Tokenizer(bundle.path / task["tokenizer"])
    enc, dec = task["encoder"], task["decoder"]
    spec = bundle.decode_spec()
    encoder, decoder = bundle.runtime(enc["graph"], runtime), bundle.runtime(dec["graph"], runtime)
    out = []
    for k, text in enumerate(texts, 1):
        try:
            row = tok.source_row(text, task["source_length"])
        except ValueError as e:
            raise ConfigError(f"input {k} is {e} with EOS, over the model's source length {task['source_length']}") from e
        ids, _ = greedy_decode(encoder.run, decoder.run, row, spec)
        out.append(tok.decode(ids))
    return out
