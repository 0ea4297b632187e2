"""edgeq.text: the SentencePiece tokenizer, parallel text, and every bad translation input.

Bad inputs are checked at two layers: ``Tokenizer`` / ``ParallelText`` / ``open_data`` raise
``ConfigError`` or ``DataError`` with one line, and `edgeq build` exits 2 with that line and
leaves --out as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bad_inputs import Mutation, both, edit, remove, write_bytes
from conftest import invoke_cli, make_fake_bundle, snapshot, staging_leftovers
from tiny_translator import (
    BOS,
    EOS,
    LENGTH,
    PAD,
    SOURCE_WORDS,
    TARGET_WORDS,
    UNK,
    corpus_lines,
    make_translation_dir,
    train_tokenizer,
    translator_assets,
    write_lines,
)

from edgeq.config import load_model_spec
from edgeq.errors import ConfigError, DataError
from edgeq.tasks import make_task
from edgeq.text import ParallelText, Tokenizer


def open_data(spec: Any) -> Any:
    """The calibration and eval sets as a build opens them (the translation task's open_data)."""
    return make_task(spec).open_data()

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    path.write_bytes(translator_assets().tokenizer)
    return Tokenizer(path)


# --- Tokenizer ---------------------------------------------------------------------------------------


def test_special_ids_and_vocabulary(tok: Tokenizer) -> None:
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (PAD, BOS, EOS)
    assert tok.vocab_size == translator_assets().vocab_size == 4 + len(SOURCE_WORDS) + len(TARGET_WORDS)
    assert int(tok.sp.unk_id()) == UNK


def test_encode_decode_round_trip(tok: Tokenizer) -> None:
    ids = tok.encode("red cat dog")
    assert len(ids) == 3 and all(4 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == "red cat dog"
    assert tok.decode([np.int64(i) for i in ids]) == "red cat dog"  # numpy ids from a runtime work too
    assert tok.encode("") == [] and tok.decode([]) == ""


def test_source_row_is_pieces_then_eos_then_pad(tok: Tokenizer) -> None:
    pieces = tok.encode("red cat")
    row = tok.source_row("red cat", LENGTH)
    assert row.dtype == np.int32 and row.shape == (1, LENGTH)
    assert row.tolist() == [[*pieces, EOS] + [PAD] * (LENGTH - 3)]


def test_source_row_that_fills_the_row_exactly_fits(tok: Tokenizer) -> None:
    text = " ".join(SOURCE_WORDS[: LENGTH - 1])  # LENGTH - 1 pieces + EOS
    row = tok.source_row(text, LENGTH)
    assert row[0, -1] == EOS and PAD not in row


def test_source_row_that_does_not_fit_raises_value_error(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match=r"^9 tokens$"):
        tok.source_row(" ".join(SOURCE_WORDS[:8]), LENGTH)


def test_target_ids_are_bos_pieces_eos(tok: Tokenizer) -> None:
    assert tok.target_ids("rouge chat") == [BOS, *tok.encode("rouge chat"), EOS]
    assert tok.target_ids("") == [BOS, EOS]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param(b"not a sentencepiece model", "is not a readable SentencePiece model", id="text"),
        pytest.param(b"", "is not a readable SentencePiece model", id="empty"),
        pytest.param(bytes(range(256)) * 8, "is not a readable SentencePiece model", id="binary"),
    ],
)
def test_a_file_that_is_not_a_sentencepiece_model(tmp_path: Path, data: bytes, fragment: str) -> None:
    (tmp_path / "tok.model").write_bytes(data)
    with pytest.raises(ConfigError) as info:
        Tokenizer(tmp_path / "tok.model")
    assert fragment in str(info.value) and "point [task].tokenizer at the .model file" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("ids", "missing"),
    [
        ({"pad_id": -1}, "pad"),
        ({"eos_id": -1}, "eos"),
        ({"pad_id": -1, "bos_id": -1, "eos_id": -1, "unk_id": 0}, "pad/bos/eos"),
    ],
)
def test_a_tokenizer_without_the_special_ids(tmp_path: Path, ids: dict[str, int], missing: str) -> None:
    (tmp_path / "tok.model").write_bytes(train_tokenizer(corpus_lines(), **ids))
    with pytest.raises(ConfigError, match=f"tokenizer tok.model has no {missing} id; train it with pad_id"):
        Tokenizer(tmp_path / "tok.model")


