"""End to end: the tiny encoder-decoder through `python -m edgeq build --json` (one shared build), read
through its bundle, its report and its kept build folder; then the bundle's .tflite files decode the
eval set on LiteRT with edgeq's greedy loop and must give the translations the report scored."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    TRANSLATION_CALIBRATION_SAMPLES,
    TRANSLATION_EMULATED_SAMPLES,
    TranslationBuild,
    invoke_cli,
    staging_leftovers,
)
from tiny_translator import BOS, D_MODEL, EOS, LENGTH, N_EVAL, PAD, translator_assets

from edgeq.artifacts import Artifact
from edgeq.config import load_model_spec, load_target
from edgeq.decode import DecodeSpec, greedy_decode
from edgeq.gates import GATES
from edgeq.runtimes import create_runtime
from edgeq.tasks.translation import prefix_lengths
from edgeq.text import ParallelText, Tokenizer
from edgeq.tflite_inspect import inspect_tflite

BUNDLE_FILES = {"encoder.tflite", "decoder.tflite", "tokenizer.model", "model.json", "report.json", "report.md",
                "manifest.json", "attribution.png"}
VARIANTS = [("onnx_int8", "onnxruntime"), ("tflite_float32", "litert"), ("tflite_int8", "litert")]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def built(translation_build: TranslationBuild) -> TranslationBuild:
    assert translation_build.returncode == 0, translation_build.stderr[-3000:]
    return translation_build


@pytest.fixture(scope="module")
def report(built: TranslationBuild) -> dict[str, Any]:
    return json.loads((built.out / "report.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def model_json(built: TranslationBuild) -> dict[str, Any]:
    return json.loads((built.out / "model.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def references(built: TranslationBuild) -> tuple[list[str], list[str]]:
    text = ParallelText.open(built.model_dir / "data" / "eval", "eval", need_targets=True)
    assert text.targets is not None
    return list(text.sources), list(text.targets)


# --- the command and the bundle -------------------------------------------------------------------------


def test_build_exits_0_and_prints_the_report(built: TranslationBuild, report: dict[str, Any]) -> None:
    assert json.loads(built.stdout) == report
    assert report["passed"] is True and report["task"] == "translation"
    err = [_ANSI.sub("", ln) for ln in built.stderr.splitlines() if ln.strip()]
    stages = ["export", "calibrate", "quantize", "convert", "precision", "validate", "package"]
    assert [ln for ln in err if ln.endswith(" ...")] == [f"[{k}/7] {s} ..." for k, s in enumerate(stages, 1)]
    assert not any(ln.startswith("error") for ln in err)


def test_bundle_holds_both_graphs_and_the_tokenizer(built: TranslationBuild) -> None:
    assert {p.name for p in built.out.iterdir()} == BUNDLE_FILES
    assert staging_leftovers(built.out.parent) == []
    assert (built.out / "tokenizer.model").read_bytes() == (built.model_dir / "tokenizer.model").read_bytes()
    for graph in ("encoder", "decoder"):
        data = (built.out / f"{graph}.tflite").read_bytes()
        assert data[4:8] == b"TFL3"
        assert data == (built.keep / f"{graph}.int8.tflite").read_bytes()


def test_kept_build_folder_names_files_by_graph(built: TranslationBuild) -> None:
    names = {p.name for p in built.keep.iterdir()}
    for graph in ("encoder", "decoder"):
        assert {f"{graph}.float.onnx", f"{graph}.int8.onnx", f"{graph}.saved_model", f"{graph}.float32.tflite",
                f"{graph}.int8.tflite", f"{graph}.convert_job.json"} <= names
    assert "model.float.onnx" not in names
    cal = built.keep / "calibration"
    assert sorted(p.name for p in (cal / "encoder").iterdir()) == ["src_ids.npy"]
    assert sorted(p.name for p in (cal / "decoder").iterdir()) == ["memory.npy", "src_ids.npy", "tgt_ids.npy"]


def test_model_json_describes_the_decode_loop(model_json: dict[str, Any]) -> None:
    vocab = translator_assets().vocab_size
    assert (model_json["name"], model_json["format"], model_json["precision"], model_json["io_dtype"]) == (
        "tiny-translator", "tflite", "int8", "float32",
    )
    assert "inputs" not in model_json and "file" not in model_json  # per graph instead
    task = model_json["task"]
    assert task["kind"] == "translation"
    assert (task["tokenizer"], task["tokenizer_type"]) == ("tokenizer.model", "sentencepiece")
    assert (task["bos_id"], task["eos_id"], task["pad_id"]) == (BOS, EOS, PAD)
    assert (task["source_length"], task["target_length"]) == (LENGTH, LENGTH)
    assert task["encoder"] == {"graph": "encoder", "input": "src_ids", "output": "memory"}
    assert task["decoder"] == {"graph": "decoder", "target_input": "tgt_ids", "memory_input": "memory",
                               "source_input": "src_ids", "output": "logits"}
    assert task["loop"] and all(isinstance(s, str) for s in task["loop"])
    graphs = model_json["graphs"]
    assert sorted(graphs) == ["decoder", "encoder"]
    assert graphs["encoder"]["file"] == "encoder.tflite" and graphs["decoder"]["file"] == "decoder.tflite"
    enc_in = {i["name"]: i for i in graphs["encoder"]["inputs"]}
    dec_in = {i["name"]: i for i in graphs["decoder"]["inputs"]}
    assert list(enc_in) == ["src_ids"] and list(dec_in) == ["tgt_ids", "memory", "src_ids"]
    for spec in (enc_in["src_ids"], dec_in["tgt_ids"], dec_in["src_ids"]):
        assert (spec["dtype"], spec["shape"], spec["quantization"]) == ("int32", [1, LENGTH], None)
    assert (dec_in["memory"]["dtype"], dec_in["memory"]["shape"], dec_in["memory"]["layout"]) == (
        "float32", [1, LENGTH, D_MODEL], "NTC",
    )
    (enc_out,) = graphs["encoder"]["outputs"]
    (dec_out,) = graphs["decoder"]["outputs"]
    assert (enc_out["name"], enc_out["shape"]) == ("memory", [1, LENGTH, D_MODEL])
    assert (dec_out["name"], dec_out["shape"], dec_out["dtype"]) == ("logits", [1, LENGTH, vocab], "float32")


def test_manifest_hashes_every_file_and_the_sentences(built: TranslationBuild) -> None:
    manifest = json.loads((built.out / "manifest.json").read_text(encoding="utf-8"))
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == BUNDLE_FILES - {"manifest.json"}
    for name, entry in listed.items():
        data = (built.out / name).read_bytes()
        assert (entry["sha256"], entry["bytes"]) == (hashlib.sha256(data).hexdigest(), len(data)), name
    assert [f["name"] for f in manifest["source_model"]["files"]] == ["model.py", "weights.safetensors"]
    for f in manifest["source_model"]["files"]:
        assert f["sha256"] == hashlib.sha256((built.model_dir / f["name"]).read_bytes()).hexdigest()
    for role, key in (("calibration", "calibration_data"), ("eval", "eval_data")):
        text = ParallelText.open(built.model_dir / "data" / role, role, need_targets=True)
        assert manifest[key]["sha256"] == text.sha256()
    assert manifest["eval_data"]["samples"] == N_EVAL
    assert manifest["passed"] is True


def test_manifest_counts_the_calibration_sentences_used(built: TranslationBuild, report: dict[str, Any]) -> None:
    manifest = json.loads((built.out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["calibration_data"]["samples"] == report["quantization"]["calibration_samples"]["encoder"]


# --- report.json ----------------------------------------------------------------------------------------


def test_reference_decodes_the_references(report: dict[str, Any]) -> None:
    ref = report["reference"]
    assert (ref["artifact"], ref["runtime"], ref["samples"]) == ("onnx_float", "onnxruntime", N_EVAL)
    m = ref["metrics"]
    # the eval references are the float model's own greedy translations
    assert m["bleu"] == pytest.approx(100.0) and m["chrf"] == pytest.approx(100.0) and m["exact_match"] == 1.0
    assert m["sentences"] == N_EVAL and m["tokens_per_second_host"] > 0


def test_every_variant_has_translation_metrics(report: dict[str, Any]) -> None:
    arts = report["artifacts"]
    assert list(arts) == ["onnx_float", "onnx_int8", "tflite_float32", "tflite_int8"]
    assert {k: list(a["runtimes"]) for k, a in arts.items()} == {
        "onnx_float": [], "onnx_int8": ["onnxruntime"], "tflite_float32": ["litert"],
        "tflite_int8": ["litert", "litert-arm64:cortex-a53", "litert-arm64:cortex-a76", "litert-ref"],
    }
    for key, rt in VARIANTS:
        task = arts[key]["runtimes"][rt]["task"]
        assert {"bleu", "chrf", "exact_match", "bleu_vs_float", "tokens_per_second_host", "sentences"} <= set(task)
        assert task["sentences"] == N_EVAL
        assert 0.0 <= task["exact_match"] <= 1.0 and task["tokens_per_second_host"] > 0
        assert all(np.isfinite(task[k]) for k in ("bleu", "chrf", "bleu_vs_float"))
    shipped = arts["tflite_int8"]["runtimes"]["litert"]["task"]
    # a model with wide logit margins: INT8 changes no translation
    assert shipped["bleu"] == pytest.approx(100.0) and shipped["exact_match"] == 1.0
    assert shipped["bleu_vs_float"] == pytest.approx(100.0)


def test_outputs_are_compared_per_graph(built: TranslationBuild, report: dict[str, Any]) -> None:
    vocab = translator_assets().vocab_size
    # only the positions that matter: real source tokens (with EOS) and the target positions read
    tok = Tokenizer(built.model_dir / "tokenizer.model")
    text = ParallelText.open(built.model_dir / "data" / "eval", "eval", need_targets=True)
    src_positions = sum(len(tok.encode(s)) + 1 for s in text.sources)
    tgt_positions = sum(min(len(tok.target_ids(t)) - 1, LENGTH) for t in text.targets or ())
    for key, rt in VARIANTS:
        outputs = report["artifacts"][key]["runtimes"][rt]["outputs"]
        assert sorted(outputs) == ["decoder", "encoder"]  # report.json keys are sorted
        assert list(outputs["encoder"]) == ["memory"] and list(outputs["decoder"]) == ["logits"]
        memory, logits = outputs["encoder"]["memory"], outputs["decoder"]["logits"]
        assert memory["elements"] == src_positions * D_MODEL < N_EVAL * LENGTH * D_MODEL
        assert logits["elements"] == tgt_positions * vocab < N_EVAL * LENGTH * vocab
        for m in (memory, logits):
            assert m["cosine"] > 0.99 and isinstance(m["identical"], bool), (key, m)
            assert m["sqnr_db"] is None or np.isfinite(m["sqnr_db"])


def test_files_bytes_and_inspection_per_graph(built: TranslationBuild, report: dict[str, Any]) -> None:
    arts = report["artifacts"]
    names = {"onnx_float": "float.onnx", "onnx_int8": "int8.onnx", "tflite_float32": "float32.tflite",
             "tflite_int8": "int8.tflite"}
    for key, suffix in names.items():
        files = arts[key]["files"]
        assert sorted(files) == ["decoder", "encoder"]
        for graph, f in files.items():
            assert f == {"file": f"{graph}.{suffix}", "bytes": (built.keep / f"{graph}.{suffix}").stat().st_size}
        assert arts[key]["bytes"] == sum(f["bytes"] for f in files.values())
    for key in ("tflite_float32", "tflite_int8"):
        insp = arts[key]["inspection"]
        assert sorted(insp) == ["decoder", "encoder"]
        for graph in insp:
            assert insp[graph] == inspect_tflite(built.keep / f"{graph}.{names[key]}")
    shipped = arts["tflite_int8"]["inspection"]
    assert all(i["int8_compute_fraction"] == 1.0 and i["compute_ops"] > 0 for i in shipped.values())
    assert "BATCH_MATMUL" in shipped["encoder"]["ops"] and "BATCH_MATMUL" in shipped["decoder"]["ops"]
    assert "float_fallback" not in arts["tflite_int8"]
    assert report["size"]["shipped_tflite_bytes"] == arts["tflite_int8"]["bytes"]
    assert sum(report["size"]["shipped_tflite_breakdown"].values()) == arts["tflite_int8"]["bytes"]


def test_gates_of_a_translation_model(report: dict[str, Any]) -> None:
    gates: dict[str, Any] = {}
    for g in report["gates"]:  # the first runtime's (host LiteRT) where a gate is checked per runtime
        gates.setdefault(g["name"], g)
    target_gates = load_target("android").gates
    # the classification gates do not apply; bleu_drop and runtime_bleu_diff do
    classification = ("accuracy_drop", "top1_agreement", "runtime_top1_agreement", "detection_agreement", "map_drop")
    sliced = ("output_slice_levels",)  # no output of rank 3 or more: nothing to cut into slices
    assert list(gates) == [n for n in GATES if n in target_gates and n not in classification + sliced]
    assert gates["runtime_bleu_diff"]["runtime"] == "litert-ref"
    assert all(g["passed"] and g["artifact"] == "tflite_int8" for g in gates.values())
    shipped = report["artifacts"]["tflite_int8"]["runtimes"]["litert"]
    bleu = gates["bleu_drop"]
    assert (bleu["runtime"], bleu["unit"], bleu["limit"]) == ("litert", "BLEU", target_gates["bleu_drop"])
    assert bleu["value"] == pytest.approx(report["reference"]["metrics"]["bleu"] - shipped["task"]["bleu"])
    assert gates["output_cosine"]["value"] == min(
        m["cosine"] for outs in shipped["outputs"].values() for m in outs.values()
    )
    assert gates["model_bytes"]["value"] == report["artifacts"]["tflite_int8"]["bytes"]
    assert gates["int8_compute_ops"]["value"] == 1.0


def test_quantization_and_conversion_per_graph(built: TranslationBuild, report: dict[str, Any]) -> None:
    tok = Tokenizer(built.model_dir / "tokenizer.model")
    used = ParallelText.open(built.model_dir / "data" / "calibration", "calibration", need_targets=True)
    assert used.targets is not None
    targets = used.targets[:TRANSLATION_CALIBRATION_SAMPLES]
    assert report["quantization"]["calibration_samples"] == {
        "encoder": TRANSLATION_CALIBRATION_SAMPLES,
        "decoder": sum(len(prefix_lengths(len(tok.target_ids(t)) - 1)) for t in targets),
    }
    conv = report["conversion"]
    none = {"float_fallback": None, "strategies": []}
    assert conv["graphs"] == {"encoder": none, "decoder": none}
    assert conv["int8_ops_set"] == "TFLITE_BUILTINS_INT8"
    assert report["model"]["source_sha256"] == hashlib.sha256(
        (built.model_dir / "model.py").read_bytes() + (built.model_dir / "weights.safetensors").read_bytes()
    ).hexdigest()


def test_report_md_has_translation_columns_and_each_graph(built: TranslationBuild) -> None:
    md = (built.out / "report.md").read_text(encoding="utf-8")
    assert "**PASSED**" in md and f"{N_EVAL} eval samples" in md
    assert "| artifact | bytes | runtime | BLEU | chrF | exact | BLEU vs float | tokens/s (host) |" in md
    assert "| bleu_drop | tflite_int8 | litert |" in md
    for graph, output in (("encoder", "memory"), ("decoder", "logits")):
        assert f"| tflite_int8 | litert | {graph} | {output} |" in md
        assert re.search(rf"^- {graph}: (\d+) of \1 compute ops run in int8\.", md, re.M), graph


def test_cli_summary_of_a_translation_report(built: TranslationBuild, report: dict[str, Any], capsys: Any) -> None:
    from edgeq.summary import print_summary as _summary

    _summary(report, built.out)
    out = capsys.readouterr().out
    assert "BLEU" in out and "chrF" in out and "tok/s host" in out
    assert "accuracy" not in out and "agreement" not in out
    assert "PASS bleu_drop on litert: 0.0000 <= 1.0000 (BLEU)" in out
    assert "PASSED: bundle in" in out and "some ops stayed float32" not in out


# --- the bundle on its own: decode the eval set with its .tflite files on LiteRT -------------------------


def _runtime_from_model_json(bundle: Path, graph: dict[str, Any], name: str) -> Any:
    """A LiteRT runtime fed exactly as model.json says: tensors by name, in the .tflite's own layout."""

    def entry(t: dict[str, Any]) -> dict[str, Any]:
        return {"name": t["name"], "tflite_name": t["tensor"], "dtype": t["dtype"],
                "quantization": t["quantization"], "perm": list(range(len(t["shape"])))}

    meta = {"signature": graph["signature"], "inputs": [entry(t) for t in graph["inputs"]],
            "outputs": [entry(t) for t in graph["outputs"]]}
    rt = create_runtime("litert", threads=1)
    rt.load(Artifact("tflite_int8", bundle / graph["file"], "tflite", "int8", meta, graph=name))
    return rt


