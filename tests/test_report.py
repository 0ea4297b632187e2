"""edgeq.report: the gate lines and report.md."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edgeq.gates import evaluate_gate
from edgeq.report import format_gate, render_markdown


@pytest.mark.parametrize(
    ("gate", "runtime", "line"),
    [
        (
            evaluate_gate("accuracy_drop", 0.25, 1.0),
            "litert",
            "PASS accuracy_drop on litert: 0.2500 <= 1.0000 (points)",
        ),
        (
            evaluate_gate("accuracy_drop", 1.5, 1.0),
            "litert",
            "FAIL accuracy_drop on litert: 1.5000 <= 1.0000 (points), misses by 0.5000 points",
        ),
        (
            evaluate_gate("top1_agreement", 0.9, 0.98),
            None,
            "FAIL top1_agreement: 0.9000 >= 0.9800 (fraction), misses by 0.0800 fraction",
        ),
        (
            evaluate_gate("model_bytes", 4760.0, 100.0),
            None,
            "FAIL model_bytes: 4760 <= 100 (bytes), misses by 4660.0000 bytes",
        ),
        (evaluate_gate("model_bytes", 10.0, 100.0), None, "PASS model_bytes: 10 <= 100 (bytes)"),
        (
            evaluate_gate("output_cosine", 0.95, 0.99),
            "litert",
            "FAIL output_cosine on litert: 0.9500 >= 0.9900 (cosine), misses by 0.0400 cosine",
        ),
        (evaluate_gate("model_bytes", None, 100.0), None, "FAIL model_bytes: - <= 100 (bytes)"),
        (evaluate_gate("int8_compute_ops", None, 1.0), None, "FAIL int8_compute_ops: - >= 1.0000 (fraction)"),
    ],
)
def test_format_gate(gate: dict[str, Any], runtime: str | None, line: str) -> None:
    assert format_gate({**gate, "runtime": runtime}) == line


def test_render_markdown_of_a_shared_build(tiny_report: dict[str, Any]) -> None:
    md = render_markdown(tiny_report)
    assert md.startswith("# edgeq report: tiny for android\n")
    assert "**PASSED** - edgeq 0.1.0, I/O dtype float32, 32 eval samples." in md
    for section in (
        "## Gates",
        "## Reference",
        "## Artifacts",
        "## Size",
        "## INT8 ops",
        "## Quantization (INT8 ONNX)",
    ):
        assert section in md
    assert "Stages (host wall time" not in md and "stage_seconds" not in tiny_report  # no build time: same bytes
    assert md.endswith("\n") and not md.endswith("\n\n")
    assert "| accuracy_drop | tflite_int8 | litert | 0.0000 points | <= 1.0000 | yes | +1.0000 | target |" in md
    assert "3 of 3 compute ops run in int8." in md
    assert md.count("| INT8 .tflite (shipped) |") == 4  # litert, litert-ref, two arm64 profiles
    for section in ("## Runtimes of the shipped model", "## Parity of the shipped model across runtimes",
                    "## Validation cost of the emulated runtimes (host wall time, s)"):
        assert section in md
    assert "| litert-arm64:cortex-a53 | qemu-user -cpu cortex-a53," in md and "Armv8.0-A, no dot product | no |" in md
    assert "| litert-arm64:cortex-a76 | qemu-user -cpu cortex-a76," in md and "with dot product | yes |" in md
    assert "not the latency of a device with that core" in md


def test_render_markdown_of_a_failed_gate(tiny_report: dict[str, Any]) -> None:
    report = copy.deepcopy(tiny_report)
    report["passed"] = False
    report["gates"].append(
        {
            **evaluate_gate("model_bytes", 4760.0, 100.0),
            "artifact": "tflite_int8",
            "runtime": None,
            "source": "command line",
        }
    )
    md = render_markdown(report)
    assert "**FAILED**" in md
    assert (
        "| model_bytes | tflite_int8 | - | 4760 bytes | <= 100 | **no** | **-4660** (misses by 4660 bytes) | command line |"
        in md
    )