# --- ParallelText ------------------------------------------------------------------------------------


def folder(tmp_path: Path, sources: list[str] | None, targets: list[str] | None) -> Path:
    f = tmp_path / "data"
    f.mkdir(parents=True)
    if sources is not None:
        write_lines(f / "source.txt", sources)
    if targets is not None:
        write_lines(f / "target.txt", targets)
    return f


def test_parallel_text_reads_sentence_pairs(tmp_path: Path) -> None:
    f = folder(tmp_path, ["red cat", "dog"], ["rouge chat", "chien"])
    text = ParallelText.open(f, "eval", need_targets=True)
    assert (text.sources, text.targets, len(text), text.role) == (("red cat", "dog"), ("rouge chat", "chien"), 2, "eval")


def test_parallel_text_without_targets_when_they_are_not_needed(tmp_path: Path) -> None:
    text = ParallelText.open(folder(tmp_path, ["red cat"], None), "eval", need_targets=False)
    assert text.targets is None


def test_windows_line_ends_and_no_final_newline(tmp_path: Path) -> None:
    f = tmp_path / "data"
    f.mkdir()
    (f / "source.txt").write_bytes(b"red cat\r\ndog\r\n")
    (f / "target.txt").write_bytes(b"rouge chat\nchien")
    text = ParallelText.open(f, "calibration", need_targets=True)
    assert text.sources == ("red cat", "dog") and text.targets == ("rouge chat", "chien")


def test_sha256_covers_both_files(tmp_path: Path) -> None:
    f = folder(tmp_path, ["red cat"], ["rouge chat"])
    before = ParallelText.open(f, "eval", need_targets=True).sha256()
    write_lines(f / "target.txt", ["rouge chien"])
    assert ParallelText.open(f, "eval", need_targets=True).sha256() != before


def _refused(error: type, fragment: str, call: Callable[[], Any]) -> str:
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert fragment in message, message
    assert "\n" not in message
    assert info.value.exit_code == 2
    return message


PARALLEL_CASES = [
    pytest.param(
        ["red cat", "dog", "bird"], ["rouge chat", "chien"],
        "source.txt has 3 lines but target.txt has 2", id="line-counts-differ",
    ),
    pytest.param(["red cat", "", "dog"], ["rouge chat", "x", "chien"], "source.txt line 2 is empty", id="empty-source-line"),
    pytest.param(["red cat", "dog"], ["rouge chat", "   "], "target.txt line 2 is empty", id="blank-target-line"),
    pytest.param([], [], "source.txt in", id="empty-file"),
    pytest.param(["red cat"], None, "target.txt missing in", id="no-target-txt"),
    pytest.param(None, ["rouge chat"], "source.txt missing in", id="no-source-txt"),
]


@pytest.mark.parametrize(("sources", "targets", "fragment"), PARALLEL_CASES)
def test_bad_parallel_text(tmp_path: Path, sources: Any, targets: Any, fragment: str) -> None:
    f = folder(tmp_path, sources, targets)
    _refused(DataError, fragment, lambda: ParallelText.open(f, "eval", need_targets=True))


def test_empty_line_is_named_by_its_line_number(tmp_path: Path) -> None:
    f = folder(tmp_path, ["a", "b", "c", "d", "", "f"], None)
    message = _refused(DataError, "line 5 is empty", lambda: ParallelText.open(f, "calibration", need_targets=False))
    assert message.startswith("calibration data: source.txt line 5 is empty")


def test_non_utf8_bytes(tmp_path: Path) -> None:
    f = folder(tmp_path, ["red cat"], ["rouge chat"])
    (f / "target.txt").write_bytes("rouge chat\nle caf\u00e9\n".encode("latin-1"))
    _refused(DataError, "target.txt is not UTF-8 text", lambda: ParallelText.open(f, "eval", need_targets=True))


def test_missing_data_folder(tmp_path: Path) -> None:
    _refused(
        DataError, "eval data folder", lambda: ParallelText.open(tmp_path / "nowhere", "eval", need_targets=True)
    )


