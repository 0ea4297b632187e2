"""Translator: a small Transformer encoder-decoder (English -> French numbers, dates and times).

This is the translation sample model shipped with edgeq. It is exported as two graphs:

* ``encode(src_ids)``: source token ids, int32 ``[1, 32]`` (BOS not used; ids, EOS, then PAD=0)
  -> ``memory`` float32 ``[1, 32, d_model]``.
* ``decode(tgt_ids, memory, src_ids)``: target ids int32 ``[1, 32]`` (BOS + prefix, PAD=0 after),
  the encoder memory, and the source ids again (for the cross-attention padding mask)
  -> ``logits`` float32 ``[1, 32, vocab_size]``. The decoder is causal: the logits at position t
  depend only on ``tgt_ids[:, :t + 1]``, so a greedy decoder reads position t to pick token t+1.

Everything is written with plain ops (nn.Linear, matmul, softmax, nn.LayerNorm, ReLU, reshape and
transpose; no nn.Transformer / nn.MultiheadAttention fast paths) so it exports cleanly with
``torch.onnx.export(dynamo=False, opset_version=17)`` and quantizes to INT8. Masks are additive
float masks with a large finite negative value (``mask_value``, -1e4; never -inf), so a fully
padded row stays finite. The causal mask is a constant buffer ``[max_len, max_len]``; the source
padding mask is computed from ``src_ids == pad_id``. Positional embeddings are learned, of fixed
size ``max_len``. One embedding matrix is shared by the source, the target and the output
projection (the vocabulary is joint).

Training may use any batch size and any length <= max_len (shorter batches slice the positional
table and causal mask); the exported graphs always see length max_len, for which no slicing
happens.
"""