@pytest.fixture(scope="module")
def bundle_translations(built: TranslationBuild, model_json: dict[str, Any],
                        references: tuple[list[str], list[str]]) -> tuple[list[str], int]:
    task = model_json["task"]
    tok = Tokenizer(built.out / task["tokenizer"])
    enc = _runtime_from_model_json(built.out, model_json["graphs"][task["encoder"]["graph"]], "encoder")
    dec = _runtime_from_model_json(built.out, model_json["graphs"][task["decoder"]["graph"]], "decoder")
    spec = DecodeSpec(
        source_ids=task["encoder"]["input"], target_ids=task["decoder"]["target_input"],
        memory=task["decoder"]["memory_input"], logits=task["decoder"]["output"],
        decoder_takes_source=task["decoder"]["source_input"] is not None, target_len=task["target_length"],
        bos_id=task["bos_id"], eos_id=task["eos_id"], pad_id=task["pad_id"],
    )
    hyps, steps = [], 0
    for source in references[0]:
        ids, n = greedy_decode(enc.run, dec.run, tok.source_row(source, task["source_length"]), spec)
        hyps.append(tok.decode(ids))
        steps += n
    return hyps, steps


def test_bundle_decodes_to_the_scored_translations(
    report: dict[str, Any], references: tuple[list[str], list[str]], bundle_translations: tuple[list[str], int]
) -> None:
    import sacrebleu

    hyps, steps = bundle_translations
    sources, refs = references
    task = report["artifacts"]["tflite_int8"]["runtimes"]["litert"]["task"]
    assert sacrebleu.corpus_bleu(hyps, [refs]).score == pytest.approx(task["bleu"], abs=1e-9)
    assert sacrebleu.corpus_chrf(hyps, [refs]).score == pytest.approx(task["chrf"], abs=1e-9)
    assert float(np.mean([h == r for h, r in zip(hyps, refs, strict=True)])) == task["exact_match"]
    assert hyps == refs  # and so exactly the float model's translations
    assert steps == sum(len(r.split()) + 1 for r in refs)  # one piece per word, then EOS
    for k, example in enumerate(report["reference"]["metrics"].get("examples", [])):
        assert example["source"] == sources[k]
        assert example.get("tflite_int8@litert", hyps[k]) == hyps[k]


