"""Coverage set: the kinds of models users bring, built in code (no downloads), each built for android.

    .venv/bin/python bench/model_coverage.py            -> bench/COVERAGE.md, bench/coverage.json
    .venv/bin/python bench/model_coverage.py NAME ...   the rows whose model name contains NAME again

Real architectures with random weights (keras.applications with weights=None) and small models of
the shapes that break converters: a detector with a decode head (boxes and class scores
concatenated, as YOLO-style exports have), a segmentation net with resize / upsampling, an
OCR-style CNN with a per-column sequence head, an LSTM, a transformer encoder block (attention,
LayerNorm, exact GELU, as ViT / BERT-style models have), a model with two inputs; and ONNX files
as production exporters write them (tests/onnx_models.py). Each Keras model is saved as
a .keras file with random calibration and eval data (the eval labels of classifiers are the float
model's own top-1) and built with `edgeq build --target android --runtime litert` in its own
process. The table says whether it converted to a full-integer INT8 .tflite, its agreement with
the float model, the lowest SQNR of its outputs, the INT8 / float32 size ratio and the build time;
or the error edgeq gave.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the ONNX models as production exporters write them

import numpy as np  # noqa: E402
import onnx_models  # noqa: E402

N_CAL, N_EVAL = 32, 32

# One transformer encoder block; %s is its feed-forward layer with the GELU under test.
_TRANSFORMER = textwrap.dedent("""
    inp = keras.Input((16, 32), batch_size=1, name="tokens")
    a = keras.layers.MultiHeadAttention(num_heads=4, key_dim=8)(inp, inp)
    x = keras.layers.LayerNormalization()(inp + a)
    f = %s
    x = keras.layers.LayerNormalization()(x + keras.layers.Dense(32)(f))
    x = keras.layers.GlobalAveragePooling1D()(x)
    out = keras.layers.Dense(6, name="logits")(x)
    model = keras.Model(inp, out)""")

# name -> (python building `model` with keras as `keras`, task kind)
MODELS: dict[str, tuple[str, str]] = {
    "MobileNetV3Small": ("model = keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), weights=None, classes=10, "
                         "include_preprocessing=False)", "classification"),
    "EfficientNetB0": ("model = keras.applications.EfficientNetB0(input_shape=(64, 64, 3), weights=None, classes=10)",
                       "classification"),
    "ResNet50": ("model = keras.applications.ResNet50(input_shape=(64, 64, 3), weights=None, classes=10)", "classification"),
    "detector (boxes + scores head)": (textwrap.dedent("""
        inp = keras.Input((64, 64, 3), batch_size=1, name="image")
        x = inp
        for f in (16, 32, 64):
            x = keras.layers.Conv2D(f, 3, strides=2, padding="same", activation="relu")(x)
        boxes = keras.layers.Reshape((64, 4))(keras.layers.Conv2D(4, 1)(x))
        boxes = keras.layers.Activation("sigmoid")(boxes)
        scores = keras.layers.Reshape((64, 5))(keras.layers.Conv2D(5, 1)(x))
        scores = keras.layers.Activation("sigmoid")(scores)
        out = keras.layers.Concatenate(axis=-1, name="detections")([boxes, scores])
        model = keras.Model(inp, out)"""), "generic"),
    "segmentation (resize / upsample)": (textwrap.dedent("""
        inp = keras.Input((64, 64, 3), batch_size=1, name="image")
        a = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inp)
        b = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(a)
        u = keras.layers.UpSampling2D(2, interpolation="bilinear")(b)
        u = keras.layers.Concatenate()([u, a])
        u = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(u)
        u = keras.layers.Resizing(64, 64, interpolation="bilinear")(u)
        out = keras.layers.Conv2D(3, 1, name="mask")(u)
        model = keras.Model(inp, out)"""), "generic"),
    "OCR (CNN + sequence head)": (textwrap.dedent("""
        inp = keras.Input((32, 128, 1), batch_size=1, name="image")
        x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
        x = keras.layers.MaxPooling2D((2, 2))(x)
        x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D((2, 2))(x)
        x = keras.layers.Permute((2, 1, 3))(x)
        x = keras.layers.Reshape((32, 8 * 32))(x)
        x = keras.layers.Dense(64, activation="relu")(x)
        out = keras.layers.Dense(37, name="char_logits")(x)
        model = keras.Model(inp, out)"""), "generic"),
    "LSTM": (textwrap.dedent("""
        inp = keras.Input((20, 8), batch_size=1, name="sequence")
        x = keras.layers.LSTM(32)(inp)
        out = keras.layers.Dense(5, name="logits")(x)
        model = keras.Model(inp, out)"""), "classification"),
    "LSTM, unrolled (the workaround)": (textwrap.dedent("""
        inp = keras.Input((20, 8), batch_size=1, name="sequence")
        x = keras.layers.LSTM(32, unroll=True)(inp)
        out = keras.layers.Dense(5, name="logits")(x)
        model = keras.Model(inp, out)"""), "classification"),
    "transformer encoder (attention, LayerNorm, GELU)": (
        _TRANSFORMER % 'keras.layers.Dense(64, activation="gelu")(x)', "classification"),
    "transformer encoder, tanh GELU (the workaround)": (
        _TRANSFORMER % "keras.ops.gelu(keras.layers.Dense(64)(x), approximate=True)", "classification"),
    "DBNet-style text detector head (ConvTranspose, sigmoid map)": (textwrap.dedent("""
        inp = keras.Input((64, 64, 3), batch_size=1, name="image")
        a = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inp)
        b = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(a)
        c = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(b)
        u = keras.layers.Conv2DTranspose(32, 2, strides=2, activation="relu")(c)
        u = keras.layers.Concatenate()([u, b])
        u = keras.layers.Conv2DTranspose(16, 2, strides=2, activation="relu")(u)
        u = keras.layers.Conv2DTranspose(1, 2, strides=2)(u)
        out = keras.layers.Activation("sigmoid", name="prob_map")(u)
        model = keras.Model(inp, out)"""), "generic"),
    "transformer encoder, an outlier feature (LayerNorm / softmax inputs)": (textwrap.dedent("""
        inp = keras.Input((16, 32), batch_size=1, name="tokens")
        e = keras.layers.Dense(32, name="embed")(inp)
        a = keras.layers.MultiHeadAttention(num_heads=4, key_dim=8)(e, e)
        x = keras.layers.LayerNormalization()(e + a)
        f = keras.ops.gelu(keras.layers.Dense(64)(x), approximate=True)
        x = keras.layers.LayerNormalization()(x + keras.layers.Dense(32)(f))
        x = keras.layers.GlobalAveragePooling1D()(x)
        out = keras.layers.Dense(6, name="logits")(x)
        model = keras.Model(inp, out)
        w, b = model.get_layer("embed").get_weights()
        w[:, 5] *= 60.0  # one feature 60x the others, as trained transformers have (outlier features)
        model.get_layer("embed").set_weights([w, b])"""), "classification"),
    "two inputs (image + features)": (textwrap.dedent("""
        img = keras.Input((32, 32, 3), batch_size=1, name="image")
        feat = keras.Input((6,), batch_size=1, name="features")
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(img)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Concatenate()([x, keras.layers.Dense(16, activation="relu")(feat)])
        out = keras.layers.Dense(4, name="logits")(x)
        model = keras.Model([img, feat], out)"""), "classification"),
}

MAKE = textwrap.dedent('''
    import os, sys, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, keras
    root, kind = sys.argv[1], sys.argv[2]
    keras.utils.set_random_seed(0)
    %s
    model.save(os.path.join(root, "model.keras"))
    rng = np.random.default_rng(0)
    inputs = []
    for t in model.inputs:
        shape = [1, *t.shape[1:]]
        name = t._keras_history.operation.name  # the InputLayer's name, as edgeq reads it
        inputs.append({"name": name, "shape": shape, "layout": "NHWC" if len(shape) == 4 else None})
    for role, n in (("calibration", %d), ("eval", %d)):
        os.makedirs(os.path.join(root, role))
        feeds = {i["name"]: rng.standard_normal((n, *i["shape"][1:])).astype("float32") for i in inputs}
        for name, arr in feeds.items():
            np.save(os.path.join(root, role, name + ".npy"), arr)
        if role == "eval" and kind == "classification":
            logits = np.concatenate([np.asarray(model([feeds[i["name"]][k:k + 1] for i in inputs] if len(inputs) > 1
                                     else feeds[inputs[0]["name"]][k:k + 1])) for k in range(n)])
            np.save(os.path.join(root, role, "labels.npy"), logits.argmax(1).astype("int64"))
            with open(os.path.join(root, "labels.txt"), "w") as f:
                f.write("\\n".join(f"class{c}" for c in range(logits.shape[1])) + "\\n")
    json.dump({"inputs": inputs, "outputs": list(model.output_names),
               "params": int(model.count_params())}, open(os.path.join(root, "info.json"), "w"))
''')


def _toml(name: str, info: dict[str, Any], kind: str) -> str:
    lines = ["[model]", f'name = "{name}"', 'format = "keras"', 'file = "model.keras"', ""]
    for i in info["inputs"]:
        lines += ["[[inputs]]", f'name = "{i["name"]}"', f"shape = {i['shape']}"]
        if i["layout"]:
            lines.append(f'layout = "{i["layout"]}"')
        lines.append("")
    lines += ["[task]", f'kind = "{kind}"']
    if kind == "classification":
        lines += ['labels = "labels.txt"', f'output = "{info["outputs"][0]}"']
    lines += ["", "[data]", 'calibration = "calibration"', 'eval = "eval"', ""]
    return "\n".join(lines)


def slug(name: str) -> str:
    """A model's folder name: its name's letters and digits, runs of anything else as one '-'."""
    return "-".join(filter(None, "".join(c if c.isalnum() else " " for c in name).split()))


def _folder(work: Path, name: str) -> Path:
    root = work / slug(name)
    root.mkdir()
    return root


def make_folder(name: str, work: Path) -> tuple[Path, str, int]:
    """The model folder of coverage model ``name`` under ``work`` (made in code: Keras in a child process,
    ONNX as production exporters write it, input sizes in edgeq.toml): (folder, task kind, parameters)."""
    root = _folder(work, name)
    if name in onnx_models.CASES:
        case = onnx_models.CASES[name]()
        named = {t["name"] for t in case.inputs}
        case.inputs += [{"name": n, "shape": list(s)} for n, s in case.input_shapes.items() if n not in named]
        onnx_models.write_model_dir(case, root, name="onnx", n_cal=N_CAL, n_eval=N_EVAL)
        return root, case.kind, sum(int(np.prod(t.dims)) for t in case.model.graph.initializer)
    code, kind = MODELS[name]
    subprocess.run([sys.executable, "-c", MAKE % (textwrap.dedent(code).strip(), N_CAL, N_EVAL), str(root), kind],
                   check=True, capture_output=True, text=True, timeout=900)
    info = json.loads((root / "info.json").read_text())
    (root / "edgeq.toml").write_text(_toml(name.split()[0].lower(), info, kind))
    return root, kind, info["params"]


def run_one(name: str, work: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    root, kind, params = make_folder(name, work)
    return _build_row(name, kind, params, root, [], time.perf_counter() - t0)


def _build_row(name: str, kind: str, params: int, root: Path, args: list[str], make_seconds: float) -> dict[str, Any]:
    out = root.with_name(root.name + "-bundle")
    t1 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgeq", "build", str(root), "--target", "android", "--out", str(out),
                           "--runtime", "litert", "--json", *args], capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - t1
    row: dict[str, Any] = {"model": name, "task": kind, "params": params, "exit_code": proc.returncode,
                           "build_seconds": round(seconds, 1), "make_seconds": round(make_seconds, 1)}
    if proc.returncode in (0, 1):
        r = json.loads(proc.stdout)
        shipped = r["artifacts"]["tflite_int8"]
        entry = shipped["runtimes"]["litert"]
        insp = shipped["inspection"]["model"]
        sq = [m["sqnr_db"] for m in entry["outputs"]["model"].values() if m["sqnr_db"] is not None]
        row.update({
            "converted": True,
            "full_int8": insp["int8_compute_ops"] + insp.get("int16_compute_ops", 0) == insp["compute_ops"]
            and not insp["float_output_ops"],
            "float_ops": insp["float_output_ops"],
            "int8_compute_ops": f"{insp['int8_compute_ops']}/{insp['compute_ops']}",
            "float_fallback": shipped.get("float_fallback", {}),
            "agreement": entry.get("task", {}).get("top1_agreement"),
            "cosine": min(m["cosine"] for m in entry["outputs"]["model"].values()),
            "sqnr_db": min(sq) if sq else None,
            "size_ratio": r["size"]["shipped_to_float32_ratio"],
            "gates_failed": [f"{g['name']} ({g['value']:.4g} vs {g['limit']:.4g})" for g in r["gates"] if not g["passed"]],
            "rewrites": [w for g in r["export"]["graphs"].values() for w in g["rewrites"]],
            "top_tensor": _top_tensor(r),
            "repair": _repair_text(r.get("repair", {})),
        })
    else:
        row.update({"converted": False, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:700]})
    return row


def _top_tensor(report: dict[str, Any]) -> str:
    """The attribution's first row for the INT8 .tflite as converted: where the error originates."""
    rows = report.get("attribution_tflite", {}).get("tflite_int8", {}).get("model")
    if not isinstance(rows, list) or not rows:
        return "-"
    top = rows[0]
    name = top["tensor"] if len(top["tensor"]) <= 60 else "..." + top["tensor"][-57:]
    return f"{name} ({top['op']}, {top['channel_sqnr_db']:.1f} dB, -{top['drop_db']:.1f} dB)"


