"""convert stage: read through the kept build folder of the shared ONNX/int8-I/O build and the bundles."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import INPUT, NUM_CLASSES, OUTPUT, SHAPE, ApiBuild, CliBuild, invoke_cli, make_model_dir

from edgeq.config import InputSpec, load_model_spec
from edgeq.errors import ModelError
from edgeq.stages.convert import channels_last_perm, input_perm, io_mapping


@pytest.mark.parametrize(
    ("rank", "perm"),
    [(1, (0,)), (2, (0, 1)), (3, (0, 2, 1)), (4, (0, 2, 3, 1)), (5, (0, 2, 3, 4, 1))],
)
def test_channels_last_perm(rank: int, perm: tuple[int, ...]) -> None:
    assert channels_last_perm(rank) == perm


@pytest.mark.parametrize(
    ("shape", "layout", "perm"),
    [
        ((1, 3, 8, 8), "NCHW", (0, 2, 3, 1)),  # onnx2tf makes channels-first inputs channels-last
        ((1, 8, 8, 3), "NHWC", (0, 1, 2, 3)),  # and keeps declared channels-last ones as they are
        ((1, 3, 16), "NCW", (0, 2, 1)),
        ((2, 1, 128), "DNC", (0, 1, 2)),  # not batch-first (a recurrent state): kept exactly
        ((), "", ()),  # a scalar
        ((1, 16, 3), "NWC", (0, 1, 2)),
        ((1, 16), "NC", (0, 1)),
    ],
)
def test_input_perm_follows_the_declared_layout(
    shape: tuple[int, ...], layout: str, perm: tuple[int, ...]
) -> None:
    assert input_perm(InputSpec("x", shape, "float32", layout)) == perm


def _mapping(build_dir: Path, name: str, model_dir: Path) -> dict:
    spec = load_model_spec(model_dir)
    return io_mapping(build_dir / name, spec.inputs, [OUTPUT], {OUTPUT: [1, NUM_CLASSES]})


def test_convert_writes_both_tflite_files_and_a_log(onnx_int8_build: ApiBuild) -> None:
    keep = onnx_int8_build.keep
    for name in ("model.float32.tflite", "model.int8.tflite"):
        assert (keep / name).read_bytes()[4:8] == b"TFL3", name  # the flatbuffer file identifier
    assert (keep / "model.saved_model" / "saved_model.pb").is_file()
    assert (keep / "model.convert_job.json").is_file()
    assert (keep / "convert.log").is_file()
    conversion = onnx_int8_build.outcome.report["conversion"]
    assert conversion["int8_ops_set"] == "TFLITE_BUILTINS_INT8"
    assert conversion["io_dtype"] == "int8"
    # every op of TinyNet has an int8 kernel: nothing fell back to float
    assert conversion["graphs"] == {"model": {"float_fallback": None, "strategies": []}}
    assert "float_fallback" not in onnx_int8_build.outcome.report["artifacts"]["tflite_int8"]


def test_int8_io_model_takes_quantized_nhwc_input(onnx_int8_build: ApiBuild) -> None:
    meta = _mapping(onnx_int8_build.keep, "model.int8.tflite", onnx_int8_build.model_dir)
    assert meta["signature"] == "serving_default"
    (inp,) = meta["inputs"]
    assert inp["name"] == INPUT and inp["onnx_shape"] == list(SHAPE)
    assert inp["perm"] == [0, 2, 3, 1]
    assert inp["shape"] == [1, 8, 8, 3]
    assert inp["dtype"] == "int8"
    q = inp["quantization"]
    assert len(q["scale"]) == 1 and q["scale"][0] > 0 and len(q["zero_point"]) == 1
    assert -128 <= q["zero_point"][0] <= 127
    (out,) = meta["outputs"]
    assert (out["name"], out["shape"], out["dtype"], out["perm"]) == (
        OUTPUT,
        [1, NUM_CLASSES],
        "int8",
        [0, 1],
    )
    assert out["quantization"] is not None


def test_float32_tflite_keeps_float_io(onnx_int8_build: ApiBuild) -> None:
    meta = _mapping(onnx_int8_build.keep, "model.float32.tflite", onnx_int8_build.model_dir)
    (inp,) = meta["inputs"]
    assert (inp["perm"], inp["dtype"], inp["quantization"]) == ([0, 2, 3, 1], "float32", None)
    assert meta["outputs"][0]["dtype"] == "float32"


def test_float_io_int8_model_takes_float_nhwc_input(tiny_build: CliBuild) -> None:
    meta = _mapping(tiny_build.out, "model.tflite", tiny_build.model_dir)
    (inp,) = meta["inputs"]
    assert (inp["perm"], inp["shape"], inp["dtype"], inp["quantization"]) == (
        [0, 2, 3, 1],
        [1, 8, 8, 3],
        "float32",
        None,
    )
    assert meta["outputs"][0]["dtype"] == "float32"


def test_model_json_tells_an_app_how_to_feed_int8_io(onnx_int8_build: ApiBuild) -> None:
    mj = json.loads((onnx_int8_build.out / "model.json").read_text(encoding="utf-8"))
    assert mj["io_dtype"] == "int8"
    (inp,) = mj["inputs"]
    assert (inp["dtype"], inp["layout"], inp["shape"]) == ("int8", "NHWC", [1, 8, 8, 3])
    assert inp["quantization"]["scale"][0] > 0
    assert mj["outputs"][0]["dtype"] == "int8" and mj["outputs"][0]["quantization"]["scale"][0] > 0


def test_io_mapping_refuses_shapes_that_do_not_correspond(onnx_int8_build: ApiBuild) -> None:
    spec = load_model_spec(onnx_int8_build.model_dir)
    with pytest.raises(ModelError, match="does not correspond to ONNX shape"):
        io_mapping(onnx_int8_build.keep / "model.int8.tflite", spec.inputs, [OUTPUT], {OUTPUT: [1, 5]})
    with pytest.raises(ModelError, match=r"the \.tflite has 1 outputs, the ONNX model 2"):
        io_mapping(
            onnx_int8_build.keep / "model.int8.tflite",
            spec.inputs,
            [OUTPUT, "extra"],
            {OUTPUT: [1, NUM_CLASSES], "extra": [1]},
        )


def test_network_is_blocked_while_converting_and_restored_after() -> None:
    from edgeq.stages._convert_child import NetworkBlocked, _no_network

    connect = socket.socket.connect
    with _no_network():
        with pytest.raises(NetworkBlocked, match="edgeq runs offline"):
            socket.create_connection(("127.0.0.1", 9))
        with socket.socket() as s, pytest.raises(NetworkBlocked):
            s.connect(("127.0.0.1", 9))
    assert socket.socket.connect is connect


def test_int8_tflite_agrees_with_the_float_model(onnx_int8_build: ApiBuild) -> None:
    report = onnx_int8_build.outcome.report
    entry = report["artifacts"]["tflite_int8"]["runtimes"]["litert"]
    assert entry["task"]["top1_agreement"] == 1.0
    assert list(entry["outputs"]) == ["model"]
    assert entry["outputs"]["model"][OUTPUT]["cosine"] > 0.99
    assert np.isfinite(entry["outputs"]["model"][OUTPUT]["sqnr_db"])


# --- the child-process protocol (run_child), with the child stubbed --------------------------------


class _FakeChild:
    """Stands in for subprocess.run: writes the result file and log a child would, returns its exit code."""

    def __init__(self, returncode: int, result: dict | None, log: str = "") -> None:
        self.returncode, self.result, self.log = returncode, result, log
        self.argv: list[str] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> Any:
        import subprocess

        self.argv = argv
        job_path = Path(argv[-1])
        if self.result is not None:
            job_path.with_suffix(".result.json").write_text(json.dumps(self.result), encoding="utf-8")
        kwargs["stdout"].write(self.log.encode())
        return subprocess.CompletedProcess(argv, self.returncode)


def _run_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, child: _FakeChild) -> Any:
    from edgeq import _proc
    from edgeq.stages import convert

    monkeypatch.setattr(_proc.subprocess, "run", child)
    return convert.run_child({"onnx": "x"}, tmp_path / "encoder.convert_job.json", tmp_path / "convert.log")


def test_run_child_returns_the_childs_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    child = _FakeChild(0, {"ok": True, "float_fallback": "SOFTMAX has no int8 kernel"})
    result = _run_child(tmp_path, monkeypatch, child)
    assert result == {"ok": True, "float_fallback": "SOFTMAX has no int8 kernel"}
    assert child.argv[1:] == ["-m", "edgeq.stages._convert_child", str(tmp_path / "encoder.convert_job.json")]
    assert json.loads((tmp_path / "encoder.convert_job.json").read_text()) == {"onnx": "x"}
    assert (tmp_path / "encoder.convert_job.result.json").is_file()  # per graph, next to its job


def test_run_child_reports_the_childs_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    child = _FakeChild(2, {"ok": False, "error": "onnx2tf could not convert the model (it exited with 1)"})
    with pytest.raises(ModelError) as info:
        _run_child(tmp_path, monkeypatch, child)
    assert str(info.value) == (
        "onnx2tf could not convert the model (it exited with 1) "
        "(full log: convert.log in the build folder, kept with --keep-build)"
    )


def test_run_child_reports_a_crash_with_the_last_log_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = "INFO: starting\n\x1b[31mERROR: the graph has a loop\x1b[0m\nINFO: still going\n"
    with pytest.raises(ModelError) as info:
        _run_child(tmp_path, monkeypatch, _FakeChild(-11, None, log))
    assert str(info.value) == "the converter crashed (SIGSEGV) on this model; last error: ERROR: the graph has a loop"


def test_run_child_reports_an_unexpected_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelError) as info:
        _run_child(tmp_path, monkeypatch, _FakeChild(1, None, "just a line\n"))
    assert str(info.value) == "the converter failed (exit 1); last error: just a line"


def test_converter_message_keeps_the_lines_that_name_ops() -> None:
    from edgeq.stages._convert_child import _converter_message

    e = RuntimeError("loc(fused[...]): error: 'tfl.gelu' op is neither a custom op nor a flex op\n"
                     "   some context line\n"
                     "error: failed while converting: 'main'\n"
                     "loc(fused[...]): error: 'tfl.gelu' op is neither a custom op nor a flex op\n")
    msg = _converter_message(e)
    assert msg == ("loc(fused[...]): error: 'tfl.gelu' op is neither a custom op nor a flex op; "
                   "error: failed while converting: 'main'")
    assert "\n" not in msg
    assert _converter_message(ValueError("")) == "ValueError"
    assert len(_converter_message(RuntimeError("error: " + "x" * 2000))) == 600


def test_float_fallback_is_reported_per_graph(tiny_report: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """A graph whose INT8 file kept float ops: report.md says which and why; the summary says where to look."""
    import copy

    from edgeq.report import render_markdown
    from edgeq.summary import print_summary as _summary

    report = copy.deepcopy(tiny_report)
    report["artifacts"]["tflite_int8"]["float_fallback"] = {"model": "'tfl.gelu' op has no int8 kernel"}
    md = render_markdown(report)
    assert "- model: why - the converter has no int8 kernel for them: 'tfl.gelu' op has no int8 kernel" in md
    _summary(report, Path("out"))
    assert "model: some ops stayed float32 (no int8 kernel); report.md lists them" in capsys.readouterr().out


def test_a_converter_that_runs_too_long_is_stopped_with_exit_2(tmp_path: Path) -> None:
    """onnx2tf can retry an op it cannot convert for hours: past --convert-timeout the child is killed,
    the build exits 2 naming the limit and the option, and --out is not written."""
    out = tmp_path / "dist" / "bundle"
    r = invoke_cli(["build", str(make_model_dir(tmp_path, "onnx")), "--out", str(out), "-r", "litert",
                    "--convert-timeout", "1"])
    assert r.exit_code == 2, r.stdout + r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: convert: the converter was stopped after 1 s") and "--convert-timeout SECONDS" in line
    assert not out.exists()
    children = [p for p in Path("/proc").iterdir() if p.name.isdigit() and str(tmp_path).encode() in _cmdline(p)]
    assert children == []  # the converter child was killed, not left running


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("value", ["0", "inf"])
def test_a_convert_timeout_that_is_no_time_is_refused_before_any_work(tmp_path: Path, value: str) -> None:
    r = invoke_cli(["build", str(make_model_dir(tmp_path, "onnx")), "--out", str(tmp_path / "out"),
                    "--convert-timeout", value])
    assert r.exit_code == 2
    assert r.stderr.strip() == f"error: --convert-timeout must be a number of seconds, 1 or more; got {value}"
    assert not (tmp_path / "out").exists()
