"""Bad model folders as tables of (mutation, error class, message fragment), shared by the config,
build and CLI tests so that every bad input is checked at each layer it passes through.

A mutation edits a valid folder from ``conftest.make_model_dir``. Fragments hold no ``[...]``
text, so they can be looked for in the CLI's output as well as in ``str(error)``.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DELETE, INPUT, N_CALIBRATION, N_EVAL, SHAPE, merge_config, write_config

from edgeq.errors import ConfigError, DataError, ModelError

Mutation = Callable[[Path], None]


def edit(**overrides: Any) -> Mutation:
    """Merge ``overrides`` into the folder's edgeq.toml (see conftest.merge_config)."""

    def run(root: Path) -> None:
        cfg = tomllib.loads((root / "edgeq.toml").read_text(encoding="utf-8"))
        write_config(root, merge_config(cfg, overrides))

    return run


def remove(rel: str) -> Mutation:
    def run(root: Path) -> None:
        p = root / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()

    return run


def write_text(rel: str, text: str) -> Mutation:
    def run(root: Path) -> None:
        (root / rel).write_text(text, encoding="utf-8")

    return run


def write_bytes(rel: str, data: bytes) -> Mutation:
    def run(root: Path) -> None:
        (root / rel).write_bytes(data)

    return run


def save(rel: str, array: Any) -> Mutation:
    def run(root: Path) -> None:
        np.save(root / rel, array)

    return run


def both(*mutations: Mutation) -> Mutation:
    def run(root: Path) -> None:
        for m in mutations:
            m(root)

    return run


def with_row(rel: str, row: int, value: float) -> Mutation:
    """Rewrite an input array with ``value`` in one element of ``row``."""

    def run(root: Path) -> None:
        arr = np.load(root / rel)
        arr[row].flat[5] = value
        np.save(root / rel, arr)

    return run


def _input(**kw: Any) -> dict[str, Any]:
    return {"name": INPUT, "shape": list(SHAPE), "dtype": "float32", "layout": "NCHW", **kw}


def _f32(*shape: int) -> np.ndarray:
    return np.zeros(shape, dtype=np.float32)