def _repair_text(repair: dict[str, Any]) -> str:
    """Gates before repair, and what repair did (or '-' when every gate passed as converted)."""
    if not repair:
        return "-"
    if "skipped" in repair:
        return f"skipped: {repair['skipped']}"
    before = ", ".join(dict.fromkeys(g["name"] for g in repair.get("gates_before", []) if not g["passed"]))
    if repair["chosen"] is None:
        return f"failed {before}; no try passed ({len(repair['tries'])} tries, best: try {repair['best']})"
    t = repair["tries"][repair["chosen"]]
    n16 = sum(len(v) for v in t["int16_ops"].values())
    return (f"failed {before}; try {repair['chosen']} passes on the host: {n16} op(s) 16-bit "
            f"({t['int16_compute_ops']} of {repair['compute_ops']} compute ops), ranges {t['ranges']}")


def write(rows: list[dict[str, Any]], path: Path, command: str, date: str) -> None:
    ok = sum(1 for r in rows if r.get("converted") and r.get("full_int8"))
    lines = [
        "# Coverage set: models users bring, android target",
        "",
        f"Produced by `{command}` on {date}; one run. Random weights "
        "(keras.applications with weights=None and small models built in code), random calibration and eval data "
        f"({N_CAL} + {N_EVAL} samples), validated on host LiteRT. **{ok} of {len(rows)}** convert to a full-integer "
        "INT8 .tflite "
        "(every op computes in int8; a float32 op would be exit 2 unless allowed).",
        "",
        "Agreement (top-1 with the float model) and SQNR measure quantization error on random data: "
        "untrained weights and noise inputs are a harsh case, so failed accuracy gates are listed, not hidden. "
        "The keras.applications classifiers end in a softmax: with random weights their 10 probabilities are "
        "nearly equal, so the top-1 class flips on tiny errors while the cosine of the outputs stays at 1.0000. "
        "An unrolled LSTM is larger in INT8 than in float32: every time step carries its own quantization "
        "parameters and requantize ops. The transformer with Keras' exact GELU: its Erf has no TFLite kernel "
        "(only a TensorFlow one); with the tanh GELU the same block converts.",
        "",
        "The ONNX rows are files written the way production exporters write them (tests/onnx_models.py, built "
        "with onnx.helper): dimensions with neither value nor name, -1 and 0 sizes, a scalar int64 input frozen "
        "with `value =` that If nodes read, If nodes on the input's shape, a recurrent state in and out, a "
        "ConvTranspose head (TFLite TRANSPOSE_CONV), an old exporter's file (opset 11, IR 6, initializers as "
        "inputs, stale and missing shape declarations), an ONNX LSTM with its state as inputs and outputs. What "
        "export changed in each is in its report.md; the rewritten graph is checked against the file on onnxruntime.",
        "",
        "Repair (on by default): when a gate fails, the gates of the INT8 model as converted and what repair did "
        "(README, Repair); the columns after it are those of the model shipped. Top tensor: where the INT8 .tflite as "
        "converted loses most (the attribution's first row: channel SQNR, drop from its inputs).",
        "",
        "| model | params | converted | int8 compute ops | agreement | min cosine | min SQNR dB | INT8/float32 bytes | "
        "build s | gates failed / error | repair | top tensor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("converted"):
            agree = f"{r['agreement']:.4f}" if r["agreement"] is not None else "-"
            sq = f"{r['sqnr_db']:.1f}" if r["sqnr_db"] is not None else "inf"
            conv = "yes, full INT8" if r["full_int8"] else f"yes, float32 ops: {', '.join(r['float_ops'])}"
            lines.append(f"| {r['model']} | {r['params']} | {conv} | {r['int8_compute_ops']} | {agree} | {r['cosine']:.4f} | "
                         f"{sq} | {r['size_ratio']:.3f} | {r['build_seconds']} | {', '.join(r['gates_failed']) or '-'} | "
                         f"{r.get('repair', '-')} | {r.get('top_tensor', '-')} |")
        else:
            lines.append(f"| {r['model']} | {r['params']} | **no** (exit {r['exit_code']}) | - | - | - | - | - | "
                         f"{r['build_seconds']} | {r['error']} | - | - |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    only = sys.argv[1:]
    names = [n for n in [*MODELS, *onnx_models.CASES] if not only or any(o.lower() in n.lower() for o in only)]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeq-coverage-") as tmp:
        for name in names:
            print(f"{name} ...", flush=True)
            try:
                rows.append(run_one(name, Path(tmp)))
            except subprocess.CalledProcessError as e:
                rows.append({"model": name, "params": "-", "converted": False, "exit_code": e.returncode,
                             "build_seconds": "-", "error": f"building the model in Keras failed: {e.stderr.strip()[-200:]}"})
            print(json.dumps(rows[-1]), flush=True)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if only:  # some rows again: the others stay as the last full run measured them
        old = json.loads((ROOT / "bench" / "coverage.json").read_text(encoding="utf-8"))
        again = {r["model"]: r for r in rows}
        rows = [again.pop(r["model"], r) for r in old["rows"]] + list(again.values())
        date = f"{old['date']}; rows {', '.join(repr(o) for o in only)} again on {date}"
    (ROOT / "bench" / "coverage.json").write_text(json.dumps({"date": date, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    write(rows, ROOT / "bench" / "COVERAGE.md", "make coverage  (.venv/bin/python bench/model_coverage.py)", date)


if __name__ == "__main__":
    main()
