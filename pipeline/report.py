"""report.json and report.md: every metric, every gate, every runtime, from the stages' results."""

from __future__ import annotations

import re
from typing import Any

from edgeq import __version__
from edgeq.config import ModelSpec, TargetSpec
from edgeq.inputs.shown import shown
from edgeq.precisions import precision
from edgeq.report_sections import attribution_lines, ladder_lines, num, repair_lines
from edgeq.results import ConvertResult, ExportResult, QuantizeResult, ValidationResult
from edgeq.tasks import task_class

__all__ = ["build_report", "format_gate", "render_markdown"]

_ARTIFACT_TITLES = {
    "onnx_float": "float ONNX (reference)",
    "onnx_int8": "INT8 ONNX (QDQ)",
    "tflite_float32": "float32 .tflite",
    "tflite_int8": "INT8 .tflite",
}


def _title(key: str, report: dict[str, Any]) -> str:
    """An artifact's title in report.md: the shipped rung says so."""
    art = report["artifacts"].get(key, {})
    title = _ARTIFACT_TITLES.get(key) or f"{art.get('rung', key)} .tflite"
    return f"{title} (shipped)" if key == report.get("shipped") else title


def build_report(spec: ModelSpec, target: TargetSpec, export: ExportResult, quantize: QuantizeResult,
                 convert: ConvertResult, validation: ValidationResult) -> dict[str, Any]:
    """report.json: the stages' results and the gates, for a model built for a target. It holds no time the
    build took (the terminal, --junit and --summary do): the same inputs give the same bytes."""
    arts = dict(validation.artifacts)
    rung = precision(validation.precision)
    f32 = arts["tflite_float32"]["bytes"]
    i8 = arts[rung.key]["bytes"]
    return {
        "edgeq_version": __version__,
        "passed": validation.passed,
        "model": {"name": spec.name, "format": spec.format, "source_sha256": export.source_sha256},
        "target": {"name": target.name, "io_dtype": target.io_dtype, "runtimes": list(target.runtimes),
                   "threads": target.threads},
        "task": spec.task.kind,
        "precision": {"rung": rung.alias, "name": rung.name},
        "shipped": rung.key,
        "ladder": [dict(r) for r in validation.ladder],
        "gates": [dict(g) for g in validation.gates],
        "reference": dict(validation.reference),
        "artifacts": arts,
        "size": {
            "float32_tflite_bytes": f32,
            "shipped_tflite_bytes": i8,
            "shipped_to_float32_ratio": i8 / f32 if f32 else None,
            "shipped_tflite_breakdown": _merged_breakdown(arts[rung.key]["inspection"]),
        },
        "export": export.facts(),
        "quantization": quantize.facts(),
        "conversion": convert.facts(),
        "attribution": dict(validation.attribution),
        "repair": dict(validation.repair),
        "attribution_tflite": dict(validation.attribution_tflite),
    }


def _merged_breakdown(inspection: dict[str, Any]) -> dict[str, int]:
    """Where the bytes of all the shipped .tflite files go, summed over graphs."""
    total: dict[str, int] = {}
    for insp in inspection.values():
        for part, b in insp["size_breakdown"].items():
            total[part] = total.get(part, 0) + b
    return total


def format_gate(g: dict[str, Any]) -> str:
    """One gate as a line of text: PASS or FAIL, its value against its limit, and how far a failure misses."""
    op = "<=" if g["comparison"] == "max" else ">="
    where = f" on {g['runtime']}" if g.get("runtime") else ""
    value = num(g["value"]) if g["unit"] != "bytes" else num(int(g["value"]) if g["value"] is not None else None)
    limit = num(g["limit"]) if g["unit"] != "bytes" else str(int(g["limit"]))
    status = "PASS" if g["passed"] else "FAIL"
    by = ""
    if not g["passed"] and g["margin"] is not None:
        by = f", misses by {num(abs(g['margin']))} {g['unit']}"
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
    shipped = report["artifacts"][report["shipped"]]["runtimes"]
    lines = ["", "## Runtimes of the shipped model", "",
             "| runtime | runs on | CPU profile | dot product | kernels | LiteRT | eval samples |",
             "|---|---|---|---|---|---|---|"]
    subset = None
    for rt, entry in shipped.items():
        d = entry["describe"]
        n = entry.get("samples", {})
        seen = f"{n['count']} of {n['of']}" if n else "-"
        if "indices" in n:
            seen += f" (seed {n['seed']})"
            subset = n
        if d.get("emulated"):
            g = d.get("guest", {})
            where = f"qemu-user -cpu {d['qemu_cpu']}, aarch64 Python {g.get('python')}, numpy {g.get('numpy')}"
            dot = {True: "yes", False: "no"}.get(g.get("dot_product"), "-")
            lines.append(f"| {rt} | {where} | {d['profile']}: {d['cpu']} | {dot} | {d['kernels']} | {d.get('version')} | "
                         f"{seen} |")
        else:
            lines.append(f"| {rt} | host | - | - | {d.get('kernels', '-')} | {d.get('version')} | {seen} |")
    if subset is not None:
        lines += ["", f"A runtime that ran {subset['count']} of the {subset['of']} eval samples ran a seeded subset "
                  "(--emulated-samples N|all); its task metrics, gates and parity compare it with the reference and "
                  f"the first runtime over the same samples: {_indices(subset['indices'])} (report.json lists them)."]
    return lines