def test_sentences_longer_than_the_graphs(tmp_path: Path, tok: Tokenizer) -> None:
    long_source = " ".join(SOURCE_WORDS[:8])  # 8 pieces + EOS = 9 > 8
    f = folder(tmp_path, ["red cat", long_source], ["rouge chat", "chien"])
    text = ParallelText.open(f, "eval", need_targets=True)
    message = _refused(DataError, "source.txt line 2 is 9 tokens with EOS, over the encoder's length 8",
                       lambda: text.check_lengths(tok, LENGTH, LENGTH))
    assert message.startswith("eval data:")
    # BOS + 8 pieces = 9 > 8; BOS + 7 = 8 fits
    text = ParallelText.open(folder(tmp_path / "t", ["red", "cat"], [" ".join(TARGET_WORDS[:7]), " ".join(TARGET_WORDS[:8])]),
                             "calibration", need_targets=True)
    _refused(DataError, "target.txt line 2 is 9 tokens with BOS, over the decoder's length 8",
             lambda: text.check_lengths(tok, LENGTH, LENGTH))
    text.check_lengths(tok, LENGTH, 9)  # fits a longer decoder


# --- bad translation folders: open_data, then `edgeq build` -------------------------------------------


def lines_of(path_rel: str, lines: list[str]) -> Mutation:
    def run(root: Path) -> None:
        write_lines(root / path_rel, lines)

    return run


def _tokenizer(**ids: int) -> Mutation:
    def run(root: Path) -> None:
        (root / "tokenizer.model").write_bytes(train_tokenizer(corpus_lines(), **ids))

    return run


# Mutations of a valid translation folder that `edgeq build` refuses before any stage runs.
TRANSLATION_DATA_CASES = [
    pytest.param(
        lines_of("data/eval/target.txt", ["chat"]), DataError,
        "eval data: source.txt has 8 lines but target.txt has 1", id="line-counts-differ",
    ),
    pytest.param(
        lines_of("data/calibration/source.txt", ["red", "cat", "", "dog", "bird", "fish", "tree", "red"]), DataError,
        "calibration data: source.txt line 3 is empty", id="empty-line",
    ),
    pytest.param(remove("data/eval/target.txt"), DataError, "eval data: target.txt missing in", id="no-eval-target"),
    pytest.param(
        remove("data/calibration/target.txt"), DataError, "calibration data: target.txt missing in", id="no-calibration-target",
    ),
    pytest.param(
        write_bytes("data/eval/source.txt", b"red cat\n\xff\xfe dog\n"), DataError,
        "eval data: source.txt is not UTF-8 text", id="not-utf8",
    ),
    pytest.param(
        lines_of("data/calibration/source.txt", ["red"] * 7 + [" ".join(SOURCE_WORDS)]), DataError,
        "calibration data: source.txt line 8 is 11 tokens with EOS, over the encoder's length 8", id="source-too-long",
    ),
    pytest.param(
        lines_of("data/eval/target.txt", ["rouge"] * 7 + [" ".join(TARGET_WORDS)]), DataError,
        "eval data: target.txt line 8 is 11 tokens with BOS, over the decoder's length 8", id="target-too-long",
    ),
    pytest.param(
        write_bytes("tokenizer.model", b"\x00not a model"), ConfigError,
        "is not a readable SentencePiece model", id="tokenizer-not-sentencepiece",
    ),
    pytest.param(_tokenizer(pad_id=-1, bos_id=-1, eos_id=-1), ConfigError, "has no pad/bos/eos id", id="no-special-ids"),
    pytest.param(remove("data/eval"), DataError, "[data].eval 'data/eval' does not exist", id="no-eval-folder"),
    pytest.param(
        remove("tokenizer.model"), ConfigError, "tokenizer.model' does not exist; fix the path", id="no-tokenizer-file",
    ),
]


@pytest.mark.parametrize(("mutate", "error", "fragment"), TRANSLATION_DATA_CASES)
def test_open_data_refuses_bad_translation_data(tmp_path: Path, mutate: Mutation, error: type, fragment: str) -> None:
    root = make_translation_dir(tmp_path)
    open_data(load_model_spec(root))  # the folder as made is valid
    mutate(root)
    _refused(error, fragment, lambda: open_data(load_model_spec(root)))