def test_bundle_runs_with_the_mapping_validate_used(
    built: TranslationBuild, references: tuple[list[str], list[str]], bundle_translations: tuple[list[str], int]
) -> None:
    """The same decode with the runtimes fed in ONNX terms (io_mapping, as the validate stage loads them)."""
    from edgeq.stages.convert import io_mapping

    spec = load_model_spec(built.model_dir)
    vocab = translator_assets().vocab_size
    runners = {}
    for graph, out_name, shape in (("encoder", "memory", [1, LENGTH, D_MODEL]), ("decoder", "logits", [1, LENGTH, vocab])):
        path = built.out / f"{graph}.tflite"
        meta = io_mapping(path, spec.graph(graph).inputs, [out_name], {out_name: shape})
        rt = create_runtime("litert", threads=1)
        rt.load(Artifact("tflite_int8", path, "tflite", "int8", meta, graph=graph))
        runners[graph] = rt
    tok = Tokenizer(built.out / "tokenizer.model")
    ds = DecodeSpec("src_ids", "tgt_ids", "memory", "logits", True, LENGTH, BOS, EOS, PAD)
    hyps = [tok.decode(greedy_decode(runners["encoder"].run, runners["decoder"].run, tok.source_row(s, LENGTH), ds)[0])
            for s in references[0]]
    assert hyps == bundle_translations[0]


