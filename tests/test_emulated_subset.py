"""Emulated runtimes run a seeded subset of the eval samples (--emulated-samples N|all); host runtimes every one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import NUM_CLASSES, OUTPUT, invoke_cli, make_model_dir

from edgeq.artifacts import Artifact
from edgeq.context import Evaluation
from edgeq.execution import FeedSet
from edgeq.gates import GateLimit, evaluate
from edgeq.runtimes import SUBSET_SEED, subsets
from edgeq.tasks.metrics import Parity


class _Rt:
    def __init__(self, background: bool) -> None:
        self.background = background


def test_background_runtimes_get_one_seeded_sorted_subset() -> None:
    runners: Any = {("tflite_int8", "litert"): _Rt(False), ("tflite_int8", "litert-arm64:cortex-a53"): _Rt(True),
                    ("tflite_int8", "litert-arm64:cortex-a76"): _Rt(True)}
    chosen = subsets(runners, 360, 64)
    a53, a76 = chosen[("tflite_int8", "litert-arm64:cortex-a53")], chosen[("tflite_int8", "litert-arm64:cortex-a76")]
    assert chosen[("tflite_int8", "litert")] is None
    assert a53 == a76 and a53 is not None and len(a53) == len(set(a53)) == 64 and list(a53) == sorted(a53)
    assert all(0 <= i < 360 for i in a53)
    assert subsets(runners, 360, 64) == chosen  # the same seed, the same samples
    expected = sorted(np.random.default_rng(SUBSET_SEED).choice(360, size=64, replace=False).tolist())
    assert list(a53) == expected
    assert all(v is None for v in subsets(runners, 64, 64).values())  # no fewer than the set: every one
    assert all(v is None for v in subsets(runners, 360, None).values())  # --emulated-samples all


def test_a_feed_set_records_only_its_subset(tmp_path: Path) -> None:
    feeds = [{"x": np.full((1, 3), k, np.float32)} for k in range(10)]
    fs = FeedSet("model", 10, lambda: iter(feeds))
    files = fs.record(tmp_path, (1, 4, 9))
    assert np.load(files["x"])[:, 0, 0].tolist() == [1.0, 4.0, 9.0]
    assert np.load(fs.record(tmp_path)["x"]).shape == (10, 1, 3)  # the whole set is recorded on its own


def test_evaluation_says_which_samples_a_pair_sees() -> None:
    ev = Evaluation(None, None, {}, lambda f, d: None, "tflite_int8",  # type: ignore[arg-type]
                    {("a", "x"): (0, 2), ("a", "y"): None})
    assert [ev.sees(("a", "x"), k) for k in range(4)] == [True, False, True, False]
    assert all(ev.sees(("a", "y"), k) and ev.sees(("a", "z"), k) for k in range(4))


def test_parity_counts_a_runtime_only_on_the_samples_it_ran(tmp_path: Path) -> None:
    art = Artifact("tflite_int8", tmp_path / "m.tflite", "tflite", "int8", {"outputs": [{"name": "y", "step": 0.1}]})
    parity = Parity(("litert", "arm"), {"model": art}, [("tflite_int8", "litert"), ("tflite_int8", "arm")])
    one, other = {"y": np.array([[1.0, 0.0]])}, {"y": np.array([[0.0, 1.0]])}
    parity.update("model", {("tflite_int8", "litert"): one, ("tflite_int8", "arm"): one}, classify_output="y")
    parity.update("model", {("tflite_int8", "litert"): other}, classify_output="y")  # arm did not run it
    parity.update("model", {("tflite_int8", "arm"): other}, classify_output="y")  # no first runtime: nothing to compare
    result = parity.result()["arm"]
    assert result["top1_agreement"] == 1.0 and result["outputs"]["model"]["y"]["elements"] == 2


def test_a_drop_gate_compares_a_subset_with_the_reference_over_the_same_samples() -> None:
    shipped = {"runtimes": {
        "litert": {"task": {"top1_accuracy": 0.90}},
        "arm": {"task": {"top1_accuracy": 0.95, "reference": {"top1_accuracy": 0.96}}},
    }}
    gates = evaluate([GateLimit("accuracy_drop", 1.0, "target")], "classification", {"top1_accuracy": 0.91}, shipped,
                     "tflite_int8")
    values = {g["runtime"]: g["value"] for g in gates}
    assert values["litert"] == pytest.approx(1.0) and values["arm"] == pytest.approx(1.0)
    # a subset where the artifact loses 2 points against the reference on the same samples fails, although
    # it is above the reference's accuracy over the whole set
    shipped["runtimes"]["arm"]["task"] = {"top1_accuracy": 0.95, "reference": {"top1_accuracy": 0.97}}
    gates = evaluate([GateLimit("accuracy_drop", 1.0, "target")], "classification", {"top1_accuracy": 0.91}, shipped,
                     "tflite_int8")
    arm = next(g for g in gates if g["runtime"] == "arm")
    assert arm["value"] == pytest.approx(2.0) and not arm["passed"]


@pytest.fixture(scope="module")
def subset_build(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny model (32 eval samples) on host LiteRT and an emulated Cortex-A53 running 8 of them."""
    from edgeq.build import BuildOptions, build

    root = tmp_path_factory.mktemp("subset")
    opts = BuildOptions(model_dir=make_model_dir(root), target="android", out=root / "out", emulated_samples=8,
                        runtimes=("litert", "litert-arm64:cortex-a53"))
    return build(opts)


