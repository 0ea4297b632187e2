"""Translation data: a SentencePiece tokenizer and parallel text (source.txt / target.txt).

A translation data folder holds ``source.txt`` and, where references are needed, ``target.txt``:
UTF-8, one sentence per line, the same number of lines, no empty lines. Token ids follow one
convention everywhere (the decode loop, calibration, the app): a source is its pieces then EOS,
a target starts with BOS, and rows are padded with PAD to the graph's fixed length.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.errors import ConfigError, DataError
from edgeq.inputs.files import MAX_TEXT, MAX_TOKENIZER, read_bytes, read_text
from edgeq.inputs.shown import shown

__all__ = ["SOURCE_FILE", "TARGET_FILE", "ParallelText", "Tokenizer"]

SOURCE_FILE = "source.txt"
TARGET_FILE = "target.txt"


class Tokenizer:
    """A SentencePiece model with the special ids edgeq's decode loop needs."""

    def __init__(self, path: Path) -> None:
        import sentencepiece as spm

        self.path = Path(path)
        proto = read_bytes(self.path, MAX_TOKENIZER, "tokenizer")
        try:
            if not proto:
                raise ValueError("the file is empty")
            self.sp = spm.SentencePieceProcessor(model_proto=proto)
        except (OSError, RuntimeError, TypeError, ValueError) as e:
            raise ConfigError(f"tokenizer {shown(self.path.name)} is not a readable SentencePiece model "
                              f"({shown(str(e).splitlines()[0] if str(e) else type(e).__name__)}); "
                              "point [task].tokenizer at the .model file") from e
        self.vocab_size = int(self.sp.get_piece_size())
        self.pad_id, self.bos_id, self.eos_id = int(self.sp.pad_id()), int(self.sp.bos_id()), int(self.sp.eos_id())
        missing = [n for n, v in (("pad", self.pad_id), ("bos", self.bos_id), ("eos", self.eos_id)) if v < 0]
        if missing:
            raise ConfigError(
                f"tokenizer {shown(self.path.name)} has no {'/'.join(missing)} id; train it with "
                "pad_id, bos_id and eos_id set (for example pad_id=0 bos_id=1 eos_id=2 unk_id=3)"
            )

    def encode(self, text: str) -> list[int]:
        """The text's SentencePiece piece ids."""
        return list(self.sp.encode(text))

    def decode(self, ids: list[int]) -> str:
        """The text of the piece ids."""
        return str(self.sp.decode([int(i) for i in ids]))

    def source_row(self, text: str, length: int) -> np.ndarray:
        """[1, length] int32: pieces, EOS, PAD... (raises ValueError if it does not fit)."""
        ids = [*self.encode(text), self.eos_id]
        if len(ids) > length:
            raise ValueError(f"{len(ids)} tokens")
        row = np.full((1, length), self.pad_id, dtype=np.int32)
        row[0, : len(ids)] = ids
        return row

    def target_ids(self, text: str) -> list[int]:
        """BOS, pieces, EOS."""
        return [self.bos_id, *self.encode(text), self.eos_id]


@dataclass(frozen=True)
class ParallelText:
    """A checked translation data folder: its source sentences and, where present, their references."""

    role: str
    folder: Path
    sources: tuple[str, ...]
    targets: tuple[str, ...] | None

    @classmethod
    def open(cls, folder: Path, role: str, *, need_targets: bool) -> ParallelText:
        """Read source.txt (and target.txt if needed or present) from ``folder``, checking they pair up."""
        folder = Path(folder)
        if folder.is_symlink() or not folder.is_dir():
            raise DataError(f"{role} data folder {str(folder)!r} does not exist; fix [data].{role} in edgeq.toml")
        sources = _read_lines(folder / SOURCE_FILE, role)
        targets = None
        tpath = folder / TARGET_FILE
        if need_targets or os.path.lexists(tpath):
            targets = _read_lines(tpath, role)
            if len(targets) != len(sources):
                raise DataError(
                    f"{role} data: {SOURCE_FILE} has {len(sources)} lines but {TARGET_FILE} has {len(targets)}; "
                    "give every source sentence its reference on the same line"
                )
        if not sources:
            raise DataError(f"{role} data: {SOURCE_FILE} in {folder} is empty; add at least one sentence")
        return cls(role, folder, tuple(sources), tuple(targets) if targets is not None else None)

    def __len__(self) -> int:
        return len(self.sources)

    def check_lengths(self, tok: Tokenizer, source_len: int, target_len: int) -> None:
        """Every sentence must fit its graph's fixed length (the app's decode loop has no more room)."""
        for k, text in enumerate(self.sources, 1):
            n = len(tok.encode(text)) + 1
            if n > source_len:
                raise DataError(
                    f"{self.role} data: {SOURCE_FILE} line {k} is {n} tokens with EOS, over the encoder's "
                    f"length {source_len}; shorten or remove it"
                )
        for k, text in enumerate(self.targets or (), 1):
            n = len(tok.target_ids(text)) - 1  # the decoder sees BOS + pieces; EOS is only predicted
            if n > target_len:
                raise DataError(
                    f"{self.role} data: {TARGET_FILE} line {k} is {n} tokens with BOS, over the decoder's "
                    f"length {target_len}; shorten or remove it"
                )

    def sha256(self) -> str:
        """Hash of source.txt and target.txt (those present), with their names."""
        import hashlib

        h = hashlib.sha256()
        for name in (SOURCE_FILE, TARGET_FILE):
            path = self.folder / name
            if os.path.lexists(path):
                h.update(name.encode() + b"\0" + read_bytes(path, MAX_TEXT, f"{self.role} data:", DataError))
        return h.hexdigest()


def _read_lines(path: Path, role: str) -> list[str]:
    if not os.path.lexists(path):
        raise DataError(f"{role} data: {path.name} missing in {path.parent}; write one sentence per line")
    text = read_text(path, MAX_TEXT, f"{role} data:", DataError)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    for k, line in enumerate(lines, 1):
        if not line.strip():
            raise DataError(f"{role} data: {path.name} line {k} is empty; remove empty lines (and their pair)")
    return [ln.rstrip("\r") for ln in lines]
