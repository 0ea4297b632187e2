"""A tiny encoder-decoder translation model, its SentencePiece tokenizer and its data, made in code.

Rules the builders keep (as conftest.py's for TinyNet):

* Everything is made at test time from fixed seeds; nothing is read from sample_models/ and nothing
  touches the network.
* The "language pair" maps each of ten words to another word, in the same order ("red cat" ->
  "rouge chat"). The tokenizer is a SentencePiece word model (every word one piece), so the model
  learns a position-aligned mapping in about a second, with wide logit margins: INT8 rounding does
  not change its greedy translations and every gate of the android target passes.
* ``make_translation_dir`` writes a complete, valid model folder (edgeq.toml with [[graphs]],
  model.py, weights.safetensors, tokenizer.model, data/calibration and data/eval with source.txt
  and target.txt); the eval references are the float model's own greedy translations (checked at
  fixture time to be the true mapping). Keyword overrides edit edgeq.toml table by table.
"""

from __future__ import annotations

import functools
import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from conftest import merge_config, write_config

SEED = 0
LENGTH = 8  # S = T = 8
D_MODEL = 16
PAD, BOS, EOS, UNK = 0, 1, 2, 3
SOURCE_WORDS = ("red", "blue", "green", "black", "white", "cat", "dog", "bird", "fish", "tree")
TARGET_WORDS = ("rouge", "bleu", "vert", "noir", "blanc", "chat", "chien", "oiseau", "poisson", "arbre")
N_CALIBRATION = 8
N_EVAL = 8

TRANSLATOR_PY = '''\
"""TinyTranslator: the encoder-decoder the edgeq translation tests build their model folders around."""

import math

import torch
from torch import nn

MASK = -30.0  # additive attention mask: large and finite (never -inf)


class Attention(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, x, kv, mask):
        scores = torch.matmul(self.q(x) * self.scale, self.k(kv).transpose(1, 2)) + mask
        return self.o(torch.matmul(torch.softmax(scores, dim=-1), self.v(kv)))


class TinyTranslator(nn.Module):
    def __init__(self, *, vocab_size: int, d_model: int = 16, max_len: int = 8, pad_id: int = 0):
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, d_model)
        self.src_pos = nn.Parameter(torch.randn(max_len, d_model))
        self.tgt_pos = nn.Parameter(torch.randn(max_len, d_model))
        self.enc_ln1 = nn.LayerNorm(d_model)
        self.enc_attn = Attention(d_model)
        self.enc_ln2 = nn.LayerNorm(d_model)
        self.enc_ff = nn.Linear(d_model, d_model)
        self.enc_norm = nn.LayerNorm(d_model)
        self.dec_ln1 = nn.LayerNorm(d_model)
        self.dec_self = Attention(d_model)
        self.dec_ln2 = nn.LayerNorm(d_model)
        self.dec_cross = Attention(d_model)
        self.dec_ln3 = nn.LayerNorm(d_model)
        self.dec_ff = nn.Linear(d_model, d_model)
        self.dec_norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)
        causal = torch.triu(torch.full((max_len, max_len), MASK), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def _src_mask(self, src_ids):
        return ((src_ids == self.pad_id).to(torch.float32) * MASK).unsqueeze(1)  # [B, 1, S]

    def encode(self, src_ids):
        x = self.embed(src_ids.long()) + self.src_pos
        h = self.enc_ln1(x)
        x = x + self.enc_attn(h, h, self._src_mask(src_ids))
        x = x + torch.relu(self.enc_ff(self.enc_ln2(x)))
        return self.enc_norm(x)

    def decode(self, tgt_ids, memory, src_ids):
        x = self.embed(tgt_ids.long()) + self.tgt_pos
        h = self.dec_ln1(x)
        x = x + self.dec_self(h, h, self.causal)
        x = x + self.dec_cross(self.dec_ln2(x), memory, self._src_mask(src_ids))
        x = x + torch.relu(self.dec_ff(self.dec_ln3(x)))
        return self.out(self.dec_norm(x))

    def forward(self, src_ids, tgt_ids):
        return self.decode(tgt_ids, self.encode(src_ids), src_ids)
'''


def _pairs(rng: random.Random, n: int, max_words: int = 5) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        idx = [rng.randrange(len(SOURCE_WORDS)) for _ in range(rng.randint(1, max_words))]
        out.append((" ".join(SOURCE_WORDS[i] for i in idx), " ".join(TARGET_WORDS[i] for i in idx)))
    return out


def train_tokenizer(lines: list[str], **options: Any) -> bytes:
    """A SentencePiece word model (every word one piece) trained on ``lines``; options override the ids."""
    import sentencepiece as spm

    kwargs: dict[str, Any] = {
        "vocab_size": 40, "pad_id": PAD, "bos_id": BOS, "eos_id": EOS, "unk_id": UNK,
        "hard_vocab_limit": False, "model_type": "word", "minloglevel": 2,
    }
    kwargs.update(options)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, **kwargs)
    return buf.getvalue()


def corpus_lines() -> list[str]:
    """Every word of both sides, a few times over: what the tokenizer is trained on."""
    lines = []
    for k in range(3):
        lines += [" ".join(SOURCE_WORDS[k:] + SOURCE_WORDS[:k]), " ".join(TARGET_WORDS[k:] + TARGET_WORDS[:k])]
    return lines


def _load_translator_class() -> type:
    namespace: dict[str, Any] = {}
    exec(compile(TRANSLATOR_PY, "tiny_translator_model.py", "exec"), namespace)
    return namespace["TinyTranslator"]


@dataclass(frozen=True)
class TranslatorAssets:
    tokenizer: bytes
    vocab_size: int
    state_dict: dict[str, np.ndarray]
    safetensors: bytes
    calibration: list[tuple[str, str]]
    eval: list[tuple[str, str]]  # (source, the float model's own greedy translation)


