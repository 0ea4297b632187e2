"""What CI systems read from a build: JUnit XML (``--junit``) and a Markdown job summary (``--summary``).

JUnit: one ``testsuite`` per build; one ``testcase`` per gate, runtime and artifact (the gate's
result: a ``failure`` whose message has the value, the limit and the margin), a ``skipped`` case per
gate for each runtime of the target that did not run the shipped rung (and why), and with
``--precision auto`` / ``all`` one case per rung of the ladder. CI dashboards (GitHub, GitLab,
Jenkins) show each case with its message. Written with the standard library's ElementTree.

The job summary is Markdown for a CI job's page (GitHub's ``$GITHUB_STEP_SUMMARY``, a GitLab
artifact): the verdict, the failed gates first, then every gate, the ladder and the sizes. It is
appended to the file, as job summaries are meant to be, so that several builds of one job add up.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from edgeq.inputs.shown import shown
from edgeq.report import format_gate

__all__ = ["job_summary", "junit_xml", "write_job_summary", "write_junit"]


def _num(x: Any) -> str:
    return "-" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))


def _case_name(g: dict[str, Any]) -> str:
    return f"{g['name']} on {g['runtime']}" if g.get("runtime") else g["name"]


def junit_xml(report: dict[str, Any], seconds: dict[str, float] | None = None) -> bytes:
    """The build's gates as JUnit XML (UTF-8); the suite's time is the sum of the stages' ``seconds``."""
    model, target, rung = report["model"]["name"], report["target"]["name"], report["precision"]["rung"]
    gates = report["gates"]
    shipped = report["artifacts"][report["shipped"]]
    cases: list[ET.Element] = []
    for g in gates:
        case = ET.Element("testcase", classname=f"edgeq.{model}.{target}.{g['artifact']}", name=_case_name(g), time="0")
        if not g["passed"]:
            op = "<=" if g["comparison"] == "max" else ">="
            margin = "" if g["margin"] is None else f", misses by {abs(g['margin']):.4g} {g['unit']}"
            message = f"{_num(g['value'])} {op} {_num(g['limit'])} ({g['unit']}) fails{margin}"
            failure = ET.SubElement(case, "failure", message=message, type="gate")
            failure.text = shown(format_gate(g), limit=2000)  # control characters would make the XML invalid
        cases.append(case)
    runtime_gates = sorted({g["name"] for g in gates if g.get("runtime")})
    for runtime, why in shipped.get("not_run", {}).items():
        for name in runtime_gates:
            case = ET.Element("testcase", classname=f"edgeq.{model}.{target}.{report['shipped']}",
                              name=f"{name} on {runtime}", time="0")
            ET.SubElement(case, "skipped", message=shown(f"{runtime} did not run {rung}: {why}", limit=500))
            cases.append(case)
    for row in report.get("ladder") or []:
        case = ET.Element("testcase", classname=f"edgeq.{model}.{target}.ladder", name=f"precision {row['rung']}", time="0")
        if not row["passed"]:
            why = row.get("error") or "failed: " + ", ".join(row.get("failed", []))
            ET.SubElement(case, "failure", message=shown(why, limit=500), type="ladder")
        cases.append(case)
    failures = sum(1 for c in cases if c.find("failure") is not None)
    skipped = sum(1 for c in cases if c.find("skipped") is not None)
    total = f"{sum((seconds or {}).values()):.3f}"
    suite = ET.Element("testsuite", name=f"edgeq build {model} --target {target} --precision {rung}",
                       tests=str(len(cases)), failures=str(failures), errors="0", skipped=str(skipped), time=total)
    props = ET.SubElement(suite, "properties")
    for key, value in (("model", model), ("target", target), ("precision", rung),
                       ("precision_name", report["precision"]["name"]), ("edgeq_version", report["edgeq_version"]),
                       ("passed", str(report["passed"]).lower())):
        ET.SubElement(props, "property", name=key, value=str(value))
    suite.extend(cases)
    root = ET.Element("testsuites", name="edgeq", tests=str(len(cases)), failures=str(failures), errors="0",
                      skipped=str(skipped), time=total)
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _cell(text: str) -> str:
    return shown(text, limit=300).replace("|", "\\|")


