"""edgeq.decode.greedy_decode on a scripted fake encoder and decoder (numpy callables, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.decode import DecodeSpec, greedy_decode

PAD, BOS, EOS = 0, 1, 2
VOCAB = 12
S = 6


def spec(*, target_len: int = 8, takes_source: bool = True) -> DecodeSpec:
    return DecodeSpec(
        source_ids="src", target_ids="tgt", memory="mem", logits="out", decoder_takes_source=takes_source,
        target_len=target_len, bos_id=BOS, eos_id=EOS, pad_id=PAD,
    )


class Fake:
    """An encoder that returns a memory made from the source, and a decoder that "predicts" ``script[t]`` at
    position t (and a louder decoy token at every other position, so that reading the wrong position shows).
    Both record a copy of every feed they were given."""

    def __init__(self, script: list[int], target_len: int = 8) -> None:
        self.script = script
        self.target_len = target_len
        self.encoder_calls: list[dict[str, np.ndarray]] = []
        self.decoder_calls: list[dict[str, np.ndarray]] = []

    def memory_for(self, source_row: np.ndarray) -> np.ndarray:
        return np.repeat(source_row.astype(np.float32)[..., None], 3, axis=-1) * 0.5  # [1, S, 3]

    def encode(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.encoder_calls.append({k: np.array(v) for k, v in feeds.items()})
        return {"mem": self.memory_for(feeds["src"]), "unused": np.zeros(1)}

    def decode(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.decoder_calls.append({k: np.array(v) for k, v in feeds.items()})
        t = len(self.decoder_calls) - 1
        logits = np.zeros((1, self.target_len, VOCAB), dtype=np.float32)
        logits[0, :, VOCAB - 1] = 5.0  # a decoy that wins everywhere except at position t
        logits[0, t, VOCAB - 1] = 0.0
        logits[0, t, self.script[t] if t < len(self.script) else 4] = 1.0
        return {"out": logits}


def source_row(*ids: int) -> np.ndarray:
    row = np.full((1, S), PAD, dtype=np.int32)
    row[0, : len(ids)] = ids
    return row


def run(fake: Fake, ds: DecodeSpec, src: np.ndarray | None = None) -> tuple[list[int], int]:
    return greedy_decode(fake.encode, fake.decode, source_row(5, 6, EOS) if src is None else src, ds)


def test_stops_at_eos_without_returning_it() -> None:
    fake = Fake([7, 8, 9, EOS, 10])
    ids, steps = run(fake, spec())
    assert (ids, steps) == ([7, 8, 9], 4)  # the EOS step counts; nothing after it runs
    assert len(fake.decoder_calls) == 4


def test_eos_first_gives_an_empty_translation_in_one_step() -> None:
    fake = Fake([EOS])
    assert run(fake, spec()) == ([], 1)


@pytest.mark.parametrize("target_len", [2, 5, 8])
def test_respects_target_len_when_no_eos_comes(target_len: int) -> None:
    fake = Fake([3 + (t % 5) for t in range(20)], target_len=target_len)
    ids, steps = run(fake, spec(target_len=target_len))
    # the row holds BOS + target_len - 1 tokens: that many steps, then it is full
    assert steps == target_len - 1 == len(ids) == len(fake.decoder_calls)
    assert ids == [3 + (t % 5) for t in range(target_len - 1)]


def test_target_len_one_decodes_nothing() -> None:
    fake = Fake([5], target_len=1)
    assert run(fake, spec(target_len=1)) == ([], 0)
    assert len(fake.encoder_calls) == 1 and fake.decoder_calls == []


def test_each_step_feeds_bos_the_tokens_so_far_and_pad() -> None:
    fake = Fake([7, 8, 9, EOS])
    run(fake, spec())
    rows = [call["tgt"] for call in fake.decoder_calls]
    assert [r.tolist() for r in rows] == [
        [[BOS, PAD, PAD, PAD, PAD, PAD, PAD, PAD]],
        [[BOS, 7, PAD, PAD, PAD, PAD, PAD, PAD]],
        [[BOS, 7, 8, PAD, PAD, PAD, PAD, PAD]],
        [[BOS, 7, 8, 9, PAD, PAD, PAD, PAD]],
    ]
    assert all(r.dtype == np.int32 and r.shape == (1, 8) for r in rows)


def test_encoder_runs_once_and_its_memory_reaches_every_step() -> None:
    fake = Fake([7, 8, EOS])
    src = source_row(5, 6, 4, EOS)
    run(fake, spec(), src)
    (enc,) = fake.encoder_calls
    assert list(enc) == ["src"]
    np.testing.assert_array_equal(enc["src"], src)
    for call in fake.decoder_calls:
        np.testing.assert_array_equal(call["mem"], fake.memory_for(src))


def test_source_is_fed_to_the_decoder_when_it_takes_it() -> None:
    fake = Fake([7, EOS])
    src = source_row(5, 6, EOS)
    run(fake, spec(takes_source=True), src)
    for call in fake.decoder_calls:
        assert set(call) == {"tgt", "mem", "src"}
        np.testing.assert_array_equal(call["src"], src)


def test_source_is_not_fed_when_the_decoder_does_not_take_it() -> None:
    fake = Fake([7, EOS])
    run(fake, spec(takes_source=False))
    assert all(set(call) == {"tgt", "mem"} for call in fake.decoder_calls)


def test_reads_the_logits_at_the_current_position_only() -> None:
    # the decoy token VOCAB - 1 is the argmax everywhere except at position t: it must never be chosen
    fake = Fake([3, 4, 5, 6, EOS])
    ids, _ = run(fake, spec())
    assert VOCAB - 1 not in ids and ids == [3, 4, 5, 6]


def test_pad_and_bos_predictions_are_ordinary_tokens() -> None:
    # only EOS ends decoding; what an app does with PAD/BOS outputs is up to the tokenizer's decode
    fake = Fake([PAD, BOS, EOS])
    assert run(fake, spec()) == ([PAD, BOS], 3)


def test_callables_get_numpy_inputs_and_results_are_python_ints() -> None:
    fake = Fake([7, EOS])
    ids, steps = run(fake, spec())
    assert all(type(i) is int for i in ids) and type(steps) is int
    assert isinstance(fake.decoder_calls[0]["tgt"], np.ndarray)