def _ids(sp: Any, text: str) -> list[int]:
    return list(sp.encode(text))


def _rows(sp: Any, source: str, target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = np.full(LENGTH, PAD, np.int64)
    a = [*_ids(sp, source), EOS]
    src[: len(a)] = a
    tgt_in = np.full(LENGTH, PAD, np.int64)
    b = [BOS, *_ids(sp, target)]
    tgt_in[: len(b)] = b
    tgt_out = np.full(LENGTH, -100, np.int64)
    c = [*_ids(sp, target), EOS]
    tgt_out[: len(c)] = c
    return src, tgt_in, tgt_out


def torch_greedy(net: Any, sp: Any, source: str) -> list[int]:
    """The float model's greedy translation of ``source`` (token ids, no BOS/EOS), in torch."""
    import torch

    src = np.full((1, LENGTH), PAD, np.int32)
    a = [*_ids(sp, source), EOS]
    src[0, : len(a)] = a
    src_t = torch.from_numpy(src)
    row = torch.full((1, LENGTH), PAD, dtype=torch.int32)
    row[0, 0] = BOS
    out: list[int] = []
    with torch.no_grad():
        memory = net.encode(src_t)
        for t in range(LENGTH - 1):
            nxt = int(net.decode(row, memory, src_t)[0, t].argmax())
            if nxt == EOS:
                break
            out.append(nxt)
            row[0, t + 1] = nxt
    return out


@functools.lru_cache(maxsize=1)
def translator_assets() -> TranslatorAssets:
    """Train the tokenizer, then the model for 150 steps (single-threaded: about a second)."""
    import sentencepiece as spm
    import torch
    from safetensors.torch import save

    tok = train_tokenizer(corpus_lines())
    sp = spm.SentencePieceProcessor(model_proto=tok)
    vocab = int(sp.get_piece_size())
    assert all(len(_ids(sp, w)) == 1 for w in SOURCE_WORDS + TARGET_WORDS)  # every word one piece

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many threads make steps this small tens of times slower
    try:
        torch.manual_seed(SEED)
        rng = random.Random(SEED)
        net = _load_translator_class()(vocab_size=vocab)
        opt = torch.optim.Adam(net.parameters(), lr=0.02)
        for _ in range(150):
            batch = [_rows(sp, s, t) for s, t in _pairs(rng, 64)]
            src, tgt_in, tgt_out = (torch.from_numpy(np.stack(x)) for x in zip(*batch, strict=True))
            opt.zero_grad()
            logits = net(src.int(), tgt_in.int())
            torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), tgt_out.reshape(-1), ignore_index=-100).backward()
            opt.step()
        net.eval()
        calibration = _pairs(rng, N_CALIBRATION)
        eval_pairs = _pairs(rng, N_EVAL)
        eval_refs = []
        for source, target in eval_pairs:
            hyp = sp.decode(torch_greedy(net, sp, source))
            assert hyp == target, (source, target, hyp)  # the model learned the mapping
            eval_refs.append((source, hyp))
    finally:
        torch.set_num_threads(threads)
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    return TranslatorAssets(
        tokenizer=tok,
        vocab_size=vocab,
        state_dict={k: v.numpy().copy() for k, v in state.items()},
        safetensors=save(state),
        calibration=calibration,
        eval=eval_refs,
    )


def load_translator() -> Any:
    """The trained TinyTranslator (torch, eval mode)."""
    import torch

    assets = translator_assets()
    net = _load_translator_class()(vocab_size=assets.vocab_size)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in assets.state_dict.items()})
    net.eval()
    return net


def translation_config() -> dict[str, Any]:
    ids = {"shape": [1, LENGTH], "dtype": "int32"}
    return {
        "model": {
            "name": "tiny-translator",
            "format": "pytorch",
            "file": "model.py",
            "class": "TinyTranslator",
            "weights": "weights.safetensors",
            "init_args": {"vocab_size": translator_assets().vocab_size, "d_model": D_MODEL, "max_len": LENGTH},
        },
        "graphs": [
            {
                "name": "encoder",
                "method": "encode",
                "inputs": [{"name": "src_ids", **ids}],
                "outputs": [{"name": "memory"}],
            },
            {
                "name": "decoder",
                "method": "decode",
                "inputs": [
                    {"name": "tgt_ids", **ids},
                    {"name": "memory", "shape": [1, LENGTH, D_MODEL], "dtype": "float32", "layout": "NTC"},
                    {"name": "src_ids", **ids},
                ],
                "outputs": [{"name": "logits"}],
            },
        ],
        "task": {"kind": "translation", "tokenizer": "tokenizer.model"},
        "data": {"calibration": "data/calibration", "eval": "data/eval"},
        "quantization": {"method": "minmax"},
    }


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def make_translation_dir(tmp_path: Path, *, dirname: str = "translator", **overrides: Any) -> Path:
    """A complete model folder for TinyTranslator at ``tmp_path / dirname``; overrides as make_model_dir's."""
    assets = translator_assets()
    root = tmp_path / dirname
    root.mkdir(parents=True)
    (root / "model.py").write_text(TRANSLATOR_PY, encoding="utf-8")
    (root / "weights.safetensors").write_bytes(assets.safetensors)
    (root / "tokenizer.model").write_bytes(assets.tokenizer)
    for role, pairs in (("calibration", assets.calibration), ("eval", assets.eval)):
        folder = root / "data" / role
        folder.mkdir(parents=True)
        write_lines(folder / "source.txt", [s for s, _ in pairs])
        write_lines(folder / "target.txt", [t for _, t in pairs])
    write_config(root, merge_config(translation_config(), overrides))
    return root