def test_edgeq_translate_uses_the_bundle_alone(
    built: TranslationBuild, references: tuple[list[str], list[str]], bundle_translations: tuple[list[str], int],
    tmp_path: Path,
) -> None:
    sources = references[0]
    (tmp_path / "in.txt").write_text("\n".join(sources[2:]) + "\n", encoding="utf-8")
    result = invoke_cli(["translate", str(built.out), sources[0], sources[1], "--file", str(tmp_path / "in.txt")])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stdout.splitlines() == bundle_translations[0]


def _error_line(result: Any) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    (line,) = [_ANSI.sub("", ln).rstrip() for ln in result.stderr.splitlines() if ln.strip()]
    assert line.startswith("error: ")
    return line


def test_edgeq_translate_refuses_bad_input_with_one_line(built: TranslationBuild, tmp_path: Path) -> None:
    from tiny_translator import SOURCE_WORDS

    too_long = " ".join(SOURCE_WORDS)  # 10 pieces + EOS
    line = _error_line(invoke_cli(["translate", str(built.out), "red", too_long]))
    assert "input 2 is 11 tokens with EOS, over the model's source length 8" in line
    assert "nothing to translate; pass sentences or --file" in _error_line(invoke_cli(["translate", str(built.out)]))
    assert "does not exist" in _error_line(invoke_cli(["translate", str(built.out), "--file", str(tmp_path / "no.txt")]))
    assert "is not an edgeq bundle (no model.json)" in _error_line(invoke_cli(["translate", str(tmp_path), "red"]))
    other = tmp_path / "classifier"
    other.mkdir()
    (other / "model.json").write_text(json.dumps({"task": {"kind": "classification"}}), encoding="utf-8")
    assert "holds a classification model, not a translation model" in _error_line(
        invoke_cli(["translate", str(other), "red"])
    )


