"""report.json and report.md: every metric, every gate, every runtime, from the stages' results."""

from __future__ import annotations

import re
from typing import Any

from edgeq import __version__
from edgeq.config import ModelSpec, TargetSpec
from edgeq.inputs.shown import shown
from edgeq.results import ConvertResult, ExportResult, QuantizeResult, ValidationResult
from edgeq.tasks import task_class

__all__ = ["build_report", "format_gate", "render_markdown"]

_ARTIFACT_TITLES = {
    "onnx_float": "float ONNX (reference)",
    "onnx_int8": "INT8 ONNX (QDQ)",
    "tflite_float32": "float32 .tflite",
    "tflite_int8": "INT8 .tflite (shipped)",
}


def build_report(spec: ModelSpec, target: TargetSpec, export: ExportResult, quantize: QuantizeResult,
                 convert: ConvertResult, validation: ValidationResult, timings: dict[str, float]) -> dict[str, Any]:
    """report.json: the stages' results and the gates, for a model built for a target."""
    arts = dict(validation.artifacts)
    f32 = arts["tflite_float32"]["bytes"]
    i8 = arts["tflite_int8"]["bytes"]
    return {
        "edgeq_version": __version__,
        "passed": validation.passed,
        "model": {"name": spec.name, "format": spec.format, "source_sha256": export.source_sha256},
        "target": {"name": target.name, "io_dtype": target.io_dtype, "runtimes": list(target.runtimes),
                   "threads": target.threads},
        "task": spec.task.kind,
        "gates": [dict(g) for g in validation.gates],
        "reference": dict(validation.reference),
        "artifacts": arts,
        "size": {
            "float32_tflite_bytes": f32,
            "int8_tflite_bytes": i8,
            "int8_to_float32_ratio": i8 / f32 if f32 else None,
            "int8_tflite_breakdown": _merged_breakdown(arts["tflite_int8"]["inspection"]),
        },
        "export": export.facts(),
        "quantization": quantize.facts(),
        "conversion": convert.facts(),
        "attribution": dict(validation.attribution),
        "repair": dict(validation.repair),
        "attribution_tflite": dict(validation.attribution_tflite),
        # Host wall time of each stage: the only field that differs between two identical builds.
        "stage_seconds": {k: round(s, 3) for k, s in timings.items()},
    }


def _merged_breakdown(inspection: dict[str, Any]) -> dict[str, int]:
    """Where the bytes of all the INT8 .tflite files go, summed over graphs."""
    total: dict[str, int] = {}
    for insp in inspection.values():
        for part, b in insp["size_breakdown"].items():
            total[part] = total.get(part, 0) + b
    return total


def _num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def format_gate(g: dict[str, Any]) -> str:
    """One gate as a line of text: PASS or FAIL, its value against its limit, and how far a failure misses."""
    op = "<=" if g["comparison"] == "max" else ">="
    where = f" on {g['runtime']}" if g.get("runtime") else ""
    value = _num(g["value"]) if g["unit"] != "bytes" else _num(int(g["value"]) if g["value"] is not None else None)
    limit = _num(g["limit"]) if g["unit"] != "bytes" else str(int(g["limit"]))
    status = "PASS" if g["passed"] else "FAIL"
    by = ""
    if not g["passed"] and g["margin"] is not None:
        by = f", misses by {_num(abs(g['margin']))} {g['unit']}"
    why = f" - {g['detail']}" if g.get("detail") else ""
    return f"{status} {g['name']}{where}: {value} {op} {limit} ({g['unit']}){by}{why}"


def _margin(g: dict[str, Any]) -> str:
    """How far inside the limit (+) or outside it (-) the value is, in the gate's unit."""
    if g["margin"] is None:
        return "-"
    m = g["margin"]
    text = f"{int(m):+d}" if g["unit"] == "bytes" else f"{m:+.4f}"
    return text if g["passed"] else f"**{text}** (misses by {abs(m):.4g} {g['unit']})"