def _indices(indices: list[int], shown: int = 16) -> str:
    """The first ``shown`` sample indices, then how many more."""
    head = ", ".join(str(i) for i in indices[:shown])
    return head + (f" ... and {len(indices) - shown} more" if len(indices) > shown else "")


def _parity_section(report: dict[str, Any]) -> list[str]:
    """The shipped model, runtime x metric: task metric, agreement with the float reference, and the
    distance to the first runtime in quantization steps; then every divergence over one step."""
    art = report["artifacts"][report["shipped"]]
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
        row = [rt, num(task.get(metric.key), metric.digits), num(task.get(agree.key), agree.digits)]
        p = parity.get(rt)
        if p is None:
            row += ["(reference)"] + ["-"] * len(outputs)
        else:
            row.append(num(p.get(diff.key), diff.digits))
            for g, o in outputs:
                m = p["outputs"][g][o]
                row.append(f"{num(m['max_steps'], 2)} ({num(m['elements_over_one_step'])} of {m['elements']})")
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
    rows = [(rt, e["describe"]) for rt, e in report["artifacts"][report["shipped"]]["runtimes"].items()
            if e["describe"].get("emulated")]
    if not rows:
        return []
    lines = ["", "## Validation cost of the emulated runtimes (host wall time, s)", "",
             "Time under qemu on this host's CPU; not the latency of a device with that core.", "",
             "| runtime | wall | start-up | running samples | decoding |", "|---|---|---|---|---|"]
    for rt, d in rows:
        c = d["validation_seconds"]
        running = sum(v for k, v in c.items() if k.startswith("run_"))
        lines.append(f"| {rt} | {num(c.get('wall'), 1)} | {num(c.get('startup'), 1)} | {running:.1f} | "
                     f"{num(c.get('decode'), 1)} |")
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
        value, limit = (num(g["value"]), num(g["limit"])) if g["unit"] != "bytes" else (
            num(int(g["value"])) if g["value"] is not None else "-", str(int(g["limit"])))
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
              + ", ".join(f"{k} {num(v)}" for k, v in ref["metrics"].items() if k != "examples")]
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
            lines.append(f"| {_title(key, report)} | {art['bytes']} | - |" + " - |" * len(columns))
        for rt, entry in art["runtimes"].items():
            task = entry.get("task", {})
            d = entry["describe"]
            how = d.get("kernels", d.get("provider", "")) + (f", emulated {d['profile']}" if d.get("emulated") else "")
            values = " | ".join(num(task.get(c.key), c.digits) for c in columns)
            lines.append(f"| {_title(key, report)} | {art['bytes']} | {rt} ({how}) | {values} |")
        for rt, why in art.get("not_run", {}).items():
            lines.append(f"| {_title(key, report)} | {art['bytes']} | {rt}: not run - {why} |" + " - |" * len(columns))
    lines += ["", "## Outputs vs the float reference", "",
              "| artifact | runtime | graph | output | cosine | SQNR dB | max abs err |", "|---|---|---|---|---|---|---|"]
    for key, art in report["artifacts"].items():
        for rt, entry in art["runtimes"].items():
            for graph, outs in entry["outputs"].items():
                for name, m in outs.items():
                    lines.append(f"| {key} | {rt} | {graph} | {name} | {num(m['cosine'], 6)} | "
                                 f"{num(m['sqnr_db'], 2)} | {num(m['max_abs_error'])} |")
                    for sl in m.get("slices", ()):  # an output whose parts differ 10x in range: each part
                        named = "" if sl["name"] == f"{sl['start']}:{sl['stop']}" else f"{sl['name']} = "
                        part = f"{name}[{named}axis {sl['axis']}: {sl['start']}:{sl['stop']}], {sl['levels']} values"
                        lines.append(f"| {key} | {rt} | {graph} | {part} | {num(sl['cosine'], 6)} | "
                                     f"{num(sl['sqnr_db'], 2)} | - |")
    lines += _runtimes_section(report)
    lines += _parity_section(report)
    lines += _emulation_cost_section(report)
    size, rung = report["size"], report["precision"]["rung"]
    lines += ladder_lines(report)
    lines += ["", "## Size", "",
              f"{rung} .tflite (shipped) {size['shipped_tflite_bytes']} bytes = {num(size['shipped_to_float32_ratio'], 3)} "
              f"x the float32 .tflite ({size['float32_tflite_bytes']} bytes). Where its bytes go:", "",
              "| part | bytes | share |", "|---|---|---|"]
    for part, b in size["shipped_tflite_breakdown"].items():
        lines.append(f"| {part} | {b} | {b / size['shipped_tflite_bytes']:.1%} |")
    lines += _export_lines(report.get("export", {}).get("graphs", {}))
    shipped = report["artifacts"][report["shipped"]]
    lines += ["", "## INT8 ops" if shipped.get("full_integer", True) else f"## Ops of the {rung} model", ""]
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
    lines += repair_lines(report.get("repair", {}))
    lines += attribution_lines(report.get("attribution", {}), report.get("attribution_tflite", {}),
                                report.get("attribution_plot"))
    q = report["quantization"]
    if q:
        lines += ["", "## Quantization (INT8 ONNX)", ""] + [f"- {k}: {v}" for k, v in q.items()]
    lines += _confinement_lines(report)
    return "\n".join(lines) + "\n"


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
