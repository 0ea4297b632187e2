"""edgeq.config: edgeq.toml and target files, gate overrides and their precedence."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from bad_inputs import CONFIG_CASES, Mutation, edit
from conftest import DELETE, INPUT, SHAPE, make_model_dir

from edgeq.config import (
    available_targets,
    load_model_spec,
    load_target,
    parse_gate_override,
)
from edgeq.errors import ConfigError, DataError, EdgeqError, ModelError
from edgeq.gates import GATES, GateLimit
from edgeq.runtimes import emulators


@pytest.mark.parametrize(("mutate", "error", "fragment"), CONFIG_CASES)
def test_bad_edgeq_toml_is_refused_with_one_line(
    tmp_path: Path, mutate: Mutation, error: type, fragment: str
) -> None:
    root = make_model_dir(tmp_path)
    mutate(root)
    with pytest.raises(error) as info:
        load_model_spec(root)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        pytest.param(
            lambda p: p / "nowhere", "does not exist; pass the folder that holds edgeq.toml", id="missing"
        ),
        pytest.param(
            lambda p: (p / "edgeq.toml").write_text("") or (p / "edgeq.toml"),
            "is not a directory",
            id="is-a-file",
        ),
    ],
)
def test_model_dir_that_is_not_a_folder(tmp_path: Path, make, fragment: str) -> None:
    with pytest.raises(ModelError, match=fragment):
        load_model_spec(make(tmp_path))


def test_valid_spec_has_absolute_paths_and_defaults(tmp_path: Path) -> None:
    root = make_model_dir(
        tmp_path,
        inputs=[{"name": INPUT, "shape": list(SHAPE), "layout": "nchw"}],
        quantization={"method": "minmax"},
    )
    spec = load_model_spec(root)
    assert spec.root == root.resolve()
    assert spec.name == "tiny" and spec.format == "pytorch" and spec.class_name == "TinyNet"
    assert spec.file == root.resolve() / "model.py"
    assert spec.weights == root.resolve() / "weights.safetensors"
    assert spec.init_args == {"channels": 8, "num_classes": 4}
    (inp,) = spec.inputs
    assert (inp.name, inp.shape, inp.dtype, inp.layout, inp.preprocessing) == (
        INPUT,
        SHAPE,
        "float32",
        "NCHW",
        {},
    )
    assert [o.name for o in spec.outputs] == ["logits"]
    assert (spec.task.kind, spec.task.output, spec.task.labels) == (
        "classification",
        "logits",
        root.resolve() / "labels.txt",
    )
    assert spec.data.calibration == root.resolve() / "data" / "calibration"
    assert spec.data.calibration_samples is None
    assert (spec.quantization.method, spec.quantization.percentile, spec.quantization.per_channel) == (
        "minmax",
        99.999,
        True,
    )
    assert spec.gates == {} and spec.io_dtype is None
    assert spec.input(INPUT) is inp


def test_defaults_for_layout_and_task_output(tmp_path: Path) -> None:
    # a 2-D input defaults to layout "NC"; a classifier with one output needs no [task].output
    root = make_model_dir(tmp_path, inputs=[{"name": "features", "shape": [1, 16]}], task={"output": DELETE})
    spec = load_model_spec(root)
    assert spec.inputs[0].layout == "NC"
    assert spec.task.output == "logits"


@pytest.mark.parametrize(
    ("shape", "layout"),
    [([16], "N"), ([1, 16], "NC"), ([1, 3, 16], "NCW"), ([1, 3, 8, 8], "NCHW"), ([1, 3, 4, 8, 8], "NCDHW")],
)
def test_default_layout_is_channels_first(tmp_path: Path, shape: list[int], layout: str) -> None:
    spec = load_model_spec(make_model_dir(tmp_path, inputs=[{"name": INPUT, "shape": shape}]))
    assert spec.inputs[0].layout == layout


def test_onnx_spec_needs_no_class_or_weights_and_reads_gates_and_target(tmp_path: Path) -> None:
    root = make_model_dir(
        tmp_path,
        "onnx",
        gates={"accuracy_drop": 2, "model_bytes": 5e6},
        target={"io_dtype": "int8"},
        quantization={"method": "percentile", "percentile": 99.9, "per_channel": False},
    )
    spec = load_model_spec(root)
    assert spec.format == "onnx" and spec.class_name is None and spec.weights is None
    assert spec.gates == {"accuracy_drop": 2.0, "model_bytes": 5e6}
    assert all(isinstance(v, float) for v in spec.gates.values())
    assert spec.io_dtype == "int8"
    assert (spec.quantization.method, spec.quantization.percentile, spec.quantization.per_channel) == (
        "percentile",
        99.9,
        False,
    )


def test_absolute_data_paths_are_refused(tmp_path: Path) -> None:
    """Every path edgeq.toml names stays in the model folder: an absolute one is refused, naming the key."""
    root = make_model_dir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (root / "data" / "eval").rename(elsewhere)
    edit(data={"eval": str(elsewhere)})(root)
    with pytest.raises(DataError, match=r"\[data\]\.eval '.*elsewhere' is an absolute path, outside the folder"):
        load_model_spec(root)


# --- targets -------------------------------------------------------------------------------


def test_android_target() -> None:
    t = load_target("android")
    assert (t.name, t.format, t.precision, t.io_dtype, t.model_file, t.threads) == (
        "android",
        "tflite",
        "int8",
        "float32",
        "model.tflite",
        1,
    )
    assert t.io_dtypes == ("float32", "int8")
    assert t.runtimes == ("litert", "litert-ref", "litert-arm64:cortex-a53", "litert-arm64:cortex-a76")
    assert emulators(t) == [("litert-arm64:cortex-a53", "arm64"), ("litert-arm64:cortex-a76", "arm64")]
    assert set(t.gates) <= set(GATES)
    core = {"accuracy_drop": 1.0, "top1_agreement": 0.98, "int8_compute_ops": 1.0, "model_bytes": 1e8}
    assert {k: t.gates[k] for k in core} == core
    assert [x.name for x in available_targets()] == ["android", "linux-arm64", "mcu"]


def test_unknown_target() -> None:
    with pytest.raises(ConfigError, match=r"unknown target 'ios'; available targets: android"):
        load_target("ios")


GOOD_TARGET = """\
name = "{name}"
description = "a test target"
format = "tflite"
precision = "int8"
io_dtype = "float32"
io_dtypes = ["float32", "int8"]
runtimes = ["litert"]
[gates]
accuracy_drop = 1.0
[bundle]
model_file = "model.tflite"
"""


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param(
            GOOD_TARGET.replace('name = "{name}"', 'name = "other"'),
            "does not match the file name",
            id="name-mismatch",
        ),
        pytest.param(
            GOOD_TARGET.replace('io_dtypes = ["float32", "int8"]', 'io_dtypes = ["int8"]'),
            "io_dtype 'float32' is not supported",
            id="io-dtype-not-offered",
        ),
        pytest.param(GOOD_TARGET + 'colour = "red"\n', "unknown key 'colour'", id="unknown-key-in-bundle"),
        pytest.param(
            GOOD_TARGET.replace("accuracy_drop", "acc_drop"), "unknown gate 'acc_drop'", id="bad-gate"
        ),
        pytest.param(
            GOOD_TARGET.replace('format = "tflite"', 'format = "coreml"'),
            "expected one of: tflite",
            id="bad-format",
        ),
        pytest.param(GOOD_TARGET.replace("[bundle]", "[bundle"), "not valid TOML", id="invalid-toml"),
        pytest.param(
            GOOD_TARGET.replace('model_file = "model.tflite"', ""),
            "missing required key 'model_file'",
            id="no-model-file",
        ),
    ],
)
def test_bad_target_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, fragment: str) -> None:
    path = tmp_path / "phone.toml"
    path.write_text(text.replace("{name}", "phone"), encoding="utf-8")
    monkeypatch.setattr("edgeq.config.target._target_files", lambda: {"phone": path})
    with pytest.raises(ConfigError) as info:
        load_target("phone")
    assert fragment in str(info.value)
    assert "targets/phone.toml" in str(info.value) or "target 'phone'" in str(info.value)


def test_a_good_custom_target_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "phone.toml"
    path.write_text(GOOD_TARGET.replace("{name}", "phone"), encoding="utf-8")
    monkeypatch.setattr("edgeq.config.target._target_files", lambda: {"phone": path})
    assert load_target("phone").gates == {"accuracy_drop": 1.0}


def test_io_dtype_override_on_target() -> None:
    t = load_target("android")
    assert t.with_io_dtype(None) is t
    assert t.with_io_dtype("int8").io_dtype == "int8"
    with pytest.raises(ConfigError, match="io_dtype 'int16' is not supported"):
        replace(t, io_dtype="int16")


# --- gates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("accuracy_drop=0.5", ("accuracy_drop", 0.5)),
        ("top1_agreement=1", ("top1_agreement", 1.0)),
        (" model_bytes = 1e6", ("model_bytes", 1e6)),
        ("int8_compute_ops=0", ("int8_compute_ops", 0.0)),
        ("accuracy_drop=-2", ("accuracy_drop", -2.0)),
    ],
)
def test_parse_gate_override(text: str, expected: tuple[str, float]) -> None:
    assert parse_gate_override(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("accuracy_drop", "expected NAME=VALUE"),
        ("accuracy_drop:1", "expected NAME=VALUE"),
        ("accuracy_drop=", "'' is not a number"),
        ("accuracy_drop=lots", "'lots' is not a number"),
        ("accuracy_drop=nan", "must be a finite number"),
        ("model_bytes=inf", "must be a finite number"),
        ("speed=1", "unknown gate 'speed'"),
        ("=1", "unknown gate ''"),
    ],
)
def test_parse_gate_override_refuses(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_gate_override(text)
    assert fragment in str(info.value)
    assert isinstance(info.value, EdgeqError)


def test_gate_limits_precedence_target_then_toml_then_command_line() -> None:
    target = load_target("android")
    limits = target.gate_limits({"accuracy_drop": 2.0, "model_bytes": 5e6}, {"model_bytes": 1e6})
    assert [g.name for g in limits] == [n for n in GATES if n in target.gates]  # the table's order
    by_name = {g.name: g for g in limits}
    assert by_name["accuracy_drop"] == GateLimit("accuracy_drop", 2.0, "edgeq.toml")
    assert by_name["model_bytes"] == GateLimit("model_bytes", 1e6, "command line")
    assert by_name["top1_agreement"] == GateLimit("top1_agreement", 0.98, "target")
    assert by_name["int8_compute_ops"] == GateLimit("int8_compute_ops", 1.0, "target")
    assert {g.source for n, g in by_name.items() if n not in ("accuracy_drop", "model_bytes")} == {"target"}
    assert by_name["accuracy_drop"].comparison == "max"
    assert by_name["top1_agreement"].comparison == "min"


def test_gate_limits_only_lists_gates_in_force() -> None:
    target = replace(load_target("android"), gates={})
    assert target.gate_limits({}, {}) == []
    assert target.gate_limits({}, {"top1_agreement": 0.5}) == [
        GateLimit("top1_agreement", 0.5, "command line")
    ]


def test_toml_gates_reach_gate_limits(tmp_path: Path) -> None:
    spec = load_model_spec(make_model_dir(tmp_path, gates={"top1_agreement": 0.9}))
    limits = {g.name: g for g in load_target("android").gate_limits(spec.gates, {})}
    assert limits["top1_agreement"] == GateLimit("top1_agreement", 0.9, "edgeq.toml")