def _lines(text: str) -> list[str]:
    return [_ANSI.sub("", ln).rstrip() for ln in text.splitlines() if ln.strip()]


@pytest.fixture(params=["absent", "earlier-bundle"])
def out_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    out = tmp_path / "dist" / "translator-android"
    out.parent.mkdir()
    if request.param == "earlier-bundle":
        make_fake_bundle(out)
    return out


@pytest.mark.parametrize(("mutate", "error", "fragment"), TRANSLATION_DATA_CASES)
def test_build_refuses_bad_translation_data_with_one_line(
    tmp_path: Path, out_dir: Path, mutate: Mutation, error: type, fragment: str
) -> None:
    root = make_translation_dir(tmp_path)
    mutate(root)
    before, existed = snapshot(out_dir), out_dir.exists()
    result = invoke_cli(["build", str(root), "--out", str(out_dir)])
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    (line,) = _lines(result.stderr)  # refused before any stage: no progress lines either
    assert line.startswith("error: ") and fragment in line
    assert out_dir.exists() == existed and snapshot(out_dir) == before
    assert staging_leftovers(out_dir.parent) == []


# --- a tokenizer of another vocabulary: found after export ----------------------------------------------


def _other_vocabulary(extra_words: int) -> Mutation:
    """A valid tokenizer with the same special ids, but more (or fewer) pieces than the model's logits."""

    def run(root: Path) -> None:
        lines = corpus_lines()
        if extra_words > 0:
            lines += [" ".join(f"extra{k}" for k in range(extra_words))] * 3
        else:
            drop = set(SOURCE_WORDS[:-extra_words])
            lines = [" ".join(w for w in ln.split() if w not in drop) for ln in lines]
        (root / "tokenizer.model").write_bytes(train_tokenizer(lines))

    return run


def test_build_with_a_tokenizer_of_another_vocabulary_exits_2_after_export(tmp_path: Path, out_dir: Path) -> None:
    root = make_translation_dir(tmp_path)
    _other_vocabulary(6)(root)
    vocab = Tokenizer(root / "tokenizer.model").vocab_size
    model_vocab = translator_assets().vocab_size
    assert vocab == model_vocab + 6
    before, existed = snapshot(out_dir), out_dir.exists()
    result = invoke_cli(["build", str(root), "--out", str(out_dir)])
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    err = _lines(result.stderr)
    assert err[:3] == ["[1/7] export ...", err[1], "[2/7] calibrate ..."] and " done in " in err[1]
    errors = [ln for ln in err if ln.startswith("error")]
    assert errors == [err[-1]]
    assert err[-1] == (
        f"error: calibrate: tokenizer tokenizer.model has {vocab} pieces but the decoder's 'logits' output has "
        f"{model_vocab}; use the tokenizer the model was trained with"
    )
    assert out_dir.exists() == existed and snapshot(out_dir) == before
    assert staging_leftovers(out_dir.parent) == []


def test_a_smaller_tokenizer_is_refused_too(tmp_path: Path) -> None:
    """Fewer pieces than the logits would never produce the model's top ids: refused the same way."""
    from edgeq.build import BuildOptions, build

    root = make_translation_dir(tmp_path)
    _other_vocabulary(-2)(root)
    # every sentence of the data still tokenizes (unknown words become <unk>)
    vocab = Tokenizer(root / "tokenizer.model").vocab_size
    assert vocab < translator_assets().vocab_size
    with pytest.raises(DataError, match=f"has {vocab} pieces but the decoder's 'logits' output has"):
        build(BuildOptions(model_dir=root, target="android", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert staging_leftovers(tmp_path) == []


def test_calibration_sample_limit_does_not_shorten_the_checked_data(tmp_path: Path) -> None:
    root = make_translation_dir(tmp_path)
    both(edit(data={"calibration_samples": 3}), lines_of("data/eval/source.txt", ["red"] * 8))(root)
    spec = load_model_spec(root)
    calibration, evaluation = open_data(spec)
    assert spec.data.calibration_samples == 3 and evaluation.sources == ("red",) * 8
    assert len(calibration) == 8  # the limit applies when the calibrate stage reads the sentences
