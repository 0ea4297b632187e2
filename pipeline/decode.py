"""The greedy decode loop of an encoder-decoder model, written once for every runtime.

Pure Python + numpy: it drives any runtime through two callables (feeds -> outputs), so the
float reference, the INT8 ONNX model and the .tflite files on LiteRT decode the same way, and an
app can copy it line for line (model.json describes the same loop).

Rules it keeps:

* The encoder runs once per sentence on the source row ([1, S] int32: pieces, EOS, PAD...).
* The decoder input is a [1, T] int32 row: BOS, the tokens so far, PAD... At step t it reads the
  logits at position t; the next token is their argmax. Decoding stops at EOS or when the row is
  full (T - 1 tokens).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["DecodeSpec", "greedy_decode"]

Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class DecodeSpec:
    """What the greedy decode loop needs: the tensor names, the target length and the special token ids."""

    source_ids: str
    target_ids: str
    memory: str
    logits: str
    decoder_takes_source: bool
    target_len: int
    bos_id: int
    eos_id: int
    pad_id: int


def greedy_decode(encode: Run, decode: Run, source_row: np.ndarray, spec: DecodeSpec) -> tuple[list[int], int]:
    """Token ids of the translation (no BOS/EOS) and the number of decoder steps run."""
    memory = encode({spec.source_ids: source_row})[spec.memory]
    row = np.full((1, spec.target_len), spec.pad_id, dtype=np.int32)
    row[0, 0] = spec.bos_id
    out: list[int] = []
    steps = 0
    for t in range(spec.target_len - 1):
        feeds = {spec.target_ids: row, spec.memory: memory}
        if spec.decoder_takes_source:
            feeds[spec.source_ids] = source_row
        logits = decode(feeds)[spec.logits]
        steps += 1
        nxt = int(np.argmax(logits[0, t]))
        if nxt == spec.eos_id:
            break
        out.append(nxt)
        row[0, t + 1] = nxt
    return out, steps
