"""Translation: decode with each runtime, score what it translates.

Metrics per artifact and runtime: corpus BLEU and chrF against the references (sacrebleu),
exact-match rate, BLEU of the artifact's translations against the float reference's (how much
quantization changed the output), and decoded tokens per second on the host. Gate it names:
``bleu_drop`` (reference BLEU minus the artifact's).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgeq.decode import DecodeSpec, greedy_decode
from edgeq.errors import DataError
from edgeq.text import Tokenizer

__all__ = ["TranslationMetrics", "decode_spec", "decoded_texts", "teacher_forced_feeds", "tokenizer_for", "translate_all"]


def tokenizer_for(ctx: Any) -> Tokenizer:
    """The build's tokenizer, loaded once and checked against the decoder's vocabulary."""
    tok = ctx.results.get("_tokenizer")
    if tok is None:
        tok = Tokenizer(ctx.spec.task.tokenizer)
        vocab = _model_vocab(ctx)
        if vocab is not None and vocab != tok.vocab_size:
            raise DataError(
                f"tokenizer {tok.path.name} has {tok.vocab_size} pieces but the decoder's "
                f"'{ctx.spec.task.logits}' output has {vocab}; use the tokenizer the model was trained with"
            )
        _check_embeddings(ctx, tok)
        ctx.results["_tokenizer"] = tok
    return tok


def _check_embeddings(ctx: Any, tok: Tokenizer) -> None:
    """Every id the tokenizer can produce must index a row of each token input's embedding table."""
    from edgeq.stages.calibrate import embedding_rows

    for graph in ctx.spec.graphs:
        art = ctx.artifacts.get("onnx_float", {}).get(graph.name)
        if art is None:
            continue
        for name, rows in embedding_rows(art.path, graph.inputs).items():
            if rows < tok.vocab_size:
                raise DataError(
                    f"tokenizer {tok.path.name} has {tok.vocab_size} pieces but graph '{graph.name}' embeds "
                    f"'{name}' with a table of {rows} rows (ids 0..{rows - 1}); use the tokenizer the model was trained with"
                )


def _model_vocab(ctx: Any) -> int | None:
    import onnx

    art = ctx.artifacts.get("onnx_float", {}).get(ctx.spec.task.decoder)
    if art is None:
        return None
    model = onnx.load_model(str(art.path), load_external_data=False)
    out = next(o for o in model.graph.output if o.name == ctx.spec.task.logits)
    dims = out.type.tensor_type.shape.dim
    return int(dims[-1].dim_value) if dims and dims[-1].HasField("dim_value") else None


def decode_spec(ctx: Any, tok: Tokenizer) -> DecodeSpec:
    t = ctx.spec.task
    dec = ctx.spec.graph(t.decoder)
    return DecodeSpec(
        source_ids=t.source_ids, target_ids=t.target_ids, memory=t.memory, logits=t.logits,
        decoder_takes_source=t.source_ids in {i.name for i in dec.inputs},
        target_len=dec.input(t.target_ids).shape[1],
        bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id,
    )


def source_len(ctx: Any) -> int:
    t = ctx.spec.task
    return int(ctx.spec.graph(t.encoder).input(t.source_ids).shape[1])


def teacher_forced_feeds(ctx: Any, tok: Tokenizer, source: str, target: str, memory: np.ndarray | None) -> dict[str, Any]:
    """Encoder feeds, and decoder feeds with the whole reference as prefix (memory given by the caller)."""
    t = ctx.spec.task
    ds = decode_spec(ctx, tok)
    row = tok.source_row(source, source_len(ctx))
    ids = tok.target_ids(target)[:-1][: ds.target_len]
    tgt = np.full((1, ds.target_len), ds.pad_id, dtype=np.int32)
    tgt[0, : len(ids)] = ids
    dec = {t.target_ids: tgt}
    if memory is not None:
        dec[t.memory] = memory
    if ds.decoder_takes_source:
        dec[t.source_ids] = row
    return {"encoder": {t.source_ids: row}, "decoder": dec}


def translate_all(runners: dict[str, Any], ctx: Any, tok: Tokenizer) -> tuple[list[str], dict[str, float]]:
    """Decode every eval source with ``runners`` ({graph name: Runtime}); translations and speed."""
    t = ctx.spec.task
    ds = decode_spec(ctx, tok)
    enc, dec = runners[t.encoder], runners[t.decoder]
    hyps = []
    tokens = steps = 0
    t0 = time.perf_counter()
    for source in ctx.eval.sources:
        ids, n = greedy_decode(enc.run, dec.run, tok.source_row(source, source_len(ctx)), ds)
        hyps.append(tok.decode(ids))
        tokens += len(ids) + 1  # the EOS is decoded too (unless the row filled up first)
        steps += n
    seconds = time.perf_counter() - t0
    return hyps, {"decoder_steps": steps, "seconds": seconds, "tokens_per_second": steps / seconds if seconds else 0.0}


def decoded_texts(tok: Tokenizer, tokens: np.ndarray) -> list[str]:
    """Texts of token-id rows decoded elsewhere (-1 pads a row after its last token)."""
    return [tok.decode([int(i) for i in row if i >= 0]) for row in tokens]


class TranslationMetrics:
    gates = ("bleu_drop",)

    @staticmethod
    def score(hyps: list[str], refs: list[str], float_hyps: list[str] | None, speed: dict[str, float] | None) -> dict[str, Any]:
        """Scores; ``speed`` None for a runtime whose speed means nothing here (an emulator's)."""
        import sacrebleu

        out: dict[str, Any] = {
            "bleu": float(sacrebleu.corpus_bleu(hyps, [refs]).score),
            "chrf": float(sacrebleu.corpus_chrf(hyps, [refs]).score),
            "exact_match": float(np.mean([h == r for h, r in zip(hyps, refs, strict=True)])) if refs else 0.0,
            "sentences": len(hyps),
        }
        if speed is not None:
            out["tokens_per_second_host"] = speed["tokens_per_second"]
            out["decode_seconds_host"] = speed["seconds"]
        if float_hyps is not None:
            out["bleu_vs_float"] = float(sacrebleu.corpus_bleu(hyps, [float_hyps]).score)
            out["same_as_float"] = float(np.mean([h == f for h, f in zip(hyps, float_hyps, strict=True)]))
        return out