# edgeq.toml and the files it names: load_model_spec raises these.
CONFIG_CASES = [
    pytest.param(
        edit(model=DELETE), ConfigError, "missing required key 'model' in the top level", id="no-model-table"
    ),
    pytest.param(
        edit(model={"name": DELETE}), ConfigError, "missing required key 'name'", id="no-model-name"
    ),
    pytest.param(
        edit(model={"format": DELETE}), ConfigError, "missing required key 'format'", id="no-model-format"
    ),
    pytest.param(edit(inputs=DELETE), ConfigError, "[[inputs]] must list at least one input", id="no-inputs"),
    pytest.param(edit(inputs=[]), ConfigError, "must list at least one input", id="empty-inputs"),
    pytest.param(edit(task=DELETE), ConfigError, "missing required key 'task'", id="no-task"),
    pytest.param(edit(data={"eval": DELETE}), ConfigError, "missing required key 'eval'", id="no-data-eval"),
    pytest.param(
        edit(inputs=[{"name": INPUT}]), ConfigError, "inputs[0] ('image') has no shape; give shape = [...] or --input-shape",
        id="no-input-shape"
    ),
    pytest.param(
        edit(model={"wieghts": "weights.safetensors"}),
        ConfigError,
        "unknown key 'wieghts'",
        id="typo-in-model",
    ),
    pytest.param(
        edit(quantisation={"method": "minmax"}),
        ConfigError,
        "unknown key 'quantisation' in the top level",
        id="typo-table",
    ),
    pytest.param(
        edit(inputs=[_input(layuot="NCHW")]), ConfigError, "unknown key 'layuot'", id="typo-in-inputs"
    ),
    pytest.param(
        edit(outputs=[{"name": "logits", "shape": [1, 4]}]),
        ConfigError,
        "unknown key 'shape'",
        id="typo-in-outputs",
    ),
    pytest.param(
        edit(quantization={"methd": "entropy"}), ConfigError, "unknown key 'methd'", id="typo-in-quantization"
    ),
    pytest.param(
        edit(target={"io-dtype": "int8"}), ConfigError, "unknown key 'io-dtype'", id="typo-in-target"
    ),
    pytest.param(edit(model={"name": 3}), ConfigError, "[model].name must be a string, got 3", id="name-not-str"),
    pytest.param(edit(model="tiny"), ConfigError, "model must be a table", id="model-not-table"),
    pytest.param(edit(inputs=[1]), ConfigError, "inputs[0] must be a table", id="input-not-table"),
    pytest.param(
        edit(inputs=[_input(shape="1,3,8,8")]), ConfigError, "inputs[0].shape must be a list", id="shape-str"
    ),
    pytest.param(
        edit(quantization={"percentile": True}), ConfigError, "must be a number, got True", id="bool-number"
    ),
    pytest.param(
        edit(quantization={"per_channel": "yes"}), ConfigError, "per_channel must be true or false", id="str-bool"
    ),
    pytest.param(
        edit(data={"calibration_samples": 2.5}),
        ConfigError,
        "calibration_samples must be a whole number",
        id="float-int",
    ),
    pytest.param(
        edit(model={"format": "tensorflow"}), ConfigError, "expected one of: pytorch, onnx", id="bad-format"
    ),
    pytest.param(
        edit(task={"kind": "segmentation"}),
        ConfigError,
        "expected one of: classification, detection, generic, translation",
        id="bad-task-kind",
    ),
    pytest.param(
        edit(quantization={"method": "kl"}),
        ConfigError,
        "expected one of: minmax, entropy, percentile",
        id="bad-calibration-method",
    ),
    pytest.param(
        edit(inputs=[_input(dtype="float16")]), ConfigError, "expected one of: float32", id="bad-input-dtype"
    ),
    pytest.param(
        edit(target={"io_dtype": "uint8"}), ConfigError, "expected one of: float32, int8", id="bad-io-dtype"
    ),
    pytest.param(
        edit(quantization={"percentile": 100.0}), ConfigError, "percentile must be in", id="percentile-100"
    ),
    pytest.param(
        edit(quantization={"percentile": 50}), ConfigError, "percentile must be in", id="percentile-50"
    ),
    pytest.param(
        edit(gates={"acuracy_drop": 1.0}),
        ConfigError,
        "unknown gate 'acuracy_drop'; known gates: accuracy_drop",
        id="gate-typo",
    ),
    pytest.param(
        edit(gates={"accuracy_drop": "1"}),
        ConfigError,
        "gate 'accuracy_drop' must be a finite number",
        id="gate-str",
    ),
    pytest.param(
        edit(gates={"model_bytes": True}),
        ConfigError,
        "gate 'model_bytes' must be a finite number",
        id="gate-bool",
    ),
    pytest.param(
        edit(gates={"top1_agreement": float("nan")}), ConfigError, "must be a finite number", id="gate-nan"
    ),
    pytest.param(
        edit(gates={"model_bytes": float("inf")}), ConfigError, "must be a finite number", id="gate-inf"
    ),
    pytest.param(
        edit(inputs=[_input(shape=[1, 0, 8, 8])]),
        ConfigError,
        "must be a list of positive integers",
        id="shape-zero",
    ),
    pytest.param(
        edit(inputs=[_input(shape=[-1, 3, 8, 8])]),
        ConfigError,
        "must be a list of positive integers",
        id="shape-negative",
    ),
    pytest.param(
        edit(inputs=[_input(shape=[1, 3.0, 8, 8])]),
        ConfigError,
        "must be a list of positive integers",
        id="shape-float",
    ),
    pytest.param(
        edit(inputs=[_input(shape=[1, "C", 8, 8])]),
        ConfigError,
        "must be a list of positive integers",
        id="shape-str-dim",
    ),
    pytest.param(
        edit(inputs=[_input(shape=[True, 3, 8, 8])]),
        ConfigError,
        "must be a list of positive integers",
        id="shape-bool",
    ),
    pytest.param(  # a scalar input is rank 0: its layout has no letters
        edit(inputs=[_input(shape=[])]), ConfigError, "layout 'NCHW' has 4 letters but shape [] has 0", id="shape-empty"
    ),
    pytest.param(
        edit(inputs=[_input(), {"name": "sr", "value": "16k"}]), ConfigError, "must be a number or true or false or a list",
        id="value-string",
    ),
    pytest.param(
        edit(inputs=[_input(), {"name": "sr", "value": [[1, 2], [3]]}]), ConfigError,
        "must be a number or a rectangular list of numbers", id="value-ragged",
    ),
    pytest.param(
        edit(inputs=[_input(), {"name": "sr", "value": [[["x"]]]}]), ConfigError, "must be numbers (or true/false)",
        id="value-list-of-strings",
    ),
    pytest.param(
        edit(inputs=[_input(), {"name": "sr", "value": 16000, "shape": [1]}]), ConfigError,
        "shape [1] but its value has shape []", id="value-shape-mismatch",
    ),
    pytest.param(
        edit(inputs=[_input(), {"name": "sr", "value": 16000, "layout": "N"}]), ConfigError,
        "is frozen by its value; 'layout' does not apply", id="value-with-layout",
    ),
    pytest.param(
        edit(inputs=[{"name": INPUT, "value": 1.0}]), ConfigError, "every input of inputs is frozen", id="value-all-frozen",
    ),
    pytest.param(
        edit(inputs=[_input(), {"name": "sr", "value": list(range(70000))}]), ConfigError,
        "has more than 65536 numbers", id="value-too-large",
    ),
    pytest.param(
        edit(inputs=[_input(layout="NCH")]),
        ConfigError,
        "layout 'NCH' has 3 letters but shape",
        id="layout-short",
    ),
    pytest.param(
        edit(inputs=[_input(layout="NCHWD")]),
        ConfigError,
        "layout 'NCHWD' has 5 letters but shape",
        id="layout-long",
    ),
    pytest.param(
        edit(inputs=[_input(), _input()]), ConfigError, "input names must be unique", id="duplicate-inputs"
    ),
    pytest.param(
        edit(data={"calibration_samples": 0}),
        ConfigError,
        "calibration_samples must be positive",
        id="calibration-samples-zero",
    ),
    pytest.param(
        edit(model={"class": DELETE}),
        ConfigError,
        "class is required when format = 'pytorch'",
        id="pytorch-no-class",
    ),
    pytest.param(
        edit(model={"weights": DELETE}),
        ConfigError,
        "weights is required when format = 'pytorch'",
        id="pytorch-no-weights",
    ),
    pytest.param(
        edit(task={"output": "probs"}),
        ConfigError,
        "output 'probs' is not one of the",
        id="task-output-unknown",
    ),
    pytest.param(
        edit(outputs=[{"name": "logits"}, {"name": "features"}], task={"output": DELETE}),
        ConfigError,
        "output is required for classification",
        id="task-output-ambiguous",
    ),
    pytest.param(remove("model.py"), ModelError, "model.py' does not exist", id="model-file-missing"),
    pytest.param(
        edit(model={"file": "nets/model.py"}),
        ModelError,
        "does not exist; fix the path",
        id="model-file-wrong",
    ),
    pytest.param(
        remove("weights.safetensors"), ModelError, "weights.safetensors' does not exist", id="weights-missing"
    ),
    pytest.param(remove("labels.txt"), ConfigError, "labels.txt' does not exist", id="labels-file-missing"),
    pytest.param(
        write_text("edgeq.toml", "[model\nname = 'tiny'\n"), ConfigError, "not valid TOML", id="invalid-toml"
    ),
    pytest.param(
        write_text("edgeq.toml", "[model]\nname = 'a'\nname = 'b'\n"),
        ConfigError,
        "not valid TOML",
        id="duplicate-key-toml",
    ),
    pytest.param(
        write_bytes("edgeq.toml", b"\xff\xfe[model]\n"), ConfigError, "not valid TOML", id="not-utf8"
    ),
    pytest.param(remove("edgeq.toml"), ConfigError, "edgeq.toml not found", id="no-edgeq-toml"),
]

