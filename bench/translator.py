"""Benchmark jobs for the translator sample (run by bench/run.py, each in its own child process).

* edgeq: `edgeq build sample_models/translator --target android`: per-stage time and peak memory,
  BLEU of the float model and of each artifact decoded on its runtime, sizes, tokens/s.
* baseline: what onnxruntime's documentation recommends for transformers, dynamic INT8
  quantization (`quantize_dynamic`, int8 weights, activations quantized at run time), applied to
  the same float encoder and decoder ONNX graphs and decoded with the same greedy loop.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from _common import mb, runtime_summary, runtime_table, stage_table, timed_build

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_models" / "translator"


def job_translator_edgeq(work: Path, peak_rss: Any) -> dict[str, Any]:
    outcome, timing = timed_build(SAMPLE, work / "tr_bundle", work / "tr_build")
    r = outcome.report
    arts = r["artifacts"]

    def task(key: str, rt: str) -> dict[str, Any]:
        return arts[key]["runtimes"][rt]["task"]

    return {
        **timing,
        "passed": r["passed"],
        "sentences": r["reference"]["metrics"]["sentences"],
        "float": r["reference"]["metrics"],
        "int8_onnx": task("onnx_int8", "onnxruntime"),
        "float32_tflite": task("tflite_float32", "litert"),
        "int8_tflite": task("tflite_int8", "litert"),
        "bytes": {k: arts[k]["bytes"] for k in ("onnx_float", "onnx_int8", "tflite_float32", "tflite_int8")},
        "size_ratio": r["size"]["int8_to_float32_ratio"],
        "float_fallback": arts["tflite_int8"].get("float_fallback", {}),
        "runtimes": runtime_summary(r),
    }


def job_translator_dynamic(work: Path, peak_rss: Any) -> dict[str, Any]:
    """onnxruntime dynamic INT8 on the same float graphs, decoded with edgeq's loop on onnxruntime."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgeq.artifacts import Artifact
    from edgeq.config import load_model_spec
    from edgeq.decode import greedy_decode
    from edgeq.runtimes import create_runtime
    from edgeq.tasks.translation import TranslationMetrics
    from edgeq.text import ParallelText, Tokenizer

    spec = load_model_spec(SAMPLE)
    t = spec.task
    mem = peak_rss()
    t0 = time.perf_counter()
    files = {}
    for g in (t.encoder, t.decoder):
        files[g] = work / f"{g}.dynamic_int8.onnx"
        quantize_dynamic(str(work / "tr_build" / f"{g}.float.onnx"), str(files[g]), weight_type=QuantType.QInt8)
    seconds = time.perf_counter() - t0
    peak = max(mem.stop().values())

    tok = Tokenizer(t.tokenizer)
    data = ParallelText.open(spec.data.eval, "eval", need_targets=True)
    runners = {}
    for g, path in files.items():
        rt = create_runtime("onnxruntime", threads=1)
        rt.load(Artifact("onnx_dynamic", path, "onnx", "int8", {"outputs": [t.memory if g == t.encoder else t.logits]}, g))
        runners[g] = rt
    from edgeq.decode import DecodeSpec

    dec = spec.graph(t.decoder)
    ds = DecodeSpec(t.source_ids, t.target_ids, t.memory, t.logits, t.source_ids in {i.name for i in dec.inputs},
                    dec.input(t.target_ids).shape[1], tok.bos_id, tok.eos_id, tok.pad_id)
    src_len = spec.graph(t.encoder).input(t.source_ids).shape[1]
    hyps, steps = [], 0
    d0 = time.perf_counter()
    for source in data.sources:
        ids, n = greedy_decode(runners[t.encoder].run, runners[t.decoder].run, tok.source_row(source, src_len), ds)
        hyps.append(tok.decode(ids))
        steps += n
    dsec = time.perf_counter() - d0
    scores = TranslationMetrics.score(hyps, list(data.targets or ()), None,
                                      {"tokens_per_second": steps / dsec, "seconds": dsec})
    return {"seconds": seconds, "peak_rss": peak, "scores": scores,
            "bytes": sum(p.stat().st_size for p in files.values())}


def section(e: dict[str, Any], d: dict[str, Any]) -> list[str]:
    """The translator part of RESULTS.md."""
    b = e["bytes"]
    lines = [
        "## Translator sample (encoder + decoder), android target",
        "",
        f"{e['sentences']} held-out sentence pairs, greedy decoding with edgeq's loop on each runtime "
        "(1 thread). Tokens/s are decoder steps per second on this x86 host, Python loop included: host numbers, "
        "not phone numbers.",
        "",
        *stage_table(e, "**total**"),
    ]
    rows = [
        ("float reference", "float ONNX", "onnxruntime", e["float"], b["onnx_float"]),
        ("edgeq", "INT8 ONNX (static, QDQ)", "onnxruntime", e["int8_onnx"], b["onnx_int8"]),
        ("edgeq", "float32 .tflite", "LiteRT", e["float32_tflite"], b["tflite_float32"]),
        ("edgeq", "INT8 .tflite (shipped)", "LiteRT", e["int8_tflite"], b["tflite_int8"]),
        ("baseline: `quantize_dynamic`", "INT8 ONNX (dynamic)", "onnxruntime", d["scores"], d["bytes"]),
    ]
    lines += ["| pipeline | artifact | runtime | BLEU | chrF | exact match | tokens/s (host) | bytes |",
              "|---|---|---|---|---|---|---|---|"]
    for who, art, rt, m, nbytes in rows:
        lines.append(f"| {who} | {art} | {rt} | {m['bleu']:.2f} | {m['chrf']:.2f} | {m['exact_match']:.4f} | "
                     f"{m['tokens_per_second_host']:.0f} | {nbytes} |")
    i8, f32 = e["int8_tflite"], e["float32_tflite"]
    lines += [
        "",
        f"BLEU drop of the shipped INT8 .tflite vs the float model: **{e['float']['bleu'] - i8['bleu']:.2f}**; "
        f"INT8 / float32 .tflite bytes (encoder + decoder): **{e['size_ratio']:.3f}**; "
        f"LiteRT tokens/s INT8 / float32: {i8['tokens_per_second_host'] / f32['tokens_per_second_host']:.2f}; "
        f"quantize_dynamic took {d['seconds']:.1f} s ({mb(d['peak_rss'])}).",
        "",
    ]
    if e["float_fallback"]:
        lines += [f"Ops left in float in the INT8 .tflite: {e['float_fallback']}", ""]
    lines += [
        "### The shipped translator on every runtime of the android target",
        "",
        "Every eval sentence decoded with the same loop on each runtime (inside the emulator for the arm64",
        "cores); differences against host LiteRT in quantization steps of the encoder memory and the decoder",
        "logits on teacher-forced inputs. Emulator wall time is validation cost, not phone latency.",
        "",
        *runtime_table(e["runtimes"], translation=True),
    ]
    return lines
