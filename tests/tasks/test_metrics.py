"""Task metrics: tensor agreement (cosine, SQNR, errors) and classification counts, streamed per sample."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgeq.tasks import TASKS, ClassificationMetrics, TensorMetrics


def test_identical_outputs() -> None:
    m = TensorMetrics()
    x = np.random.default_rng(0).standard_normal((2, 10)).astype(np.float32)
    m.update(x, x.copy())
    r = m.result()
    assert r["cosine"] == pytest.approx(1.0)
    assert r["sqnr_db"] is None  # infinite; JSON has no infinity
    assert r["max_abs_error"] == 0.0 and r["mean_abs_error"] == 0.0
    assert r["elements"] == 20


def test_known_noise_gives_the_expected_sqnr() -> None:
    ref = np.ones(1000)
    noise = 0.1 * np.where(np.arange(1000) % 2, 1.0, -1.0)  # power 0.01 against a signal of power 1
    m = TensorMetrics()
    m.update(ref, ref + noise)
    r = m.result()
    assert r["sqnr_db"] == pytest.approx(20.0)
    assert r["max_abs_error"] == pytest.approx(0.1)
    assert r["mean_abs_error"] == pytest.approx(0.1)
    assert r["cosine"] == pytest.approx(1000 / math.sqrt(1000 * 1010))


def test_streaming_equals_one_batch() -> None:
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((8, 4))
    art = ref + 0.05 * rng.standard_normal((8, 4))
    whole, streamed = TensorMetrics(), TensorMetrics()
    whole.update(ref, art)
    for k in range(8):
        streamed.update(ref[k], art[k])
    a, b = whole.result(), streamed.result()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key]), key


def test_opposite_outputs_have_cosine_minus_one() -> None:
    m = TensorMetrics()
    m.update(np.array([1.0, 2.0]), np.array([-1.0, -2.0]))
    assert m.result()["cosine"] == pytest.approx(-1.0)
    assert m.result()["sqnr_db"] == pytest.approx(10 * math.log10(5 / 20))


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="output shapes differ"):
        TensorMetrics().update(np.zeros((1, 4)), np.zeros((1, 5)))


def test_no_samples() -> None:
    r = TensorMetrics().result()
    assert (r["cosine"], r["sqnr_db"], r["mean_abs_error"], r["elements"]) == (1.0, None, 0.0, 0)


def test_all_zero_outputs_on_both_sides() -> None:
    m = TensorMetrics()
    m.update(np.zeros(4), np.zeros(4))
    assert (m.result()["cosine"], m.result()["sqnr_db"]) == (1.0, None)


def test_metrics_are_always_json_writable() -> None:
    m = TensorMetrics()
    m.update(np.zeros(4), np.array([0.0, 0.5, 0.0, 0.0]))
    json.dumps(m.result(), allow_nan=False)


def test_classification_counts() -> None:
    m = ClassificationMetrics(num_classes=3)
    ref = np.array([[5.0, 1, 0], [0, 5, 1], [0, 1, 5], [5, 0, 1]])
    art = np.array([[4.0, 1, 0], [0, 1, 5], [0, 1, 5], [0, 5, 1]])  # disagrees with ref on samples 1 and 3
    labels = np.array([0, 1, 2, 1])  # ref is right on 0, 1, 2; art on 0, 2, 3
    for k in range(4):
        m.update(ref[k : k + 1], art[k : k + 1], labels[k : k + 1])
    assert m.result() == {"top1_accuracy": 0.75, "top1_agreement": 0.5, "samples": 4}


def test_classification_batch_and_flat_logits() -> None:
    m = ClassificationMetrics()
    m.update(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([0.0, 1.0, 1.0, 0.0]), np.array([1, 1]))
    assert m.result() == {"top1_accuracy": 0.5, "top1_agreement": 1.0, "samples": 2}


def test_classification_class_count_must_match_labels_file() -> None:
    with pytest.raises(ValueError, match=r"the classifier output has 4 classes, labels\.txt lists 3"):
        ClassificationMetrics(3).update(np.zeros((1, 4)), np.zeros((1, 4)), np.array([0]))


def test_classification_without_samples() -> None:
    assert ClassificationMetrics().result() == {"top1_accuracy": 0.0, "top1_agreement": 0.0, "samples": 0}


def test_task_table() -> None:
    """One registry: every kind edgeq.toml accepts has a task class implementing the protocol, and
    every gate that names tasks names registered ones."""
    from edgeq.config import TASK_KINDS
    from edgeq.context import Task
    from edgeq.gates import GATES

    assert set(TASKS) == set(TASK_KINDS)
    for kind, cls in TASKS.items():
        assert cls.kind == kind
        for name in [m for m in dir(Task) if not m.startswith("_")]:
            assert hasattr(cls, name), (kind, name)
        assert len(cls.parity_columns) == 3 and cls.columns and cls.summary_columns
    assert {k for g in GATES.values() if g.tasks for k in g.tasks} <= set(TASKS)


def test_parity_counts_differences_in_quantization_steps() -> None:
    from edgeq.tasks import ParityMetrics

    m = ParityMetrics(step=0.5, keep=2)
    m.update(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 1.5, 3.5, 3.0]))  # 1 step (rounding), 3 steps
    m.update(np.array([0.0, 0.0]), np.array([-1.5, 0.0]))  # 3 steps
    r = m.result()
    assert (r["max_abs_diff"], r["max_steps"], r["elements_over_one_step"], r["elements"]) == (1.5, 3.0, 2, 6)
    assert r["divergences"] == [{"sample": 0, "element": 2, "steps": 3.0}, {"sample": 1, "element": 0, "steps": 3.0}]


def test_parity_without_a_step_reports_the_absolute_difference_only() -> None:
    from edgeq.tasks import ParityMetrics

    m = ParityMetrics(step=None)
    m.update(np.array([1.0, 2.0]), np.array([1.0, 2.25]))
    r = m.result()
    assert (r["max_abs_diff"], r["max_steps"], r["elements_over_one_step"], r["divergences"]) == (0.25, None, None, [])
