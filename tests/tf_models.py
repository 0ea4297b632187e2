"""Keras and SavedModel model folders made in code, in a child process (TensorFlow stays out of
the test process). The network is NHWC: Conv2D -> GlobalAveragePooling -> Dense(4); the eval
labels are its own top-1, so the android gates pass."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
from conftest import CLASS_NAMES, N_CALIBRATION, N_EVAL, write_config

SHAPE_NHWC = (1, 8, 8, 3)

_SCRIPT = textwrap.dedent('''
    import os, sys, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, keras, tensorflow as tf
    root, kind, canary = sys.argv[1], sys.argv[2], sys.argv[3]
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), batch_size=1, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    if kind == "lambda":
        x = keras.layers.Lambda(lambda t: (open(canary, "w").close(), t)[1], name="sneaky")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, name="logits")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    cal = rng.standard_normal((%(n_cal)d, 8, 8, 3)).astype(np.float32)
    ev = rng.standard_normal((%(n_eval)d, 8, 8, 3)).astype(np.float32)
    labels = np.concatenate([model(ev[i:i + 1]).numpy().argmax(1) for i in range(len(ev))])
    os.makedirs(f"{root}/data/calibration"); os.makedirs(f"{root}/data/eval")
    np.save(f"{root}/data/calibration/image.npy", cal)
    np.save(f"{root}/data/eval/image.npy", ev)
    np.save(f"{root}/data/eval/labels.npy", labels.astype(np.int64))
    if kind == "saved_model":
        class Serve(tf.Module):
            def __init__(self, m):
                self.m = m
            @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 3), tf.float32, name="image")])
            def serve(self, image):
                return {"logits": self.m(image)}
        s = Serve(model)
        tf.saved_model.save(s, f"{root}/saved", signatures={"serving_default": s.serve})
    else:
        model.save(f"{root}/model.keras")
    if os.path.exists(canary):
        os.remove(canary)  # building the Lambda model ran it; the test checks that loading does not
''') % {"n_cal": N_CALIBRATION, "n_eval": N_EVAL}


_BUILT: dict[str, Path] = {}  # kind -> a folder built once per test session, copied for each test


def _built(kind: str) -> Path:
    """The "keras" and "saved_model" folders, made by TensorFlow once per session (about 8 s each)."""
    if kind not in _BUILT:
        cache = Path(tempfile.mkdtemp(prefix="edgeq-tf-models-"))
        atexit.register(shutil.rmtree, cache, True)
        _run_script(cache / kind, kind, cache / "canary")
        _BUILT[kind] = cache / kind
    return _BUILT[kind]


def _run_script(root: Path, kind: str, canary: Path) -> None:
    root.mkdir(parents=True)
    subprocess.run([sys.executable, "-c", _SCRIPT, str(root), kind, str(canary)], check=True, capture_output=True,
                   timeout=300)


def make_tf_dir(tmp_path: Path, kind: str = "keras", canary: Path | None = None, dirname: str = "tfmodel") -> Path:
    """kind: "keras", "lambda" (a Lambda layer that writes ``canary`` when it runs) or "saved_model".
    The Lambda model is made for each call (its canary is its own); the others are copies."""
    root = tmp_path / dirname
    if kind == "lambda":
        _run_script(root, kind, canary or tmp_path / "canary")
    else:
        root.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(_built(kind), root)
    (root / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")
    fmt = "saved_model" if kind == "saved_model" else "keras"
    write_config(root, {
        "model": {"name": "tiny-tf", "format": fmt, "file": "saved" if fmt == "saved_model" else "model.keras"},
        "inputs": [{"name": "image", "shape": list(SHAPE_NHWC), "dtype": "float32", "layout": "NHWC"}],
        "task": {"kind": "classification", "output": "logits", "labels": "labels.txt"},
        "data": {"calibration": "data/calibration", "eval": "data/eval"},
    })
    assert np.load(root / "data" / "eval" / "labels.npy").shape == (N_EVAL,)
    return root
