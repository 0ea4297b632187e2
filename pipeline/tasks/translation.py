"""translation: an encoder and a decoder graph, decoded greedily with every runtime and scored.

Data: parallel text (source.txt, target.txt) and a SentencePiece tokenizer. Calibration: the
encoder's set is the tokenized source rows; the decoder's is made by edgeq: the float encoder turns
each source into its memory, and each reference target gives several teacher-forced prefixes
(BOS + the first k tokens, PAD after) - the rows the decode loop feeds. Sets are written sample by
sample to .npy files under build/calibration/<graph>/, so memory does not grow with the sentences.

Evaluation: each graph's outputs against the reference's on teacher-forced eval feeds, at the
positions that matter (memory rows of real source tokens, logits of the target positions the loop
reads; the decoder gets the reference memory, so its own error is measured), then every eval
sentence decoded with the one greedy loop (edgeq.decode) on every runtime and scored: corpus BLEU
and chrF against the references (sacrebleu), exact match, BLEU against the float model's
translations, decoded tokens per second on the host. Gate it names: ``bleu_drop``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.bundle.layout import TOKENIZER
from edgeq.config import ModelSpec
from edgeq.context import BuildContext, Column, Evaluation, TaskValidation
from edgeq.data import ArrayDataset
from edgeq.decode import DecodeSpec
from edgeq.errors import DataError
from edgeq.execution import DecodeJob, Feeds, FeedSet, Runtime
from edgeq.onnx_files import embedding_rows
from edgeq.tasks.metrics import Parity, TensorMetrics
from edgeq.text import Tokenizer

__all__ = ["PREFIXES_PER_SENTENCE", "Translation", "TranslationMetrics", "prefix_lengths"]

EXAMPLES = 5  # translations shown in the report
# Teacher-forced prefixes per calibration sentence: spread over the target so that calibration
# sees short and long prefixes, as the decode loop does.
PREFIXES_PER_SENTENCE = 4


def prefix_lengths(n: int, k: int = PREFIXES_PER_SENTENCE) -> list[int]:
    """Distinct prefix lengths (counting BOS) in 1..n, spread evenly, always including 1 and n."""
    if n <= 1:
        return [1]
    return sorted({1 + round(i * (n - 1) / (k - 1)) for i in range(k)})


class Translation:
    """Sentences in, sentences out, through an encoder and a decoder graph."""

    kind = "translation"
    columns = (Column("BLEU", "bleu", 1), Column("chrF", "chrf", 1), Column("exact", "exact_match", 4),
               Column("BLEU vs float", "bleu_vs_float", 1), Column("tokens/s (host)", "tokens_per_second_host", 1))
    summary_columns = (Column("BLEU", "bleu", 1), Column("chrF", "chrf", 1), Column("tok/s host", "tokens_per_second_host", 0))
    parity_columns = (Column("BLEU", "bleu", 2), Column("BLEU vs float", "bleu_vs_float", 2), Column("BLEU diff", "bleu_diff", 2))

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.t = spec.task
        self._tok: Tokenizer | None = None
        self._checked = False

    # -- the tokenizer and the loop -------------------------------------------------------------

    def tokenizer(self, ctx: BuildContext | None = None) -> Tokenizer:
        """The build's tokenizer, loaded once; with ``ctx``, checked once against the exported graphs
        (the decoder's vocabulary, every token input's embedding table)."""
        if self._tok is None:
            self._tok = Tokenizer(self.t.tokenizer)
        if ctx is not None and not self._checked and "onnx_float" in ctx.artifacts:
            self._check_vocabulary(ctx, self._tok)
            self._checked = True
        return self._tok

    def _check_vocabulary(self, ctx: BuildContext, tok: Tokenizer) -> None:
        import onnx

        art = ctx.artifacts["onnx_float"].get(self.t.decoder)
        if art is not None:
            model = onnx.load_model(str(art.path), load_external_data=False)
            out = next(o for o in model.graph.output if o.name == self.t.logits)
            dims = out.type.tensor_type.shape.dim
            vocab = int(dims[-1].dim_value) if dims and dims[-1].HasField("dim_value") else None
            if vocab is not None and vocab != tok.vocab_size:
                raise DataError(
                    f"tokenizer {tok.path.name} has {tok.vocab_size} pieces but the decoder's "
                    f"'{self.t.logits}' output has {vocab}; use the tokenizer the model was trained with"
                )
        for graph in self.spec.graphs:  # every id the tokenizer can produce must index an embedding row
            g_art = ctx.artifacts["onnx_float"].get(graph.name)
            if g_art is None:
                continue
            for name, rows in embedding_rows(g_art.path, graph.inputs).items():
                if rows < tok.vocab_size:
                    raise DataError(
                        f"tokenizer {tok.path.name} has {tok.vocab_size} pieces but graph '{graph.name}' embeds "
                        f"'{name}' with a table of {rows} rows (ids 0..{rows - 1}); use the tokenizer the model was trained with"
                    )

    def decode_spec(self, tok: Tokenizer) -> DecodeSpec:
        """The greedy loop's wiring and special ids."""
        t, dec = self.t, self.spec.graph(self.t.decoder)
        return DecodeSpec(
            source_ids=t.source_ids, target_ids=t.target_ids, memory=t.memory, logits=t.logits,
            decoder_takes_source=t.source_ids in {i.name for i in dec.inputs},
            target_len=dec.input(t.target_ids).shape[1],
            bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id,
        )

    @property
    def source_len(self) -> int:
        """Tokens in a source row."""
        return int(self.spec.graph(self.t.encoder).input(self.t.source_ids).shape[1])

    def teacher_forced_feeds(self, tok: Tokenizer, source: str, target: str) -> tuple[Feeds, Feeds]:
        """Encoder feeds, and decoder feeds with the whole reference as prefix (no memory yet)."""
        t, ds = self.t, self.decode_spec(tok)
        row = tok.source_row(source, self.source_len)
        ids = tok.target_ids(target)[:-1][: ds.target_len]
        tgt = np.full((1, ds.target_len), ds.pad_id, dtype=np.int32)
        tgt[0, : len(ids)] = ids
        dec = {t.target_ids: tgt}
        if ds.decoder_takes_source:
            dec[t.source_ids] = row
        return {t.source_ids: row}, dec

    # -- data -----------------------------------------------------------------------------------

    def open_data(self) -> tuple[Any, Any]:
        """source.txt / target.txt of calibration and eval, every sentence checked to fit the rows."""
        from edgeq.text import ParallelText

        tok = self.tokenizer()
        tgt_len = self.spec.graph(self.t.decoder).input(self.t.target_ids).shape[1]
        calibration = ParallelText.open(self.spec.data.calibration, "calibration", need_targets=True)
        evaluation = ParallelText.open(self.spec.data.eval, "eval", need_targets=True)
        for ds in (calibration, evaluation):
            ds.check_lengths(tok, self.source_len, tgt_len)
        return calibration, evaluation

    def materialize(self, data: Any, role: str, folder: Path) -> Any:
        """Text is read in place."""
        return data

    def calibration_sets(self, ctx: BuildContext, reference: Callable[[], Runtime]) -> dict[str, Any]:
        """The tokenized sources for the encoder; teacher-forced prefixes with the float memory for the decoder."""
        t, tok = self.t, self.tokenizer(ctx)
        ds = self.decode_spec(tok)
        enc_g, dec_g = self.spec.graph(t.encoder), self.spec.graph(t.decoder)
        text = ctx.calibration
        if text.targets is None:
            raise DataError(
                "calibration data: target.txt is missing; the decoder is calibrated on teacher-forced reference prefixes"
            )
        limit = self.spec.data.calibration_samples
        n = len(text) if limit is None else min(len(text), limit)
        rows = [tok.source_row(s, self.source_len) for s in text.sources[:n]]
        targets = [tok.target_ids(x)[:-1] for x in text.targets[:n]]  # BOS + pieces: what the decoder is fed
        n_dec = sum(len(prefix_lengths(len(x))) for x in targets)

        root = ctx.build_dir / "calibration"
        enc_dir, dec_dir = root / enc_g.name, root / dec_g.name
        enc_src = _writer(enc_dir, t.source_ids, (n, self.source_len), "int32")
        mem_spec = dec_g.input(t.memory)
        dec_arrays = {t.target_ids: _writer(dec_dir, t.target_ids, (n_dec, ds.target_len), "int32"),
                      t.memory: _writer(dec_dir, t.memory, (n_dec, *mem_spec.shape[1:]), "float32")}
        if ds.decoder_takes_source:
            dec_arrays[t.source_ids] = _writer(dec_dir, t.source_ids, (n_dec, self.source_len), "int32")
        encoder = reference()
        j = 0
        for k, (row, target) in enumerate(zip(rows, targets, strict=True)):
            enc_src[k] = row[0]
            memory = encoder.run(t.encoder, {t.source_ids: row})[t.memory]
            for length in prefix_lengths(len(target)):
                prefix = np.full(ds.target_len, ds.pad_id, dtype=np.int32)
                prefix[:length] = target[:length]
                dec_arrays[t.target_ids][j] = prefix
                dec_arrays[t.memory][j] = memory[0]
                if ds.decoder_takes_source:
                    dec_arrays[t.source_ids][j] = row[0]
                j += 1
        for arr in (enc_src, *dec_arrays.values()):
            arr.flush()
        del enc_src, dec_arrays
        return {enc_g.name: ArrayDataset.open(enc_dir, enc_g.inputs, "calibration"),
                dec_g.name: ArrayDataset.open(dec_dir, dec_g.inputs, "calibration")}

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(self, ev: Evaluation) -> TaskValidation:
        """Teacher-forced tensor metrics per graph, then every eval sentence decoded on every runtime."""
        ctx, t = ev.ctx, self.t
        tok = self.tokenizer(ctx)
        pairs = list(zip(ctx.eval.sources, ctx.eval.targets, strict=True))

        def encoder_feeds() -> Iterator[Feeds]:
            return (self.teacher_forced_feeds(tok, s, x)[0] for s, x in pairs)

        def decoder_feeds() -> Iterator[Feeds]:  # the decoder's carry the reference memory
            for s, x in pairs:
                enc, dec = self.teacher_forced_feeds(tok, s, x)
                yield {**dec, t.memory: ev.reference.run(t.encoder, enc)[t.memory]}

        sources = FeedSet(t.encoder, len(pairs), encoder_feeds)
        ev.start({t.encoder: sources, t.decoder: FeedSet(t.decoder, len(pairs), decoder_feeds)},
                 DecodeJob(t.encoder, t.decoder, self.decode_spec(tok), sources))
        tensor_acc = {p: {t.encoder: TensorMetrics(), t.decoder: TensorMetrics()} for p in ev.runners}
        parity = Parity(ctx.target.runtimes, ctx.artifacts[ev.shipped], ev.runners)
        for k, (source, target) in enumerate(pairs):
            enc_feeds, dec_base = self.teacher_forced_feeds(tok, source, target)
            ref_mem = ev.reference.run(t.encoder, enc_feeds)[t.memory]
            dec_feeds = {**dec_base, t.memory: ref_mem}
            ref_logits = ev.reference.run(t.decoder, dec_feeds)[t.logits]
            # Only the positions that matter are compared: memory rows of real source tokens (PAD rows
            # are masked out of cross-attention) and the logits of the target positions the loop reads.
            src_rows = enc_feeds[t.source_ids][0] != tok.pad_id
            n_tgt = int((dec_base[t.target_ids][0] != tok.pad_id).sum())
            enc_outs, dec_outs = {}, {}
            for p, rt in ev.runners.items():
                if not ev.sees(p, k):
                    continue
                mem = rt.run(t.encoder, enc_feeds)[t.memory]
                tensor_acc[p][t.encoder].update(ref_mem[0][src_rows], mem[0][src_rows])
                logits = rt.run(t.decoder, dec_feeds)[t.logits]  # the reference memory: the decoder's own error
                tensor_acc[p][t.decoder].update(ref_logits[0, :n_tgt], logits[0, :n_tgt])
                enc_outs[p] = {t.memory: mem[0][src_rows]}
                dec_outs[p] = {t.logits: logits[0, :n_tgt]}
            parity.update(t.encoder, enc_outs)
            parity.update(t.decoder, dec_outs)
        tensors = {p: {t.encoder: {t.memory: accs[t.encoder].result()}, t.decoder: {t.logits: accs[t.decoder].result()}}
                   for p, accs in tensor_acc.items()}

        refs = [x for _, x in pairs]
        ref_decoded = ev.reference.decoded()
        ref_hyps = [tok.decode(ids) for ids in ref_decoded.tokens]
        ref_metrics = TranslationMetrics.score(ref_hyps, refs, None, ref_decoded.speed)
        task = {}
        translations = {"onnx_float": ref_hyps}
        for p, rt in ev.runners.items():
            decoded = rt.decoded()
            hyps = [tok.decode(ids) for ids in decoded.tokens]
            chosen = ev.subsets.get(p)
            if chosen is None:
                task[p] = TranslationMetrics.score(hyps, refs, ref_hyps, decoded.speed)
            else:  # the sentences it decoded, against the reference's translations of the same ones
                sub_refs, sub_ref_hyps = [refs[i] for i in chosen], [ref_hyps[i] for i in chosen]
                task[p] = TranslationMetrics.score(hyps, sub_refs, sub_ref_hyps, decoded.speed)
                task[p]["reference"] = TranslationMetrics.score(sub_ref_hyps, sub_refs, None, None)
            translations[f"{p[0]}@{p[1]}"] = hyps
        parity_result = parity.result()
        primary = ctx.target.runtimes[0]
        for rt_name, entry in parity_result.items():
            chosen = ev.subsets.get((ev.shipped, rt_name))
            mine, theirs = translations[f"{ev.shipped}@{rt_name}"], translations[f"{ev.shipped}@{primary}"]
            theirs_bleu = task[(ev.shipped, primary)]["bleu"]
            if chosen is not None:  # the primary's translations of the same sentences
                theirs = [theirs[i] for i in chosen]
                theirs_bleu = TranslationMetrics.score(theirs, [refs[i] for i in chosen], None, None)["bleu"]
            entry["same_translation"] = sum(a == b for a, b in zip(mine, theirs, strict=True)) / len(mine)
            entry["bleu_diff"] = abs(task[(ev.shipped, rt_name)]["bleu"] - theirs_bleu)
        shipped = next((k for k in translations if k.startswith(f"{ev.shipped}@")), None)
        ref_metrics["examples"] = [
            {"source": src, "reference": r, "float": f, **({shipped: translations[shipped][k]} if shipped else {})}
            for k, (src, r, f) in enumerate(zip(ctx.eval.sources, refs, ref_hyps, strict=False))
            if k < EXAMPLES
        ]
        return TaskValidation(ref_metrics, task, tensors, parity_result)

    # -- the bundle -----------------------------------------------------------------------------

    def bundle_files(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        """tokenizer.model, and the decode loop an app runs (edgeq.decode.greedy_decode, the loop edgeq validated)."""
        tok = self.tokenizer(ctx)
        shutil.copyfile(tok.path, out / TOKENIZER)
        ds, t = self.decode_spec(tok), self.t
        return {
            "kind": self.kind,
            "tokenizer": TOKENIZER,
            "tokenizer_type": "sentencepiece",
            "bos_id": ds.bos_id, "eos_id": ds.eos_id, "pad_id": ds.pad_id,
            "source_length": self.source_len, "target_length": ds.target_len,
            "encoder": {"graph": t.encoder, "input": t.source_ids, "output": t.memory},
            "decoder": {"graph": t.decoder, "target_input": t.target_ids, "memory_input": t.memory,
                        "source_input": t.source_ids if ds.decoder_takes_source else None, "output": t.logits},
            "loop": [
                "source row = tokenizer pieces of the text, then eos_id, padded with pad_id to source_length",
                "memory = encoder(source row)",
                "target row = [bos_id] padded with pad_id to target_length",
                "for t in 0 .. target_length - 2: logits = decoder(target row, memory[, source row]); "
                "next = argmax(logits[0, t]); stop if next == eos_id; target row[t + 1] = next",
                "translation = tokenizer.decode(target row[1 : t + 1])",
            ],
        }


def _writer(folder: Path, name: str, shape: tuple[int, ...], dtype: str) -> np.memmap:
    folder.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)


class TranslationMetrics:
    """Corpus scores of a set of translations."""

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