def job_summary(report: dict[str, Any], out: Path, seconds: dict[str, float] | None = None,
                cached: tuple[str, ...] = ()) -> str:
    """The build as Markdown for a CI job's summary page: the failed gates first; the stages' ``seconds``
    and what the stage cache gave back (``cached``) last."""
    model, target = _cell(report["model"]["name"]), _cell(report["target"]["name"])
    rung = report["precision"]
    gates = report["gates"]
    failed = [g for g in gates if not g["passed"]]
    size = report["size"]
    lines = [f"### edgeq: {model} for {target}, {rung['rung']} - {'PASSED' if report['passed'] else 'FAILED'}", "",
             f"{sum(g['passed'] for g in gates)} of {len(gates)} gates passed; {rung['rung']} .tflite ({rung['name']}) "
             f"{size['shipped_tflite_bytes']:,} bytes = {size['shipped_to_float32_ratio']:.3f} x float32; bundle "
             f"`{_cell(str(out))}`.", ""]
    if failed:
        lines += ["**Failed gates**", ""] + [f"- {_cell(format_gate(g))}" for g in failed] + [""]
    lines += ["| gate | artifact | runtime | value | limit | margin | passed |", "|---|---|---|---|---|---|---|"]
    for g in sorted(gates, key=lambda g: g["passed"]):
        op = "<=" if g["comparison"] == "max" else ">="
        lines.append(f"| {g['name']} | {g['artifact']} | {_cell(g.get('runtime') or '-')} | {_num(g['value'])} {g['unit']} | "
                     f"{op} {_num(g['limit'])} | {_num(g['margin'])} | {'yes' if g['passed'] else '**no**'} |")
    for runtime, why in report["artifacts"][report["shipped"]].get("not_run", {}).items():
        lines.append(f"\n{_cell(runtime)} did not run it: {_cell(why)}")
    ladder = report.get("ladder") or []
    if ladder:
        lines += ["", "| rung | bytes | x fp32 | metric | drop | passed | shipped |", "|---|---|---|---|---|---|---|"]
        for r in ladder:
            if r.get("error"):
                lines.append(f"| {r['rung']} | {_num(r.get('bytes'))} | - | - | - | no: {_cell(r['error'])} | no |")
                continue
            lines.append(f"| {r['rung']} | {r['bytes']:,} | {r['ratio_to_fp32']:.3f} | {_num(r['value'])} | {_num(r['drop'])} | "
                         f"{'yes' if r['passed'] else 'no'} | {'**yes**' if r.get('shipped') else 'no'} |")
    if seconds:
        lines += ["", "Stages (s): " + ", ".join(f"{k} {v:.1f}{' (cached)' if k in cached else ''}" for k, v in seconds.items())]
        reused = sorted({c for c in cached if c not in seconds})
        if reused:
            lines.append(f"Validation measurements reused from the stage cache: {', '.join(reused)}.")
    return "\n".join(lines) + "\n\n"


def _write(path: Path, data: bytes, append: bool) -> None:
    """Write (or append) ``data`` to ``path`` without following a symlink at its place."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_junit(path: Path, report: dict[str, Any], seconds: dict[str, float] | None = None) -> None:
    """``--junit FILE``: the JUnit XML, replacing the file."""
    _write(path, junit_xml(report, seconds), append=False)


def write_job_summary(path: Path, report: dict[str, Any], out: Path, seconds: dict[str, float] | None = None,
                      cached: tuple[str, ...] = ()) -> None:
    """``--summary FILE``: the Markdown job summary, appended to the file."""
    _write(path, job_summary(report, out, seconds, cached).encode("utf-8"), append=True)
