"""Repair: 16-bit activations where the INT8 error originates, until the gates pass (edgeq.repair),
and the TFLite side of the attribution that guides it (edgeq.attribution.attribute_tflite)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke_cli, make_context
from tiny_detector import make_detector_dir

from edgeq.attribution import attribute_tflite
from edgeq.mixed_precision import float_io, quantize_mixed

WIDTH = 16
SEED = 0
SIGNATURE = "serving_default"


def _float_mlp(outlier_layer: int | None) -> bytes:
    """A float32 .tflite: four Dense + ReLU layers named layer0..layer3; the outlier layer's weights give
    one output channel values 300x the others'."""
    import tensorflow as tf

    rng = np.random.default_rng(SEED)
    inp = tf.keras.Input((WIDTH,), batch_size=1, name="x")
    x = inp
    for k in range(4):
        dense = tf.keras.layers.Dense(WIDTH, activation="relu", name=f"layer{k}")
        x = dense(x)
        w = rng.normal(0, 1 / np.sqrt(WIDTH), (WIDTH, WIDTH)).astype(np.float32)
        if k == outlier_layer:
            w[:, 3] *= 300.0
        dense.set_weights([w, np.zeros(WIDTH, np.float32)])
    model = tf.keras.Model(inp, x)
    return bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())


def _float_dense(width: int, units: int, std: float) -> bytes:
    """A float32 .tflite of one Dense layer (input "x" [1, width]), seeded normal weights."""
    import tensorflow as tf

    rng = np.random.default_rng(SEED)
    inp = tf.keras.Input((width,), batch_size=1, name="x")
    dense = tf.keras.layers.Dense(units, name="dense")
    model = tf.keras.Model(inp, dense(inp))
    dense.set_weights([rng.normal(0, std, (width, units)).astype(np.float32), np.zeros(units, np.float32)])
    return bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())