def _runtimes_section(report: dict[str, Any]) -> list[str]:
    """Where each runtime of the shipped model ran: host or emulated core, kernels, versions."""
    shipped = report["artifacts"]["tflite_int8"]["runtimes"]
    lines = ["", "## Runtimes of the shipped model", "",
             "| runtime | runs on | CPU profile | dot product | kernels | LiteRT |", "|---|---|---|---|---|---|"]
    for rt, entry in shipped.items():
        d = entry["describe"]
        if d.get("emulated"):
            g = d.get("guest", {})
            where = f"qemu-user -cpu {d['qemu_cpu']}, aarch64 Python {g.get('python')}, numpy {g.get('numpy')}"
            dot = {True: "yes", False: "no"}.get(g.get("dot_product"), "-")
            lines.append(f"| {rt} | {where} | {d['profile']}: {d['cpu']} | {dot} | {d['kernels']} | {d.get('version')} |")
        else:
            lines.append(f"| {rt} | host | - | - | {d.get('kernels', '-')} | {d.get('version')} |")
    return lines


def _parity_section(report: dict[str, Any]) -> list[str]:
    """The shipped model, runtime x metric: task metric, agreement with the float reference, and the
    distance to the first runtime in quantization steps; then every divergence over one step."""
    art = report["artifacts"]["tflite_int8"]
    parity = art.get("parity", {})
    if not parity:
        return []
    metric, agree, diff = task_class(report["task"]).parity_columns
    first = next(iter(parity.values()))["vs"]
    outputs = [(g, o) for g, outs in next(iter(parity.values()))["outputs"].items() for o in outs]
    head = ["runtime", metric.title, agree.title, f"{diff.title} vs {first}"]
    head += [f"{g}/{o}: max steps (> 1 step)" for g, o in outputs]
    lines = ["", "## Parity of the shipped model across runtimes", "",
             f"Differences from {first} in quantization steps of each output (the int8 scale behind it); "
             "kernels that compute the same int8 arithmetic differ by rounding, at most one step.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rt, entry in art["runtimes"].items():
        task = entry.get("task", {})
        row = [rt, _num(task.get(metric.key), metric.digits), _num(task.get(agree.key), agree.digits)]
        p = parity.get(rt)
        if p is None:
            row += ["(reference)"] + ["-"] * len(outputs)
        else:
            row.append(_num(p.get(diff.key), diff.digits))
            for g, o in outputs:
                m = p["outputs"][g][o]
                row.append(f"{_num(m['max_steps'], 2)} ({_num(m['elements_over_one_step'])} of {m['elements']})")
        lines.append("| " + " | ".join(row) + " |")
    listed = [(rt, g, o, d) for rt, p in parity.items() for g, outs in p["outputs"].items()
              for o, m in outs.items() for d in m["divergences"]]
    if listed:
        lines += ["", "Divergences larger than one step (first 10 per runtime and output):", ""]
        lines += [f"- {rt}: {g}/{o} sample {d['sample']} element {d['element']}: {d['steps']:.2f} steps"
                  for rt, g, o, d in listed]
    else:
        lines += ["", "No element of any output differs by more than one step."]
    return lines


def _emulation_cost_section(report: dict[str, Any]) -> list[str]:
    """Wall time of the emulated runtimes: what validating under emulation cost on this host."""
    rows = [(rt, e["describe"]) for rt, e in report["artifacts"]["tflite_int8"]["runtimes"].items()
            if e["describe"].get("emulated")]
    if not rows:
        return []
    lines = ["", "## Validation cost of the emulated runtimes (host wall time, s)", "",
             "Time under qemu on this host's CPU; not the latency of a device with that core.", "",
             "| runtime | wall | start-up | running samples | decoding |", "|---|---|---|---|---|"]
    for rt, d in rows:
        c = d["validation_seconds"]
        running = sum(v for k, v in c.items() if k.startswith("run_"))
        lines.append(f"| {rt} | {_num(c.get('wall'), 1)} | {_num(c.get('startup'), 1)} | {running:.1f} | "
                     f"{_num(c.get('decode'), 1)} |")
    return lines


def _as_text(node: Any) -> Any:
    """The report with every string - names from edgeq.toml, the model and file names among them -
    rendered as one line of text (edgeq.inputs.shown): no escape sequence or forged line in report.md."""
    if isinstance(node, str):
        return shown(node, limit=MAX_REPORT_TEXT)
    if isinstance(node, dict):
        return {_as_text(k) if isinstance(k, str) else k: _as_text(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_as_text(v) for v in node]
    return node


MAX_REPORT_TEXT = 2000  # characters of one string in report.md


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: the report as Markdown (gates, metrics, artifacts, runtimes, size, INT8 ops, stages)."""
    report = _as_text(report)
    lines = [
        f"# edgeq report: {report['model']['name']} for {report['target']['name']}",
        "",
        f"**{'PASSED' if report['passed'] else 'FAILED'}** - edgeq {report['edgeq_version']}, "
        f"I/O dtype {report['target']['io_dtype']}, {report['reference']['samples']} eval samples.",
        "",
        "## Gates",
        "",
        "| gate | artifact | runtime | value | limit | passed | margin | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in report["gates"]:
        op = "<=" if g["comparison"] == "max" else ">="
        value, limit = (_num(g["value"]), _num(g["limit"])) if g["unit"] != "bytes" else (
            _num(int(g["value"])) if g["value"] is not None else "-", str(int(g["limit"])))
        lines.append(
            f"| {g['name']} | {g['artifact']} | {g['runtime'] or '-'} | {value} {g['unit']} | "
            f"{op} {limit} | {'yes' if g['passed'] else '**no**'} | {_margin(g)} | {g['source']} |"
        )
    details = [g for g in report["gates"] if g.get("detail")]
    if details:
        lines += [""] + [f"- {g['name']} on {g['runtime'] or g['artifact']}: {g['detail']}" for g in details]
    ref = report["reference"]
    lines += ["", "## Reference", "",
              f"float ONNX on {ref['runtime']} {ref['version']}: "
              + ", ".join(f"{k} {_num(v)}" for k, v in ref["metrics"].items() if k != "examples")]
    examples = ref["metrics"].get("examples", [])
    if examples:
        lines += ["", "First translations of the eval set:", ""]
        for ex in examples:
            lines += [f"- source: {ex['source']}"] + [f"  - {k}: {v}" for k, v in ex.items() if k != "source"]
    columns = task_class(report["task"]).columns
    lines += ["", "## Artifacts", "",
              "| artifact | bytes | runtime | " + " | ".join(c.title for c in columns) + " |",
              "|---|---|---|" + "---|" * len(columns)]
    for key, art in report["artifacts"].items():
        if not art["runtimes"]:
            lines.append(f"| {_ARTIFACT_TITLES.get(key, key)} | {art['bytes']} | - |" + " - |" * len(columns))
        for rt, entry in art["runtimes"].items():
            task = entry.get("task", {})
            d = entry["describe"]
            how = d.get("kernels", d.get("provider", "")) + (f", emulated {d['profile']}" if d.get("emulated") else "")
            values = " | ".join(_num(task.get(c.key), c.digits) for c in columns)
            lines.append(f"| {_ARTIFACT_TITLES.get(key, key)} | {art['bytes']} | {rt} ({how}) | {values} |")
    lines += ["", "## Outputs vs the float reference", "",
              "| artifact | runtime | graph | output | cosine | SQNR dB | max abs err |", "|---|---|---|---|---|---|---|"]
    for key, art in report["artifacts"].items():
        for rt, entry in art["runtimes"].items():
            for graph, outs in entry["outputs"].items():
                for name, m in outs.items():
                    lines.append(f"| {key} | {rt} | {graph} | {name} | {_num(m['cosine'], 6)} | "
                                 f"{_num(m['sqnr_db'], 2)} | {_num(m['max_abs_error'])} |")
                    for sl in m.get("slices", ()):  # an output whose parts differ 10x in range: each part
                        named = "" if sl["name"] == f"{sl['start']}:{sl['stop']}" else f"{sl['name']} = "
                        part = f"{name}[{named}axis {sl['axis']}: {sl['start']}:{sl['stop']}], {sl['levels']} values"
                        lines.append(f"| {key} | {rt} | {graph} | {part} | {_num(sl['cosine'], 6)} | "
                                     f"{_num(sl['sqnr_db'], 2)} | - |")
    lines += _runtimes_section(report)
    lines += _parity_section(report)
    lines += _emulation_cost_section(report)
    size = report["size"]
    lines += ["", "## Size", "",
              f"INT8 .tflite {size['int8_tflite_bytes']} bytes = {_num(size['int8_to_float32_ratio'], 3)} x the float32 "
              f".tflite ({size['float32_tflite_bytes']} bytes). Where the INT8 file's bytes go:", "",
              "| part | bytes | share |", "|---|---|---|"]
    for part, b in size["int8_tflite_breakdown"].items():
        lines.append(f"| {part} | {b} | {b / size['int8_tflite_bytes']:.1%} |")
    lines += _export_lines(report.get("export", {}).get("graphs", {}))
    shipped = report["artifacts"]["tflite_int8"]
    lines += ["", "## INT8 ops", ""]
    for graph, insp in shipped["inspection"].items():
        lines.append(
            f"- {graph}: {insp['int8_compute_ops']} of {insp['compute_ops']} compute ops run in int8. Op counts: "
            + ", ".join(f"{k} {v}" for k, v in insp["ops"].items()) + "."
        )
        if insp["float_output_ops"]:
            lines.append(f"  Ops left in float32: {', '.join(insp['float_output_ops'])}.")
        if insp.get("float_data_movement_ops"):
            lines.append(f"  Float32 data movement (no arithmetic): {', '.join(insp['float_data_movement_ops'])}.")
    for graph, reason in shipped.get("float_fallback", {}).items():
        lines.append(f"- {graph}: why - the converter has no int8 kernel for them: {reason}")
    for graph, info in report["conversion"].get("graphs", {}).items():
        for strategy in info.get("strategies", []):
            lines.append(f"- {graph}: conversion needed more than the defaults: {strategy}")
    lines += _repair_lines(report.get("repair", {}))
    lines += _attribution_lines(report.get("attribution", {}), report.get("attribution_tflite", {}),
                                report.get("attribution_plot"))
    q = report["quantization"]
    if q:
        lines += ["", "## Quantization (INT8 ONNX)", ""] + [f"- {k}: {v}" for k, v in q.items()]
    lines += _confinement_lines(report)
    lines += ["", "## Stages (host wall time, s)", "",
              " | ".join(f"{k} {v:.1f}" for k, v in report["stage_seconds"].items()), ""]
    return "\n".join(lines)


ATTRIBUTION_ROWS = 10  # tensors in report.md's table per graph (report.json has every one)


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a '|' in a name does not split the row."""
    return text.replace("|", "\\|")


def _repair_lines(repair: dict[str, Any]) -> list[str]:
    """What repair tried, the gates after each try, and what the shipped recipe costs."""
    if not repair:
        return []
    lines = ["", "## Repair (16-bit activations where the INT8 error originates)", ""]
    if "skipped" in repair:
        return [*lines, f"Skipped: {repair['skipped']}."]
    before = [f"{g['name']}{' on ' + g['runtime'] if g.get('runtime') else ''} {_num(g['value'], 4)} (limit "
              f"{_num(g['limit'], 4)})" for g in repair.get("gates_before", []) if not g["passed"]]
    if before:
        lines += [f"The INT8 model as converted failed: {'; '.join(before)}.", ""]
    lines += [f"A gate failed, so edgeq quantized the float32 .tflite again with litert-quantizer: ranges chosen per "
              f"tensor, then 16-bit activations for the ops where the error originates, a few at a time (budget: "
              f"{repair['budget_int16_compute_ops']} of {repair['compute_ops']} compute ops). Each try ran on "
              f"{repair['host_runtime']}.", "",
              "| try | change | 16-bit ops | of them compute ops | bytes | gates failed on the host |",
              "|---|---|---|---|---|---|"]
    for t in repair["tries"]:
        failed = [f"{g['name']} {_num(g['value'], 4)} (limit {_num(g['limit'], 4)})" for g in t["gates"] if not g["passed"]]
        n16 = sum(len(v) for v in t["int16_ops"].values())
        outcome = f"could not run: {t['error']}" if t.get("error") else "; ".join(failed) or "none: passes"
        lines.append(f"| {t['try']} | {_cell(t['change'])} | {n16} | {t['int16_compute_ops']} | {t['bytes'] or '-'} | "
                     f"{_cell(outcome)} |")
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


def _attribution_lines(attribution: dict[str, Any], tflite: dict[str, Any], plot: str | None) -> list[str]:
    """Where the INT8 error originates: the INT8 ONNX model's tensors, then each quantized .tflite's."""
    if not attribution and not tflite:
        return []
    lines = ["", "## Where the INT8 error comes from (calibration samples)", "",
             "channel SQNR: the mean of the SQNRs of a tensor's channels (ONNX: axis 1; .tflite: the last axis, "
             "and axis 1 for tensors of 3 axes or more, the lower). drop: the channel SQNR a node's inputs carry minus "
             "its output's - error that appears at that node, not error carried in. ONNX node: for a .tflite tensor, "
             "the node of the float ONNX model that computes the same values (both float models on one sample).", ""]
    if plot:
        lines += [f"![SQNR along the graph]({plot})", "", f"{plot}: the SQNR of every tensor along the graph, per "
                  "quantized artifact; the least accurate tensor of each is named.", ""]
    titles = {"tflite_int8": "INT8 .tflite as converted vs the float32 .tflite (LiteRT builtin kernels)",
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
                lines.append(f"| {_cell(r['tensor'])} | {r['op']} | {_cell(where)} | {r['sqnr_db']:.1f} | "
                             f"{r['channel_sqnr_db']:.1f} | {r['drop_db']:.1f} | {lo:.4g}..{hi:.4g} | {_num(r['scale'], 6)} |")
            lines.append("")
    return lines


def _confinement_lines(report: dict[str, Any]) -> list[str]:
    """Whether the export and convert child processes ran with their writes confined (edgeq.landlock)."""
    lines = []
    for stage, status in (("Export", report.get("export", {}).get("confinement")),
                          ("Conversion", report["conversion"].get("confinement"))):
        if not status:
            continue  # no child process (an ONNX model's export)
        m = re.fullmatch(r"landlock ABI (\d+): writes confined to (.+)", status)
        lines.append(f"- {stage} ran with writes confined to {m[2]} (Landlock ABI {m[1]})." if m
                     else f"- {stage} ran with writes not confined: {status.removeprefix('not confined: ')}.")
    return ["", "## Child processes", "", *lines] if lines else []


def _export_lines(graphs: dict[str, Any]) -> list[str]:
    """What export changed in the model (repaired metadata, fixed shapes, frozen inputs, folded If
    nodes, rewrites for int8 kernels) and the check that the result computes what the model does."""
    if not any(info.get("rewrites") for info in graphs.values()):
        return []
    lines = ["", "## What export changed in the model", ""]
    for graph, info in graphs.items():
        for rewrite in info.get("rewrites", []):
            lines.append(f"- {graph}: {rewrite}")
        drift = info.get("rewrite_max_rel_diff")
        if drift is not None:
            lines.append(f"- {graph}: checked on onnxruntime: the float ONNX computes what the model does (largest "
                         f"output difference {drift:.2g} of the output's range, seeded feeds)")
    return lines