@pytest.mark.parametrize("profile", ["cortex-a53", "cortex-a76"])
def test_translation_decoded_inside_the_emulator(report: dict[str, Any], profile: str) -> None:
    """Each arm64 profile decodes a seeded subset of the eval sentences inside the emulator (5 of 8 here);
    its BLEU is compared with the reference's and host LiteRT's on the same sentences and gated, and no
    speed is reported for it (only the cost of validating)."""
    rt = f"litert-arm64:{profile}"
    entry = report["artifacts"]["tflite_int8"]["runtimes"][rt]
    task = entry["task"]
    subset = entry["samples"]
    assert subset["count"] == TRANSLATION_EMULATED_SAMPLES and subset["of"] == N_EVAL and len(subset["indices"]) == 5
    assert report["artifacts"]["tflite_int8"]["runtimes"]["litert"]["samples"] == {"count": N_EVAL, "of": N_EVAL}
    assert task["sentences"] == TRANSLATION_EMULATED_SAMPLES == task["reference"]["sentences"]
    assert "tokens_per_second_host" not in task and "decode_seconds_host" not in task
    assert entry["describe"]["validation_seconds"]["decode"] > 0
    parity = report["artifacts"]["tflite_int8"]["parity"][rt]
    assert 0.0 <= parity["same_translation"] <= 1.0 and parity["bleu_diff"] >= 0.0
    assert set(parity["outputs"]) == {"encoder", "decoder"}
    gate = next(g for g in report["gates"] if g["name"] == "runtime_bleu_diff" and g["runtime"] == rt)
    assert gate["value"] == parity["bleu_diff"] and gate["passed"]
    drop = next(g for g in report["gates"] if g["name"] == "bleu_drop" and g["runtime"] == rt)
    assert drop["value"] == pytest.approx(task["reference"]["bleu"] - task["bleu"])