def _feeds(n: int = 24) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(SEED + 1)
    return [{"x": rng.normal(0, 1, (1, WIDTH)).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("layer", [1, 2])
def test_the_tflite_layer_with_an_outlier_channel_is_named_first(layer: int) -> None:
    f = _float_mlp(layer)
    q = quantize_mixed(f, SIGNATURE, _feeds())
    rows = attribute_tflite(f, q, SIGNATURE, _feeds())
    assert f"layer{layer}" in rows[0]["tensor"], [(r["tensor"], round(r["drop_db"], 1)) for r in rows[:3]]
    assert rows[0]["drop_db"] > 10 and rows[0]["dtype"] == "int8"
    assert rows[0]["promote"]  # what a repair would give 16-bit activations


def test_sixteen_bit_activations_keep_float_io_and_cut_the_error(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from edgeq.gates import GATES
    from edgeq.tflite_inspect import inspect_tflite

    f = _float_mlp(2)
    feeds = _feeds()
    q8 = quantize_mixed(f, SIGNATURE, feeds)
    top = attribute_tflite(f, q8, SIGNATURE, feeds)[0]
    assert "layer2" in top["promote"][0] and len(top["promote"]) == 2  # its writer and its reader (the output layer)
    q16 = quantize_mixed(f, SIGNATURE, feeds, top["promote"])
    after = {r["tensor"]: r for r in attribute_tflite(f, q16, SIGNATURE, feeds)}[top["tensor"]]
    assert after["dtype"] == "int16" and after["channel_sqnr_db"] > top["channel_sqnr_db"] + 20, (top, after)
    # the inspection and the int8_compute_ops gate count 16x8 compute ops as integer ops, float ones not
    (tmp_path / "q16.tflite").write_bytes(q16)
    (tmp_path / "f.tflite").write_bytes(f)
    insp = inspect_tflite(tmp_path / "q16.tflite")
    assert (insp["compute_ops"], insp["int8_compute_ops"], insp["int16_compute_ops"]) == (4, 2, 2)
    assert insp["non_int8_compute_ops"] == [] and {o["op"] for o in insp["int16_ops"]} == {"FULLY_CONNECTED"}
    share = GATES["int8_compute_ops"].measure
    assert share({}, {"inspection": {"m": insp}}, {}) == 1.0
    assert share({}, {"inspection": {"m": inspect_tflite(tmp_path / "f.tflite")}}, {}) == 0.0
    for model in (q8, q16):
        interp = Interpreter(model_content=model)
        assert interp.get_input_details()[0]["dtype"] == np.float32 and interp.get_output_details()[0]["dtype"] == np.float32
        assert interp.get_signature_list() == Interpreter(model_content=f).get_signature_list()


def test_ranges_are_chosen_per_tensor_by_their_error() -> None:
    """Laplace-distributed inputs with a few values 8x wider (131,072 values in all): min / max spends
    the int8 steps on the rare extremes, and the per-tensor choice clips (an MSE clip or a percentile,
    with less error on the calibration values); every choice is at least as good as min / max, and
    quantize_mixed uses the chosen ranges."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeq.mixed_precision import MIN_GAIN, choose_ranges

    rng = np.random.default_rng(SEED)
    f = _float_dense(4096, 4, 0.02)
    feeds = []
    for _ in range(32):
        x = rng.laplace(0, 1, (1, 4096)).astype(np.float32)
        x[0, :4] *= 8.0
        feeds.append({"x": x})
    chosen = choose_ranges(f, SIGNATURE, feeds)
    x = chosen["serving_default_x:0"]
    widest = max(float(v["x"].max()) for v in feeds) - min(float(v["x"].min()) for v in feeds)
    assert x["method"] != "min/max" and x["max"] - x["min"] < 0.95 * widest, x
    assert x["error"] < (1 - MIN_GAIN) * x["error_minmax"]
    assert all(r["error"] <= r["error_minmax"] and r["min"] <= 0.0 <= r["max"] for r in chosen.values())
    q = quantize_mixed(f, SIGNATURE, feeds, tensor_ranges=chosen)
    scales = {d["name"]: d["quantization_parameters"]["scales"] for d in Interpreter(model_content=q).get_tensor_details()}
    assert scales["serving_default_x:0_quantized_io"][0] == pytest.approx((x["max"] - x["min"]) / 255, rel=0.02)
    assert choose_ranges(f, SIGNATURE, feeds) == chosen  # seeded: a rebuild repeats a repaired model


def test_float_ops_are_left_in_float32_between_int8_ops(tmp_path: Path) -> None:
    from edgeq.tflite_inspect import inspect_tflite

    f = _float_mlp(2)
    feeds = _feeds()
    top = attribute_tflite(f, quantize_mixed(f, SIGNATURE, feeds), SIGNATURE, feeds)[0]
    q = quantize_mixed(f, SIGNATURE, feeds, float_ops=[top["promote"][0]])
    (tmp_path / "q.tflite").write_bytes(q)
    insp = inspect_tflite(tmp_path / "q.tflite")
    assert insp["float_ops"]["FULLY_CONNECTED"]["tensors"] == [top["promote"][0]]
    assert (insp["compute_ops"], insp["int8_compute_ops"]) == (4, 3)
    after = {r["tensor"]: r for r in attribute_tflite(f, q, SIGNATURE, feeds)}[top["promote"][0]]
    assert after["dtype"] == "float32" and after["channel_sqnr_db"] > top["channel_sqnr_db"] + 20


def test_an_origin_before_a_concatenation_takes_the_op_computing_with_it_along() -> None:
    """Two branches 40x apart concatenated, then a Dense: the small branch loses most at the shared
    scale. Promoting its writer and the concatenation alone would requantize the concatenation to 8
    bits for the Dense; the op computing with it goes along, and the output becomes 16-bit and more
    accurate."""
    import tensorflow as tf

    rng = np.random.default_rng(SEED)
    inp = tf.keras.Input((16,), batch_size=1, name="x")
    big = tf.keras.layers.Dense(16, activation="relu", name="big")
    small = tf.keras.layers.Dense(16, activation="relu", name="small")
    head = tf.keras.layers.Dense(8, name="head")
    model = tf.keras.Model(inp, head(tf.keras.layers.Concatenate(name="cat")([big(inp), small(inp)])))
    for layer, scale in ((big, 40.0), (small, 1.0)):
        layer.set_weights([rng.normal(0, 0.25, (16, 16)).astype(np.float32) * scale, np.zeros(16, np.float32)])
    w = rng.normal(0, 1 / 6, (32, 8)).astype(np.float32)
    w[:16] /= 40.0  # every branch counts in the output
    head.set_weights([w, np.zeros(8, np.float32)])
    f = bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    feeds = [{"x": rng.normal(0, 1, (1, 16)).astype(np.float32)} for _ in range(24)]

    def output(rows: list[dict[str, object]]) -> dict[str, object]:
        return next(r for r in rows if r["tensor"] == "StatefulPartitionedCall_1:0_quantized_io")

    before = attribute_tflite(f, quantize_mixed(f, SIGNATURE, feeds), SIGNATURE, feeds)
    top = before[0]
    assert "small" in top["tensor"] and top["drop_db"] > 20, [(r["tensor"], r["drop_db"]) for r in before[:3]]
    assert [n.split("/")[1] if "/" in n else n for n in top["promote"]] == ["small_1", "cat_1", "StatefulPartitionedCall_1:0"]
    after = attribute_tflite(f, quantize_mixed(f, SIGNATURE, feeds, top["promote"]), SIGNATURE, feeds)
    assert output(after)["dtype"] == "int16"
    assert output(after)["channel_sqnr_db"] > output(before)["channel_sqnr_db"] + 2.0  # type: ignore[operator]


def test_float_io_leaves_a_float_model_as_it_is() -> None:
    from ai_edge_litert.interpreter import Interpreter

    f = _float_mlp(None)
    same = float_io(f, f)  # nothing is int8 / int16: no QUANTIZE / DEQUANTIZE added
    assert len(Interpreter(model_content=same)._get_ops_details()) == len(Interpreter(model_content=f)._get_ops_details())


@pytest.fixture(scope="module")
def repaired(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("repair")
    out = root / "dist" / "detector"
    model_dir = make_detector_dir(root, task={"kind": "detection", "output": "output0"})
    # an emulated core too: the repaired model is validated again on every runtime, in folders of its own
    r = invoke_cli(["build", str(model_dir), "--target", "android", "--out", str(out), "-r", "litert",
                    "-r", "litert-arm64:cortex-a53"])
    return out, r


def test_a_detector_whose_scores_die_in_int8_is_repaired(repaired: tuple[Path, object]) -> None:
    """The same detector that fails output_slice_levels and detection_agreement with --no-repair
    (tests/tasks/test_detection.py) passes with the default repair: 16-bit activations for the output's
    concatenation, float32 I/O kept."""
    out, r = repaired
    assert r.exit_code == 0, r.stderr  # type: ignore[attr-defined]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    rep = report["repair"]
    assert rep["tries"][0]["passed"] is False
    assert "output_slice_levels" in {g["name"] for g in rep["tries"][0]["gates"] if not g["passed"]}
    assert {g["name"] for g in rep["gates_before"] if not g["passed"]} == {"detection_agreement", "output_slice_levels"}
    assert {g["name"] for g in report["gates"]} >= {"detection_agreement", "output_slice_levels"}
    chosen = rep["tries"][rep["chosen"]]
    assert chosen["passed"] and chosen["int16_compute_ops"] <= rep["budget_int16_compute_ops"]
    assert all(g["passed"] for g in report["gates"])
    assert {g["runtime"] for g in report["gates"]} >= {"litert", "litert-arm64:cortex-a53"}
    shipped = report["artifacts"]["tflite_int8"]
    assert any(op["op"] == "CONCATENATION" for op in shipped["inspection"]["model"]["int16_ops"])
    recipe = json.loads((out / "recipe.json").read_text(encoding="utf-8"))
    assert recipe["a16w8"] == chosen["int16_ops"] and recipe["try"] == rep["chosen"]
    model_json = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert model_json["inputs"][0]["dtype"] == "float32" and model_json["outputs"][0]["dtype"] == "float32"
    assert model_json["mixed_precision"]["recipe"] == "recipe.json"
    assert "repair try 0:" in r.stdout and "repaired: try" in r.stdout  # type: ignore[attr-defined]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Repair" in md and "host latency" in md


def test_a_repaired_bundle_verifies(repaired: tuple[Path, object]) -> None:
    out, _ = repaired
    r = invoke_cli(["verify", str(out)])
    assert r.exit_code == 0, r.stdout + r.stderr


def test_a_rebuild_gives_the_same_bytes(repaired: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = repaired
    again = tmp_path / "again"
    r = invoke_cli(["build", str(out.parent.parent / "detector"), "--target", "android", "--out", str(again),
                    "-r", "litert"])
    assert r.exit_code == 0, r.stderr
    assert (again / "model.tflite").read_bytes() == (out / "model.tflite").read_bytes()


def test_a_repair_that_cannot_meet_the_gates_exits_1_with_every_try(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """No compute op may get 16-bit activations and the cosine limit is out of reach: exit 1, the
    report lists each try, names the best, and the converter's INT8 model ships. A try that cannot be
    made (the first, here) is listed with its error and the next is tried; with float ops allowed the
    last try keeps the origins of those types in float32."""
    import edgeq.mixed_precision

    real = edgeq.mixed_precision.quantize_mixed
    calls: list[int] = []

    def first_fails(*args: object, **kwargs: object) -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("failed to delegate SPLIT node #16")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(edgeq.mixed_precision, "quantize_mixed", first_fails)
    out = tmp_path / "dist" / "detector"
    model_dir = make_detector_dir(tmp_path)
    toml = model_dir / "edgeq.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + "\n[quantization]\nmax_int16_ops = 0\n"
                    'allow_float_ops = ["FULLY_CONNECTED"]\n', encoding="utf-8")
    r = invoke_cli(["build", str(model_dir), "--target", "android", "--out", str(out), "-r", "litert",
                    "--gate", "output_cosine=0.9999999"])
    assert r.exit_code == 1, r.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    rep = report["repair"]
    tries = rep["tries"]
    assert rep["chosen"] is None and len(tries) >= 3 and rep["best"] in [t["try"] for t in tries[1:]]
    assert all(not t["passed"] and t["int16_compute_ops"] == 0 for t in tries)
    assert tries[0]["error"] == "RuntimeError: failed to delegate SPLIT node #16" and tries[0]["gates"] == []
    assert tries[1]["ranges"] == "per_tensor" and "error" not in tries[1] and tries[1]["gates"]
    assert "float_ops" in tries[-1] and "float32 kernels" in tries[-1]["change"]
    assert not (out / "recipe.json").exists()
    assert "repair did not meet the gates" in r.stdout and "FAIL output_cosine" in r.stdout
    assert "repair try 0:" in r.stdout and "could not run (RuntimeError: failed to delegate SPLIT" in r.stdout
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "No try met the gates" in md and "could not run: RuntimeError" in md


def test_repair_promotes_where_error_appears_before_where_it_was_carried() -> None:
    """A tensor that carries a low SQNR in from upstream (drop 1.7 dB) comes after the one where most
    of it appeared (drop 31.4 dB); a first layer's big drop from its clean input at 40 dB, as
    accurate as 8 bits make it, comes last; drops under 1 dB and rows with nothing to promote are left out."""
    from edgeq.repair import rank_origins

    def row(tensor: str, sqnr: float, drop: float, promote: tuple[str, ...] = ("op",)) -> dict[str, object]:
        return {"tensor": tensor, "channel_sqnr_db": sqnr, "drop_db": drop, "promote": list(promote)}

    rows = {"model": [row("carried", 7.7, 1.7), row("first_layer", 40.0, 80.0), row("appears", 9.4, 31.4),
                      row("tiny", 5.0, 0.5), row("model_input", 3.0, 20.0, ())],
            "decoder": [row("other", 12.0, 10.0)]}
    assert [(g, r["tensor"]) for _, g, _, r in rank_origins(rows)] == [
        ("model", "appears"), ("decoder", "other"), ("model", "carried"), ("model", "first_layer")]


@pytest.mark.parametrize(("io_dtype", "failed", "why"), [
    ("int8", ["output_cosine"], "repair keeps float32 model inputs and outputs; this build's io dtype is int8"),
    ("float32", ["model_bytes", "int8_compute_ops"], "measure the file, which 16-bit activations do not make smaller"),
])
def test_repair_is_skipped_where_it_cannot_help(tmp_path: Path, io_dtype: str, failed: list[str], why: str) -> None:
    """int8 model I/O (the app's contract would change), or only the file's own gates failed: repair
    says why and touches nothing (the terminal line for a skipped repair: the broken repair's test)."""
    from edgeq.repair import repair

    ctx = make_context(make_detector_dir(tmp_path), tmp_path / "work", io_dtype=io_dtype)

    def check(*args: object) -> list[dict[str, object]]:
        raise AssertionError("a skipped repair validates nothing")

    entry = repair(ctx, check, "tflite_int8", failed)
    assert why in entry["skipped"] and set(entry) == {"skipped"}
    assert not (ctx.build_dir / "repair").exists()


def test_max_int16_ops_must_be_a_count(tmp_path: Path) -> None:
    model_dir = make_detector_dir(tmp_path)
    toml = model_dir / "edgeq.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + "\n[quantization]\nmax_int16_ops = -1\n", encoding="utf-8")
    r = invoke_cli(["build", str(model_dir), "--target", "android", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "max_int16_ops" in r.stderr, r.stderr


def test_weights_litert_quantizer_stores_after_the_flatbuffer_survive_float_io() -> None:
    """litert-quantizer writes a model with 256 KB of weights or more with its buffers after the
    flatbuffer, found by offset; float_io must carry them over (else LiteRT refuses the file)."""
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(SEED)
    f = _float_dense(640, 640, 0.05)
    feeds = [{"x": rng.normal(0, 1, (1, 640)).astype(np.float32)} for _ in range(8)]
    q = quantize_mixed(f, SIGNATURE, feeds)
    outs = []
    for m in (f, q):
        runner = Interpreter(model_content=m).get_signature_runner(SIGNATURE)
        outs.append(next(iter(runner(**feeds[0]).values())).ravel())
    cosine = float(outs[0] @ outs[1] / np.linalg.norm(outs[0]) / np.linalg.norm(outs[1]))
    assert cosine > 0.99 and len(q) > 640 * 640  # the int8 weights are in the file


def test_a_repair_that_breaks_ships_the_model_as_converted_with_exit_1(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """No try can be made (litert-quantizer fails every time): repair fails with the first try's error,
    the report says so, and the converter's model ships with exit 1."""
    import edgeq.mixed_precision

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("the quantizer fell over")

    monkeypatch.setattr(edgeq.mixed_precision, "quantize_mixed", broken)
    out = tmp_path / "dist" / "detector"
    r = invoke_cli(["build", str(make_detector_dir(tmp_path)), "--target", "android", "--out", str(out), "-r", "litert"])
    assert r.exit_code == 1, r.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["repair"]["skipped"] == ("repair failed: RuntimeError: no try could be made and run "
                                           "(RuntimeError: the quantizer fell over)")
    assert [g["name"] for g in report["gates"] if not g["passed"]] == ["output_slice_levels"]
    assert "repair skipped: repair failed" in r.stdout and not (out / "recipe.json").exists()


def test_an_unrolled_lstm_is_quantized_and_attributed() -> None:
    """An unrolled Keras LSTM leaves tensors LiteRT keeps no data for: litert-quantizer's calibration
    that reads every tensor fails on them ("Tensor data is null"), the one that reads what ops write
    does not; its ops come with several outputs each."""
    import tensorflow as tf

    inp = tf.keras.Input((20, 8), batch_size=1, name="sequence")
    model = tf.keras.Model(inp, tf.keras.layers.Dense(5)(tf.keras.layers.LSTM(32, unroll=True)(inp)))
    f = bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    rng = np.random.default_rng(SEED)
    feeds = [{"sequence": rng.standard_normal((1, 20, 8)).astype(np.float32)} for _ in range(8)]
    rows = attribute_tflite(f, quantize_mixed(f, SIGNATURE, feeds), SIGNATURE, feeds)
    assert rows and all(r["promote"] for r in rows[:5])
