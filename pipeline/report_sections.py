"""Sections of report.md that read one part of the report: the precision ladder, repair's tries, where
the quantization error originates; and the number and table-cell formats the report uses."""

from __future__ import annotations

from typing import Any

from edgeq.precisions import PRECISIONS

__all__ = ["ATTRIBUTION_ROWS", "attribution_lines", "cell", "ladder_lines", "num", "repair_lines"]


def num(x: Any, digits: int = 4) -> str:
    """A value for a table: "-" for None, floats with ``digits`` decimals."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def ladder_lines(report: dict[str, Any]) -> list[str]:
    """--precision auto / all: every rung validated, smallest file first, and which one shipped."""
    rows = report.get("ladder") or []
    if not rows:
        return []
    title = next((r["metric_title"] for r in rows if r.get("metric_title")), "metric")
    lines = ["", "## Precision ladder", "",
             "Every rung the target allows, validated like the shipped one (smallest file first; `auto` stops at the "
             "first that passes every gate). Metric and drop on the target's first runtime; SQNR: the lowest over the "
             "outputs and runtimes; latency: host LiteRT, 1 sample, median of many invokes, against the float32 "
             ".tflite.", "",
             f"| rung | name | bytes | x fp32 | {title} | drop | SQNR dB | latency x fp32 | kernels | gates passed | shipped |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['rung']} | {r['name']} | {r.get('bytes', '-')} | - | - | - | - | - | - | "
                         f"could not run: {cell(r['error'])} | no |")
            continue
        kernels = "; ".join(f"{rt}: {k}" for rt, k in r["kernels"].items())
        kernels += "".join(f"; {rt}: not run ({why})" for rt, why in r.get("not_run", {}).items())
        failed = f" (failed: {', '.join(r['failed'])})" if r["failed"] else ""
        lines.append(f"| {r['rung']} | {r['name']} | {r['bytes']} | {num(r['ratio_to_fp32'], 3)} | {num(r['value'])} | "
                     f"{num(r['drop'])} | {num(r['min_sqnr_db'], 1)} | {num(r['latency_ratio_to_fp32'], 2)} | "
                     f"{cell(kernels)} | {r['gates_passed']} of {r['gates']}{cell(failed)} | "
                     f"{'**yes**' if r.get('shipped') else 'no'} |")
    return lines


ATTRIBUTION_ROWS = 10  # tensors in report.md's table per graph (report.json has every one)


def cell(text: str) -> str:
    """Text for a Markdown table cell: a '|' in a name does not split the row."""
    return text.replace("|", "\\|")


def repair_lines(repair: dict[str, Any]) -> list[str]:
    """What repair tried, the gates after each try, and what the shipped recipe costs."""
    if not repair:
        return []
    lines = ["", "## Repair (16-bit activations where the INT8 error originates)", ""]
    if "skipped" in repair:
        return [*lines, f"Skipped: {repair['skipped']}."]
    before = [f"{g['name']}{' on ' + g['runtime'] if g.get('runtime') else ''} {num(g['value'], 4)} (limit "
              f"{num(g['limit'], 4)})" for g in repair.get("gates_before", []) if not g["passed"]]
    if before:
        lines += [f"The INT8 model as converted failed: {'; '.join(before)}.", ""]
    lines += [f"A gate failed, so edgeq quantized the float32 .tflite again with litert-quantizer: ranges chosen per "
              f"tensor, then 16-bit activations for the ops where the error originates, a few at a time (budget: "
              f"{repair['budget_int16_compute_ops']} of {repair['compute_ops']} compute ops). Each try ran on "
              f"{repair['host_runtime']}.", "",
              "| try | change | 16-bit ops | of them compute ops | bytes | gates failed on the host |",
              "|---|---|---|---|---|---|"]
    for t in repair["tries"]:
        failed = [f"{g['name']} {num(g['value'], 4)} (limit {num(g['limit'], 4)})" for g in t["gates"] if not g["passed"]]
        n16 = sum(len(v) for v in t["int16_ops"].values())
        outcome = f"could not run: {t['error']}" if t.get("error") else "; ".join(failed) or "none: passes"
        lines.append(f"| {t['try']} | {cell(t['change'])} | {n16} | {t['int16_compute_ops']} | {t['bytes'] or '-'} | "
                     f"{cell(outcome)} |")
    lines.append("")
    if repair["chosen"] is None:
        lines.append(f"No try met the gates within the budget; the best was try {repair['best']}. The INT8 model "
                     "ships as the converter wrote it.")
        return lines
    cost = repair["cost"]
    lines += [f"Shipped: try {repair['chosen']} (recipe.json). Ops with 16-bit activations:", ""]
    for graph, names in repair["recipe"]["a16w8"].items():
        lines += [f"- {graph}: {n}" for n in names]
    for graph, names in repair["recipe"].get("float32", {}).items():
        lines += [f"- {graph}: {n} (float32 kernels)" for n in names]
    lines += ["", f"Cost: {cost['bytes']} bytes (all-int8 try 0: {cost['bytes_all_int8']}); {cost['int16_compute_ops']} "
              f"compute op(s) outside int8; {cost['kernels']}; host latency {cost['host_latency_ms']:.3f} ms vs "
              f"{cost['host_latency_ms_all_int8']:.3f} ms all-int8 ({cost['latency_graph']}, median of 20 runs)."]
    return lines


def attribution_lines(attribution: dict[str, Any], tflite: dict[str, Any], plot: str | None) -> list[str]:
    """Where the INT8 error originates: the INT8 ONNX model's tensors, then each quantized .tflite's."""
    if not attribution and not tflite:
        return []
    lines = ["", "## Where the quantization error comes from (calibration samples)", "",
             "channel SQNR: the mean of the SQNRs of a tensor's channels (ONNX: axis 1; .tflite: the last axis, "
             "and axis 1 for tensors of 3 axes or more, the lower). drop: the channel SQNR a node's inputs carry minus "
             "its output's - error that appears at that node, not error carried in. ONNX node: for a .tflite tensor, "
             "the node of the float ONNX model that computes the same values (both float models on one sample).", ""]
    if plot:
        lines += [f"![SQNR along the graph]({plot})", "", f"{plot}: the SQNR of every tensor along the graph, per "
                  "quantized artifact; the least accurate tensor of each is named.", ""]
    titles = {"tflite_int8": "INT8 .tflite as converted vs the float32 .tflite (LiteRT builtin kernels)",
              **{p.key: f"{p.alias} .tflite vs the float32 .tflite (LiteRT builtin kernels)" for p in PRECISIONS
                 if p.key != "tflite_int8"},
              "tflite_repaired": "repaired .tflite vs the float32 .tflite (LiteRT builtin kernels)"}
    for title, by_graph in [("INT8 ONNX vs float ONNX (onnxruntime)", attribution),
                            *((titles.get(k, k), v) for k, v in tflite.items())]:
        if not by_graph:
            continue
        lines += [f"### {title}", ""]
        for graph, rows in by_graph.items():
            if isinstance(rows, dict):
                lines += [f"- {graph}: not measured ({rows.get('error')})", ""]
                continue
            lines += [f"{graph}:", "", "| tensor | op | ONNX node | SQNR dB | channel SQNR dB | drop dB | float range | "
                      "scale |", "|---|---|---|---|---|---|---|---|"]
            for r in rows[:ATTRIBUTION_ROWS]:
                lo, hi = r["float_range"]
                node = r.get("onnx_node") or ({"node": r["node"], "op": r["op"]} if "node" in r else None)
                where = f"{node['node']} ({node['op']})" if node else "-"
                lines.append(f"| {cell(r['tensor'])} | {r['op']} | {cell(where)} | {r['sqnr_db']:.1f} | "
                             f"{r['channel_sqnr_db']:.1f} | {r['drop_db']:.1f} | {lo:.4g}..{hi:.4g} | {num(r['scale'], 6)} |")
            lines.append("")
    return lines