def test_an_emulated_core_runs_the_subset_and_the_report_says_which(subset_build: Any) -> None:
    report = subset_build.report
    runtimes = report["artifacts"]["tflite_int8"]["runtimes"]
    host, arm = runtimes["litert"], runtimes["litert-arm64:cortex-a53"]
    assert host["samples"] == {"count": 32, "of": 32}
    assert arm["samples"]["count"] == 8 and arm["samples"]["of"] == 32 and arm["samples"]["seed"] == SUBSET_SEED
    assert arm["samples"]["indices"] == sorted(np.random.default_rng(SUBSET_SEED).choice(32, 8, replace=False).tolist())
    assert arm["describe"]["validation_seconds"]["wall"] > 0
    assert arm["task"]["reference"]["top1_accuracy"] is not None and "reference" not in host["task"]
    drop = next(g for g in report["gates"] if g["name"] == "accuracy_drop" and g["runtime"] == "litert-arm64:cortex-a53")
    assert drop["value"] == pytest.approx((arm["task"]["reference"]["top1_accuracy"] - arm["task"]["top1_accuracy"]) * 100)
    parity = report["artifacts"]["tflite_int8"]["parity"]["litert-arm64:cortex-a53"]
    assert parity["outputs"]["model"][OUTPUT]["elements"] == 8 * NUM_CLASSES  # 8 samples
    md = (subset_build.out / "report.md").read_text(encoding="utf-8")
    assert "| 8 of 32 (seed 0) |" in md and "ran a seeded subset (--emulated-samples N|all)" in md
    assert subset_build.passed


@pytest.mark.parametrize(("value", "message"), [("0", "1 or more"), ("x", "or all"), ("-3", "or all")])
def test_a_bad_emulated_samples_value_is_one_line(tmp_path: Path, value: str, message: str) -> None:
    result = invoke_cli(["build", str(make_model_dir(tmp_path)), "--emulated-samples", value])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and message in result.stderr


def test_all_means_every_sample(tmp_path: Path, stub_stages: Any) -> None:
    from edgeq.build import BuildOptions, build

    model_dir = make_model_dir(tmp_path)
    build(BuildOptions(model_dir=model_dir, target="android", out=tmp_path / "a", emulated_samples=None))
    assert stub_stages.contexts[-1].subset_samples is None
    result = invoke_cli(["build", str(model_dir), "--out", str(tmp_path / "b"), "--emulated-samples", "all", "--json"])
    assert result.exit_code == 0, result.stderr
    assert stub_stages.contexts[-1].subset_samples is None
    invoke_cli(["build", str(model_dir), "--out", str(tmp_path / "c"), "--json"])
    assert stub_stages.contexts[-1].subset_samples == 64