# Calibration and evaluation data: edgeq.build.build raises these before any stage runs.
CAL = f"data/calibration/{INPUT}.npy"
EV = f"data/eval/{INPUT}.npy"
LABELS = "data/eval/labels.npy"

DATA_CASES = [
    pytest.param(
        remove("data/calibration"), DataError, "[data].calibration 'data/calibration' does not exist",
        id="calibration-folder-missing",
    ),
    pytest.param(
        both(remove("data/eval"), write_text("data/eval", "not a folder")),
        DataError,
        "is not a folder",
        id="eval-folder-is-file",
    ),
    pytest.param(remove(CAL), DataError, "image.npy missing", id="calibration-npy-missing"),
    pytest.param(
        save("data/eval/extra.npy", _f32(N_EVAL, 3)),
        DataError,
        "extra.npy matches no model input",
        id="unknown-npy",
    ),
    pytest.param(
        save(CAL, _f32(N_CALIBRATION, 3, 8)),
        DataError,
        "has shape [24, 3, 8], input 'image' needs",
        id="wrong-rank",
    ),
    pytest.param(save(EV, _f32(N_EVAL, 3, 8, 9)), DataError, "has shape [32, 3, 8, 9]", id="wrong-shape"),
    pytest.param(
        save(CAL, np.zeros((N_CALIBRATION, *SHAPE[1:]), np.float64)),
        DataError,
        "image.npy is float64",
        id="float64",
    ),
    pytest.param(
        both(edit(inputs=[_input(shape=[2, 3, 8, 8])]), save(CAL, _f32(25, 3, 8, 8))),
        DataError,
        "has 25 rows, not a multiple of the batch size 2",
        id="rows-not-multiple-of-batch",
    ),
    pytest.param(
        both(
            edit(inputs=[_input(), _input(name="mask", shape=[1, 4], layout="NC")]),
            save("data/calibration/mask.npy", _f32(N_CALIBRATION - 1, 4)),
            save("data/eval/mask.npy", _f32(N_EVAL, 4)),
        ),
        DataError,
        "mask.npy has 23 samples but image.npy has 24",
        id="sample-counts-differ",
    ),
    pytest.param(save(CAL, _f32(0, 3, 8, 8)), DataError, "has no samples", id="empty-calibration"),
    pytest.param(
        save(CAL, np.full((N_CALIBRATION, *SHAPE[1:]), 0.5, np.float32)),
        DataError,
        "calibration data: every value of image.npy is 0.5; a constant input gives nothing to calibrate on",
        id="constant-calibration",
    ),
    pytest.param(
        save(CAL, np.zeros((N_CALIBRATION, *SHAPE[1:]), np.float32)),
        DataError,
        "every value of image.npy is 0;",
        id="all-zero-calibration",
    ),
    pytest.param(with_row(EV, 7, np.nan), DataError, "has NaN values (first at row 7)", id="nan"),
    pytest.param(with_row(CAL, 3, np.inf), DataError, "has inf values (first at row 3)", id="inf"),
    pytest.param(
        write_bytes(CAL, b"\x93NUMPY this is not an array"),
        DataError,
        "is not a readable .npy file",
        id="corrupt-npy",
    ),
    pytest.param(write_bytes(EV, b""), DataError, "is not a readable .npy file", id="empty-npy"),
    pytest.param(remove(LABELS), DataError, "labels.npy missing", id="labels-missing"),
    pytest.param(
        save(LABELS, np.zeros(N_EVAL, np.float32)),
        DataError,
        "must be a 1-D integer array, got float32",
        id="labels-float",
    ),
    pytest.param(
        save(LABELS, np.zeros((N_EVAL, 1), np.int64)),
        DataError,
        "must be a 1-D integer array",
        id="labels-2d",
    ),
    pytest.param(
        save(LABELS, np.zeros(N_EVAL - 1, np.int64)),
        DataError,
        "has 31 labels for 32 samples",
        id="labels-short",
    ),
    pytest.param(
        save(LABELS, np.full(N_EVAL, 4, np.int64)),
        DataError,
        "holds class id 4, but labels.txt lists 4 classes",
        id="label-id-out-of-range",
    ),
    pytest.param(
        save(LABELS, np.full(N_EVAL, -1, np.int64)), DataError, "holds class id -1", id="label-id-negative"
    ),
    pytest.param(
        write_text("labels.txt", "\n \n"), DataError, "labels file labels.txt is empty", id="labels-txt-empty"
    ),
]
