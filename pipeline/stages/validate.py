"""validate: run the float reference and every artifact over the whole eval set; apply the gates.

Rules:

* The reference is the float ONNX model on onnxruntime. Every artifact runs on the runtime(s)
  that can run it: the INT8 ONNX on onnxruntime, the float32 .tflite on LiteRT, and the shipped
  INT8 .tflite on every runtime the target names.
* An artifact is a set of files, one per graph; a runtime runs the set (one loaded file per graph).
* Classification / generic: one pass over the eval set, all runtimes in lockstep, metrics
  accumulated per sample: memory does not grow with the eval set.
* Translation: each graph's outputs against the reference's on teacher-forced eval feeds, at the
  positions that matter (memory rows of real source tokens, logits of the target positions the
  loop reads; the decoder gets the reference memory, so its own error is measured), then the whole eval set is
  decoded with the one greedy loop (edgeq.decode) on every runtime and scored.
* Per artifact and runtime: the task metrics (top-1 accuracy and agreement; or BLEU, chrF, exact
  match, BLEU vs the float translations, tokens/s) and the tensor metrics of every output of every
  graph (cosine, SQNR, max/mean abs error of dequantized outputs).
* Gates are evaluated on the shipped artifact (the INT8 .tflite), once per validating runtime for
  the metrics that depend on the runtime.
* Emulated runtimes (``litert-arm64:<profile>``) do not run sample by sample: every feed is first
  recorded to files, one emulator process per artifact and profile runs them all (and decodes
  every eval sentence; the host runtimes decode first, so their speed is measured on an idle
  CPU), and the recorded outputs are then replayed into the same passes as every other runtime.
  Their wall time is reported as validation cost only.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from edgeq.context import BuildContext
from edgeq.gates import evaluate
from edgeq.runtimes import EMULATED, FORMATS, create_runtime, split_name
from edgeq.stages import StageResult
from edgeq.tasks import ClassificationMetrics, ParityMetrics, TensorMetrics
from edgeq.tflite_inspect import inspect_tflite

__all__ = ["STAGE", "SHIPPED", "VARIANTS", "ValidateStage"]

SHIPPED = "tflite_int8"


VARIANTS = ("onnx_int8", "tflite_float32", SHIPPED)
EXAMPLES = 5  # translations shown in the report


class ValidateStage:
    name = "validate"
    requires = ("onnx_float", "onnx_int8", "tflite_float32", SHIPPED)
    produces: tuple[str, ...] = ()

    def run(self, ctx: BuildContext) -> StageResult:
        threads = ctx.target.threads
        graphs = [g.name for g in ctx.spec.graphs]
        ref = {g: _load("onnxruntime", ctx.artifact("onnx_float", g), threads) for g in graphs}

        pairs: list[tuple[str, str]] = []
        for key in VARIANTS:
            fmt = ctx.artifact(key, graphs[0]).format
            names = ctx.target.runtimes if key == SHIPPED else [r for r, f in FORMATS.items() if f == fmt][:1]
            pairs += [(key, rt) for rt in names if (key, rt) not in pairs]
        emulated: dict[Pair, Any] = {}
        runners: dict[Pair, dict[str, Any]] = {}
        for key, rt in pairs:
            if split_name(rt)[0] in EMULATED:
                emulated[(key, rt)] = em = create_runtime(rt, threads=threads)
                for g in graphs:
                    em.load(ctx.artifact(key, g))
            else:
                runners[(key, rt)] = {g: _load(rt, ctx.artifact(key, g), threads) for g in graphs}

        emulation = _Emulation(ctx, emulated)
        try:
            if ctx.spec.task.kind == "translation":
                ref_metrics, task_results, tensor_results, parity = _translation(ctx, ref, runners, emulation)
            else:
                ref_metrics, task_results, tensor_results, parity = _single_graph(ctx, ref, runners, emulation)
        finally:
            emulation.stop()

        reference = {"artifact": "onnx_float", **ref[graphs[0]].describe(), "metrics": ref_metrics,
                     "samples": len(ctx.eval)}
        artifacts: dict[str, Any] = {}
        for key in ("onnx_float", *VARIANTS):
            arts = ctx.artifacts[key]
            first = arts[graphs[0]]
            artifacts[key] = {
                "format": first.format, "precision": first.precision,
                "files": {g: {"file": arts[g].path.name, "bytes": arts[g].bytes} for g in graphs},
                "bytes": sum(arts[g].bytes for g in graphs), "runtimes": {},
            }
        for (key, rt_name), graph_runners in {**runners, **emulation.replays}.items():
            entry: dict[str, Any] = {"describe": graph_runners[graphs[0]].describe(),
                                     "outputs": tensor_results[(key, rt_name)]}
            if (key, rt_name) in task_results:
                entry["task"] = task_results[(key, rt_name)]
            artifacts[key]["runtimes"][rt_name] = entry
        for key in ("tflite_float32", SHIPPED):
            artifacts[key]["inspection"] = {g: inspect_tflite(ctx.artifact(key, g).path) for g in graphs}
            conv = ctx.results.get("convert", {}).get("graphs", {})
            fallback = {g: conv[g]["float_fallback"] for g in graphs if conv.get(g, {}).get("float_fallback")}
            if key == SHIPPED and fallback:
                artifacts[key]["float_fallback"] = fallback
        if parity:
            artifacts[SHIPPED]["parity"] = parity

        gates = evaluate(ctx.gates, ctx.spec.task.kind, reference["metrics"], artifacts[SHIPPED], SHIPPED)
        validation = {"reference": reference, "artifacts": artifacts, "gates": gates,
                      "passed": all(g["passed"] for g in gates)}
        ctx.results["validation"] = validation
        return StageResult((), {"passed": validation["passed"]})


STAGE = ValidateStage()


def _load(runtime: str, artifact: Any, threads: int) -> Any:
    rt = create_runtime(runtime, threads=threads)
    rt.load(artifact)
    return rt


Pair = tuple[str, str]


def _single_graph(ctx: BuildContext, ref: dict[str, Any], runners: dict[Pair, dict[str, Any]],
                  emulation: _Emulation) -> tuple[Any, Any, Any, Any]:
    """Classification / generic: one pass over the eval arrays, every runtime in lockstep."""
    g = ctx.spec.single.name
    if emulation:
        recorder = emulation.recorder(g, len(ctx.eval))
        for feeds in ctx.eval:
            recorder.add(feeds)
        emulation.start()
        runners = {**runners, **emulation.wait()}
    classify = ctx.spec.task.kind == "classification"
    task_out = ctx.spec.task.output
    n_classes = _count_labels(ctx)
    batch = ctx.spec.inputs[0].shape[0] if ctx.spec.inputs[0].shape else 1
    labels = ctx.eval.sample_labels() if classify else None
    ref_task = ClassificationMetrics(n_classes) if classify else None
    task_acc = {p: ClassificationMetrics(n_classes) for p in runners} if classify else {}
    outputs = ctx.artifact("onnx_float").meta["outputs"]
    tensor_acc = {p: {o: TensorMetrics() for o in outputs} for p in runners}
    parity = _Parity(ctx, runners)
    for k, feeds in enumerate(ctx.eval):
        ref_out = ref[g].run(feeds)
        y = labels[k * batch : (k + 1) * batch] if labels is not None else None
        if ref_task is not None:
            ref_task.update(ref_out[task_out], ref_out[task_out], y)
        outs = {}
        for p, rts in runners.items():
            outs[p] = out = rts[g].run(feeds)
            for o in outputs:
                tensor_acc[p][o].update(ref_out[o], out[o])
            if classify:
                task_acc[p].update(ref_out[task_out], out[task_out], y)
        parity.update(g, {p: outs[p] for p in outs}, classify_output=task_out if classify else None)
    tensors = {p: {g: {o: m.result() for o, m in accs.items()}} for p, accs in tensor_acc.items()}
    tasks = {p: m.result() for p, m in task_acc.items()}
    return (ref_task.result() if ref_task else {}), tasks, tensors, parity.result()


def _translation(ctx: BuildContext, ref: dict[str, Any], runners: dict[Pair, dict[str, Any]],
                 emulation: _Emulation) -> tuple[Any, Any, Any, Any]:
    """Each graph's outputs vs the reference on teacher-forced eval feeds, then greedy decoding of
    every eval sentence with every runtime, scored with BLEU / chrF against the references."""
    from edgeq.tasks.translation import (
        TranslationMetrics,
        decode_spec,
        decoded_texts,
        teacher_forced_feeds,
        tokenizer_for,
        translate_all,
    )

    t = ctx.spec.task
    tok = tokenizer_for(ctx)
    refs = list(ctx.eval.targets)
    host_decoded = {}
    if emulation:
        # Record the teacher-forced feeds (the decoder's carry the reference memory) and decode on
        # the host runtimes first, so that their tokens/s are not measured against emulators
        # competing for the CPU; then the emulators run, one process per profile, side by side.
        enc_rec = emulation.recorder(t.encoder, len(ctx.eval))
        dec_rec = emulation.recorder(t.decoder, len(ctx.eval))
        for source, target in zip(ctx.eval.sources, ctx.eval.targets, strict=True):
            feeds = teacher_forced_feeds(ctx, tok, source, target, None)
            enc_rec.add(feeds["encoder"])
            dec_rec.add({**feeds["decoder"], t.memory: ref[t.encoder].run(feeds["encoder"])[t.memory]})
        emulation.decode(t.encoder, t.decoder, asdict(decode_spec(ctx, tok)), enc_rec.files[t.source_ids])
        host_decoded = {p: translate_all(rts, ctx, tok) for p, rts in runners.items()}
        host_decoded[("onnx_float", "onnxruntime")] = translate_all(ref, ctx, tok)
        emulation.start()
        runners = {**runners, **emulation.wait()}
    tensor_acc = {p: {t.encoder: TensorMetrics(), t.decoder: TensorMetrics()} for p in runners}
    parity = _Parity(ctx, runners)
    for source, target in zip(ctx.eval.sources, ctx.eval.targets, strict=True):
        feeds = teacher_forced_feeds(ctx, tok, source, target, None)
        ref_mem = ref[t.encoder].run(feeds["encoder"])[t.memory]
        dec_feeds = {**feeds["decoder"], t.memory: ref_mem}
        ref_logits = ref[t.decoder].run(dec_feeds)[t.logits]
        # Only the positions that matter are compared: memory rows of real source tokens (PAD rows
        # are masked out of cross-attention) and the logits of the target positions the loop reads.
        src_rows = feeds["encoder"][t.source_ids][0] != tok.pad_id
        n_tgt = int((feeds["decoder"][t.target_ids][0] != tok.pad_id).sum())
        enc_outs, dec_outs = {}, {}
        for p, rts in runners.items():
            mem = rts[t.encoder].run(feeds["encoder"])[t.memory]
            tensor_acc[p][t.encoder].update(ref_mem[0][src_rows], mem[0][src_rows])
            # the reference memory, so that the decoder's own error is measured
            logits = rts[t.decoder].run(dec_feeds)[t.logits]
            tensor_acc[p][t.decoder].update(ref_logits[0, :n_tgt], logits[0, :n_tgt])
            enc_outs[p] = {t.memory: mem[0][src_rows]}
            dec_outs[p] = {t.logits: logits[0, :n_tgt]}
        parity.update(t.encoder, enc_outs)
        parity.update(t.decoder, dec_outs)
    tensors = {p: {t.encoder: {t.memory: accs[t.encoder].result()}, t.decoder: {t.logits: accs[t.decoder].result()}}
               for p, accs in tensor_acc.items()}

    ref_hyps, ref_speed = host_decoded.get(("onnx_float", "onnxruntime")) or translate_all(ref, ctx, tok)
    ref_metrics = TranslationMetrics.score(ref_hyps, refs, None, ref_speed)
    task = {}
    translations = {"onnx_float": ref_hyps}
    for p, rts in runners.items():
        if p in emulation.sessions:  # decoded inside the emulator; its speed is not a device's
            tokens, _ = emulation.sessions[p].decoded()
            hyps, speed = decoded_texts(tok, tokens), None
        else:
            hyps, speed = host_decoded[p] if p in host_decoded else translate_all(rts, ctx, tok)
        task[p] = TranslationMetrics.score(hyps, refs, ref_hyps, speed)
        translations[f"{p[0]}@{p[1]}"] = hyps
    parity_result = parity.result()
    primary = ctx.target.runtimes[0]
    for rt, entry in parity_result.items():
        mine, theirs = translations[f"{SHIPPED}@{rt}"], translations[f"{SHIPPED}@{primary}"]
        entry["same_translation"] = sum(a == b for a, b in zip(mine, theirs, strict=True)) / len(mine)
        entry["bleu_diff"] = abs(task[(SHIPPED, rt)]["bleu"] - task[(SHIPPED, primary)]["bleu"])
    shipped = next((k for k in translations if k.startswith(f"{SHIPPED}@")), None)
    ref_metrics["examples"] = [
        {"source": src, "reference": r, "float": f, **({shipped: translations[shipped][k]} if shipped else {})}
        for k, (src, r, f) in enumerate(zip(ctx.eval.sources, refs, ref_hyps, strict=False))
        if k < EXAMPLES
    ]
    return ref_metrics, task, tensors, parity_result


class _Emulation:
    """The emulated runtimes of one validation: shared feed files, one process per artifact and profile."""

    def __init__(self, ctx: BuildContext, sessions: dict[Pair, Any]) -> None:
        self.ctx = ctx
        self.sessions = sessions
        self.folder = ctx.build_dir / "emulated"
        self.recorders: dict[str, Any] = {}
        self.replays: dict[Pair, dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return bool(self.sessions)

    def recorder(self, graph: str, samples: int) -> Any:
        from edgeq.runtimes.arm64 import FeedRecorder

        self.recorders[graph] = FeedRecorder(self.folder / "feeds" / graph, samples)
        return self.recorders[graph]

    def decode(self, encoder: str, decoder: str, spec: dict[str, Any], sources: Any) -> None:
        for session in self.sessions.values():
            session.add_decode(encoder, decoder, spec, sources)

    def start(self) -> None:
        for graph, rec in self.recorders.items():
            rec.close()
            for session in self.sessions.values():
                session.add_run(graph, rec)
        for (key, rt), session in self.sessions.items():
            session.start(self.folder / f"{key}-{rt.replace(':', '-')}")

    def wait(self) -> dict[Pair, dict[str, Any]]:
        out = {}
        for p, session in self.sessions.items():
            session.wait()
            out[p] = {g: session.replay(g) for g in self.recorders}
        self.replays = out
        return out

    def stop(self) -> None:
        for session in self.sessions.values():
            session.stop()


class _Parity:
    """The shipped artifact on each of the target's other runtimes vs its first runtime (host LiteRT)."""

    def __init__(self, ctx: BuildContext, runners: dict[Pair, dict[str, Any]]) -> None:
        self.primary = ctx.target.runtimes[0]
        self.others = [rt for rt in ctx.target.runtimes[1:] if (SHIPPED, rt) in runners]
        self.steps = {
            g.name: {m["name"]: m.get("step") for m in ctx.artifact(SHIPPED, g.name).meta["outputs"]}
            for g in ctx.spec.graphs
        }
        self.acc: dict[str, dict[str, dict[str, ParityMetrics]]] = {rt: {} for rt in self.others}
        self.agree = {rt: [0, 0] for rt in self.others}

    def update(self, graph: str, outs: dict[Pair, dict[str, Any]], classify_output: str | None = None) -> None:
        base = outs[(SHIPPED, self.primary)]
        for rt in self.others:
            other = outs[(SHIPPED, rt)]
            for name, value in other.items():
                acc = self.acc[rt].setdefault(graph, {}).setdefault(name, ParityMetrics(self.steps[graph].get(name)))
                acc.update(base[name], value)
            if classify_output is not None:
                a = np.asarray(base[classify_output]).reshape(len(other[classify_output]), -1).argmax(1)
                b = np.asarray(other[classify_output]).reshape(len(other[classify_output]), -1).argmax(1)
                self.agree[rt][0] += int((a == b).sum())
                self.agree[rt][1] += len(a)

    def result(self) -> dict[str, Any]:
        out = {}
        for rt in self.others:
            entry: dict[str, Any] = {
                "vs": self.primary,
                "outputs": {g: {n: m.result() for n, m in outs.items()} for g, outs in self.acc[rt].items()},
            }
            if self.agree[rt][1]:
                entry["top1_agreement"] = self.agree[rt][0] / self.agree[rt][1]
            out[rt] = entry
        return out


def _count_labels(ctx: BuildContext) -> int | None:
    path = ctx.spec.task.labels
    if path is None:
        return None
    from edgeq.inputs.files import read_labels

    return len(read_labels(path))

