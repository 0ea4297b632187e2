"""--junit and --summary (edgeq.ci_reports): what CI systems read, read back with junitparser."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from conftest import CliBuild, invoke_cli
from junitparser import Failure, JUnitXml, Skipped

from edgeq.ci_reports import job_summary, junit_xml, write_job_summary, write_junit


def _cases(xml: bytes, tmp_path: Path) -> list[Any]:
    path = tmp_path / "junit.xml"
    path.write_bytes(xml)
    suites = list(JUnitXml.fromfile(str(path)))
    assert len(suites) == 1
    return list(suites[0])


def _failed(report: dict[str, Any]) -> dict[str, Any]:
    """The tiny build's report with its output_cosine gate on litert failed, a runtime that did not run
    the rung, and a two-rung ladder."""
    report = copy.deepcopy(report)
    gate = next(g for g in report["gates"] if g["name"] == "output_cosine" and g["runtime"] == "litert")
    gate.update(value=0.987, limit=0.99, passed=False, margin=-0.003)
    report["passed"] = False
    report["artifacts"][report["shipped"]]["not_run"] = {"litert-ref": "its kernels \x1b[31mcompute it wrong"}
    report["ladder"] = [{"rung": "int4", "passed": False, "failed": ["output_cosine on litert"], "bytes": 10,
                         "ratio_to_fp32": 0.2, "value": 0.9, "drop": 0.01},
                        {"rung": "int8", "passed": True, "failed": [], "bytes": 20, "ratio_to_fp32": 0.3, "value": 0.9,
                         "drop": 0.0, "shipped": True}]
    return report


def test_one_case_per_gate_runtime_and_artifact(tiny_report: dict[str, Any], tmp_path: Path) -> None:
    cases = _cases(junit_xml(tiny_report), tmp_path)
    gates = tiny_report["gates"]
    assert len(cases) == len(gates) and all(c.is_passed for c in cases)
    names = {(c.classname, c.name) for c in cases}
    assert len(names) == len(gates)  # each gate x runtime x artifact once
    assert ("edgeq.tiny.android.tflite_int8", "accuracy_drop on litert-arm64:cortex-a53") in names
    assert ("edgeq.tiny.android.tflite_int8", "model_bytes") in names


def test_a_failed_gate_says_value_limit_and_margin(tiny_report: dict[str, Any], tmp_path: Path) -> None:
    cases = _cases(junit_xml(_failed(tiny_report)), tmp_path)
    by_name = {c.name: c for c in cases}
    failure = by_name["output_cosine on litert"].result[0]
    assert isinstance(failure, Failure)
    assert failure.message == "0.987 >= 0.99 (cosine) fails, misses by 0.003 cosine"
    assert "FAIL output_cosine on litert: 0.9870 >= 0.9900" in failure.text
    skipped = [c for c in cases if c.result and isinstance(c.result[0], Skipped)]
    runtime_gates = {g["name"] for g in tiny_report["gates"] if g.get("runtime")}
    assert {c.name for c in skipped} == {f"{n} on litert-ref" for n in runtime_gates}
    assert "\x1b" not in skipped[0].result[0].message and "\\x1b[31m" in skipped[0].result[0].message
    ladder = {c.name: c for c in cases if c.classname.endswith(".ladder")}
    assert set(ladder) == {"precision int4", "precision int8"} and ladder["precision int8"].is_passed
    assert ladder["precision int4"].result[0].message == "failed: output_cosine on litert"


def test_the_job_summary_puts_the_failed_gates_first(tiny_report: dict[str, Any], tmp_path: Path) -> None:
    text = job_summary(_failed(tiny_report), tmp_path / "dist" / "x")
    assert text.startswith("### edgeq: tiny for android, int8 - FAILED")
    failed = text.index("**Failed gates**")
    assert failed < text.index("| gate |") and "FAIL output_cosine on litert: 0.9870" in text[failed:]
    rows = [line for line in text.splitlines() if line.startswith("| output_cosine") or line.startswith("| accuracy_drop")]
    assert rows[0].startswith("| output_cosine | tflite_int8 | litert |") and rows[0].endswith("**no** |")
    assert "litert-ref did not run it: its kernels \\x1b[31mcompute it wrong" in text
    assert "| int4 | 10 | 0.200 |" in text and "\x1b" not in text
    write_job_summary(tmp_path / "summary.md", tiny_report, tmp_path)
    write_job_summary(tmp_path / "summary.md", tiny_report, tmp_path)  # appended, as job summaries are
    assert (tmp_path / "summary.md").read_text(encoding="utf-8").count("### edgeq: tiny for android") == 2


def test_the_junit_file_is_replaced_and_a_symlink_is_not_followed(tiny_report: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text("old")
    write_junit(path, tiny_report)
    assert path.read_bytes().startswith(b"<?xml")
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / "link.xml").symlink_to(target)
    with pytest.raises(OSError):
        write_junit(tmp_path / "link.xml", tiny_report)
    assert target.read_text() == "keep"


@pytest.mark.parametrize("option", ["--junit", "--summary"])
def test_a_result_file_in_a_missing_folder_is_refused_before_the_build(tiny_build: CliBuild, tmp_path: Path,
                                                                       option: str) -> None:
    out = tmp_path / "dist" / "x"
    result = invoke_cli(["build", str(tiny_build.model_dir), "--out", str(out), "-r", "litert",
                         option, str(tmp_path / "missing" / "file")])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert f"{option} " in result.stderr and "give a file in an existing folder" in result.stderr
    assert not (tmp_path / "dist").exists()



def test_a_result_file_that_cannot_be_written_is_named(tiny_build: CliBuild, tiny_report: dict[str, Any], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A --junit file that passed the check but cannot be written after the build: exit 2 naming it."""
    import edgeq.build
    import edgeq.ci_reports

    def denied(path: Path, report: dict[str, Any], seconds: Any = None) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(edgeq.build, "build", lambda opts, on_event=None: edgeq.build.BuildOutcome(opts.out, tiny_report))
    monkeypatch.setattr(edgeq.ci_reports, "write_junit", denied)
    result = invoke_cli(["build", str(tiny_build.model_dir), "--out", str(tmp_path / "x"), "--junit", str(tmp_path / "j.xml")])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert "the bundle is written, but" in result.stderr and "j.xml could not be: Permission denied" in result.stderr