import math

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/o projections and an additive mask."""

    def __init__(self, *, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        assert d_model % n_heads == 0
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.scale = 1.0 / math.sqrt(self.d_head)
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x [B, Lq, D], kv [B, Lk, D], mask additive, broadcastable to [B, H, Lq, Lk]
        b, lq, d = x.shape
        lk = kv.shape[1]
        q = (self.q(x) * self.scale).reshape(b, lq, self.n_heads, self.d_head).transpose(1, 2)
        k = self.k(kv).reshape(b, lk, self.n_heads, self.d_head).transpose(1, 2)
        v = self.v(kv).reshape(b, lk, self.n_heads, self.d_head).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) + mask  # [B, H, Lq, Lk]
        attn = self.drop(torch.softmax(scores, dim=-1))
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, lq, d)
        return self.o(out)


class FeedForward(nn.Module):
    def __init__(self, *, d_model: int, ff: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(d_model, ff)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class EncoderLayer(nn.Module):
    """Pre-LayerNorm: x + SelfAttn(LN(x)); x + FF(LN(x))."""

    def __init__(self, *, d_model: int, n_heads: int, ff: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model=d_model, n_heads=n_heads, dropout=dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model=d_model, ff=ff, dropout=dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, h, src_mask))
        return x + self.drop(self.ff(self.ln2(x)))


class DecoderLayer(nn.Module):
    """Pre-LayerNorm: causal self-attention, cross-attention to the memory, feed-forward."""

    def __init__(self, *, d_model: int, n_heads: int, ff: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.self_attn = Attention(d_model=d_model, n_heads=n_heads, dropout=dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.cross_attn = Attention(d_model=d_model, n_heads=n_heads, dropout=dropout)
        self.ln3 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model=d_model, ff=ff, dropout=dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, causal: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.self_attn(h, h, causal))
        x = x + self.drop(self.cross_attn(self.ln2(x), memory, src_mask))
        return x + self.drop(self.ff(self.ln3(x)))


class Translator(nn.Module):
    """Transformer encoder-decoder over a joint SentencePiece vocabulary (PAD=0, BOS=1, EOS=2, UNK=3)."""

    def __init__(
        self,
        *,
        vocab_size: int = 1000,
        d_model: int = 128,
        n_heads: int = 4,
        ff: int = 256,
        enc_layers: int = 2,
        dec_layers: int = 2,
        max_len: int = 32,
        dropout: float = 0.0,
        pad_id: int = 0,
        mask_value: float = -1e4,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.max_len = max_len
        self.pad_id = pad_id
        self.mask_value = mask_value
        self.embed_scale = math.sqrt(d_model)
        self.embed = nn.Embedding(vocab_size, d_model)  # shared: source, target, output projection
        self.src_pos = nn.Parameter(torch.zeros(max_len, d_model))
        self.tgt_pos = nn.Parameter(torch.zeros(max_len, d_model))
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.ModuleList(
            [EncoderLayer(d_model=d_model, n_heads=n_heads, ff=ff, dropout=dropout) for _ in range(enc_layers)]
        )
        self.enc_norm = nn.LayerNorm(d_model)
        self.decoder = nn.ModuleList(
            [DecoderLayer(d_model=d_model, n_heads=n_heads, ff=ff, dropout=dropout) for _ in range(dec_layers)]
        )
        self.dec_norm = nn.LayerNorm(d_model)
        causal = torch.triu(torch.full((max_len, max_len), float(mask_value)), diagonal=1)
        self.register_buffer("causal_mask", causal, persistent=False)  # [max_len, max_len], 0 on/below diagonal
        # PAD id as an int32 scalar: comparing int32 ids with it exports as one Equal, no int64 Cast.
        self.register_buffer("pad_token", torch.tensor(pad_id, dtype=torch.int32), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.embed.weight, mean=0.0, std=self.d_model**-0.5)
        nn.init.normal_(self.src_pos, mean=0.0, std=0.02)
        nn.init.normal_(self.tgt_pos, mean=0.0, std=0.02)
        for name, p in self.named_parameters():
            if p.dim() == 2 and ("encoder" in name or "decoder" in name):
                nn.init.xavier_uniform_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)

    # ------------------------------------------------------------------ helpers
    def _embed(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        x = self.embed(ids) * self.embed_scale  # nn.Embedding takes int32 or int64 ids
        x = x + (pos if length == self.max_len else pos[:length])
        return self.drop(x)

    def _src_mask(self, src_ids: torch.Tensor) -> torch.Tensor:
        """Additive key mask [B, 1, 1, Ls]: mask_value where src_ids == PAD, else 0."""
        pad = (src_ids == self.pad_token).to(torch.float32)
        return (pad * self.mask_value).unsqueeze(1).unsqueeze(2)

    # ------------------------------------------------------------------ exported graphs
    def encode(self, src_ids: torch.Tensor) -> torch.Tensor:
        """src_ids int32 [B, L] (PAD=0) -> memory float32 [B, L, d_model]."""
        mask = self._src_mask(src_ids)
        x = self._embed(src_ids, self.src_pos)
        for layer in self.encoder:
            x = layer(x, mask)
        return self.enc_norm(x)

    def decode(self, tgt_ids: torch.Tensor, memory: torch.Tensor, src_ids: torch.Tensor) -> torch.Tensor:
        """tgt_ids int32 [B, L] (BOS + prefix, PAD=0), memory [B, Ls, D], src_ids [B, Ls] -> logits [B, L, vocab]."""
        length = tgt_ids.shape[1]
        causal = self.causal_mask if length == self.max_len else self.causal_mask[:length, :length]
        src_mask = self._src_mask(src_ids)
        x = self._embed(tgt_ids, self.tgt_pos)
        for layer in self.decoder:
            x = layer(x, memory, causal, src_mask)
        x = self.dec_norm(x)
        return torch.matmul(x, self.embed.weight.t())

    def forward(self, src_ids: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits [B, Lt, vocab] for target inputs tgt_ids (BOS + tokens)."""
        return self.decode(tgt_ids, self.encode(src_ids), src_ids)
