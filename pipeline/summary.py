"""The terminal summary of a build: the artifacts table, the gates, the ladder, repair's tries, the verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeq.inputs.shown import printable, shown
from edgeq.report import format_gate
from edgeq.tasks import task_class

__all__ = ["print_summary"]


def _min_sqnr(entry: dict[str, Any]) -> str:
    """The worst SQNR over every output of every graph ("inf" where outputs are identical)."""
    values = [m for outs in entry["outputs"].values() for m in outs.values()]
    finite = [m["sqnr_db"] for m in values if m["sqnr_db"] is not None]
    if finite:
        return f"{min(finite):.1f}"
    return "inf" if all(m.get("identical") for m in values) else "-"


def print_summary(report: dict[str, Any], out: Path) -> None:
    """Print the build's summary: every artifact on every runtime, the gates, the ladder, the verdict."""
    cols = task_class(report["task"]).summary_columns
    console = Console(highlight=False)
    table = Table(title=f"{shown(report['model']['name'])} -> {shown(report['target']['name'])}")
    for col in ("artifact", "bytes", "runtime", *(c.title for c in cols), "SQNR dB"):
        left = col in ("artifact", "runtime")
        table.add_column(col, justify="left" if left else "right", overflow="fold" if col == "runtime" else "ellipsis")

    def fmt(task: dict[str, Any], key: str, digits: int) -> str:
        return f"{task[key]:.{digits}f}" if key in task else "-"

    ref = report["reference"]
    table.add_row("onnx_float (reference)", str(report["artifacts"]["onnx_float"]["bytes"]), ref["runtime"],
                  *(fmt(ref["metrics"], c.key, c.digits) if c.reference else "-" for c in cols), "-")
    for key, art in report["artifacts"].items():
        for rt, entry in art["runtimes"].items():
            task = entry.get("task", {})
            rt_text = rt.replace(":", ":\n")  # litert-arm64: / cortex-a53 on two lines
            n = entry.get("samples", {})
            if "indices" in n:
                rt_text += f"\n({n['count']} of {n['of']})"  # a seeded subset of the eval samples
            table.add_row(key, str(art["bytes"]), rt_text, *(fmt(task, c.key, c.digits) for c in cols), _min_sqnr(entry))
    console.print(table)
    for g in report["gates"]:
        style = "green" if g["passed"] else "red"
        console.print(f"[{style}]{escape(printable(format_gate(g)))}[/{style}]", soft_wrap=True)
    size, rung = report["size"], report["precision"]["rung"]
    _print_ladder(console, report.get("ladder") or [])
    console.print(f"{rung} .tflite ({report['precision']['name']}) is {size['shipped_to_float32_ratio']:.3f} x the "
                  "float32 .tflite")
    for rt, why in report["artifacts"][report["shipped"]].get("not_run", {}).items():
        console.print(f"{escape(rt)} did not run it: {escape(why)}", soft_wrap=True)
    for graph in report["artifacts"][report["shipped"]].get("float_fallback", {}):
        console.print(f"{escape(shown(graph))}: some ops stayed float32 (no int8 kernel); report.md lists them")
    _print_repair(console, report.get("repair", {}))
    if not report["passed"]:
        for graph, rows in report.get("attribution", {}).items():
            if isinstance(rows, list) and rows:
                top = rows[0]
                console.print(f"INT8 error appears first at {escape(shown(graph))}/{escape(shown(top['tensor']))} "
                              f"({escape(shown(top['op']))}): channel SQNR {top['channel_sqnr_db']:.1f} dB, "
                              f"{top['drop_db']:.1f} dB below its inputs; report.md ranks the others", soft_wrap=True)
    verdict = "[green]PASSED[/green]" if report["passed"] else "[red]FAILED[/red]"
    console.print(f"{verdict}: bundle in {escape(printable(str(out)))} (report.md has the details)", soft_wrap=True)


def _print_repair(console: Console, repair: dict[str, Any]) -> None:
    """One line per try of the repair, then what was shipped."""
    if not repair:
        return
    if "skipped" in repair:
        console.print(f"repair skipped: {escape(printable(repair['skipped']))}", soft_wrap=True)
        return
    for t in repair["tries"]:
        failed = [g for g in t["gates"] if not g["passed"]]
        state = "passes" if t["passed"] else "fails " + ", ".join(dict.fromkeys(g["name"] for g in failed))
        if t.get("error"):
            state = f"could not run ({t['error']})"
        console.print(f"repair try {t['try']}: {escape(printable(shown(t['change'])))}: {escape(printable(shown(state)))} on "
                      f"{escape(repair['host_runtime'])}", soft_wrap=True)
    if repair["chosen"] is not None:
        cost = repair["cost"]
        console.print(f"repaired: try {repair['chosen']} ships, {cost['int16_ops']} op(s) with 16-bit activations "
                      f"({cost['int16_compute_ops']} of {repair['compute_ops']} compute ops; budget "
                      f"{repair['budget_int16_compute_ops']}); recipe.json has the recipe", soft_wrap=True)
    else:
        console.print(f"repair did not meet the gates within the budget ({repair['budget_int16_compute_ops']} compute "
                      f"ops with 16-bit activations); best: try {repair['best']}; the INT8 model ships as converted",
                      soft_wrap=True)


def _print_ladder(console: Console, rows: list[dict[str, Any]]) -> None:
    """--precision auto / all: one line per rung validated, smallest first."""
    for r in rows:
        if r.get("error"):
            state = f"could not run: {r['error']}"
        else:
            value = "-" if r["value"] is None else f"{r['metric_title']} {r['value']:.4g} (drop {r['drop']:.4g})"
            ratio = "-" if r["latency_ratio_to_fp32"] is None else f"{r['latency_ratio_to_fp32']:.2f}"
            state = (f"{r['bytes']} bytes ({r['ratio_to_fp32']:.3f} x fp32), {value}, latency {ratio} x fp32, "
                     f"{'passes' if r['passed'] else 'fails ' + ', '.join(r['failed'])}")
        mark = " <- ships" if r.get("shipped") else ""
        console.print(f"ladder {escape(r['rung'])}: {escape(printable(shown(state)))}{mark}", soft_wrap=True)
