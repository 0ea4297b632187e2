"""The accuracy and size gates: what each one measures, and their evaluation, in one place.

A gate is data: its name, whether its value must stay at most (``max``) or at least (``min``) the
limit, its unit, the tasks it applies to, what it is measured over, and the function that reads its
value from the validation results of the shipped artifact. The validate stage measures; this module
decides. A new gate is one entry in ``GATES``; a target's file or edgeq.toml then gives it a limit.

What a gate is measured over (``over``):

* ``runtimes``: once per runtime that ran the shipped artifact, on that runtime's entry
  (``{"task": {...metrics}, "outputs": {graph: {output: tensor metrics}}}``);
* ``parity``: once per other runtime of the target, on its comparison with the target's first
  runtime (``{"top1_agreement": ..., "bleu_diff": ...}``); a runtime whose comparison lacks the
  gate's ``key`` is skipped (a classifier's runtimes have no BLEU difference);
* ``artifact``: once, on the shipped artifact (its bytes, its op inspection).

A leaf module: it imports nothing of edgeq.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["GATES", "Gate", "GateLimit", "evaluate", "evaluate_gate"]

Measure = Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], float | None]


@dataclass(frozen=True)
class Gate:
    """One gate. ``measure(reference_metrics, shipped, entry)`` gives its value: ``entry`` is a
    runtime's entry (``over="runtimes"``), a parity entry (``"parity"``) or ``shipped`` itself
    (``"artifact"``)."""

    name: str
    comparison: str  # "max": passes when value <= limit; "min": value >= limit
    unit: str
    description: str
    over: str  # "runtimes", "parity" or "artifact"
    measure: Measure
    tasks: frozenset[str] | None = None  # None: every task
    key: str | None = None  # parity gates: the comparison's field; runtimes without it are skipped
    applies: Callable[[dict[str, Any]], bool] | None = None  # None: every entry; else entries it is False for are skipped
    explain: Callable[[dict[str, Any]], str] | None = None  # what a failing value means, for the report


@dataclass(frozen=True)
class GateLimit:
    """A gate in force: its limit and where the limit came from."""

    name: str
    limit: float
    source: str  # "target", "edgeq.toml" or "command line"

    @property
    def comparison(self) -> str:
        """The gate's comparison: "max" or "min"."""
        return GATES[self.name].comparison


def _min_cosine(ref: dict[str, Any], shipped: dict[str, Any], entry: dict[str, Any]) -> float:
    return min(o["cosine"] for outs in entry["outputs"].values() for o in outs.values())


def _int8_share(ref: dict[str, Any], shipped: dict[str, Any], entry: dict[str, Any]) -> float:
    insp = shipped["inspection"].values()
    total = sum(i["compute_ops"] for i in insp)
    return sum(i["int8_compute_ops"] + i.get("int16_compute_ops", 0) for i in insp) / total if total else 1.0


# A slice of an output varies in the float model when it takes at least this many distinct values.
VARIES = 16


def _varying_slices(entry: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(graph, output, slice) for every slice of an output whose float values vary."""
    return [(g, o, s) for g, outs in entry["outputs"].items() for o, m in outs.items()
            for s in m.get("slices", ()) if s["float_levels"] >= VARIES]


def _fewest_levels(ref: dict[str, Any], shipped: dict[str, Any], entry: dict[str, Any]) -> float:
    return float(min(s["levels"] for _, _, s in _varying_slices(entry)))


def _slice_text(graph: str, output: str, s: dict[str, Any]) -> str:
    lo, hi = s["float_range"]
    named = "" if s["name"] == f"{s['start']}:{s['stop']}" else f"{s['name']} = "
    return f"{graph}/{output}[{named}axis {s['axis']}: {s['start']}:{s['stop']}] (float {lo:.4g}..{hi:.4g})"


def _explain_levels(entry: dict[str, Any]) -> str:
    """The slice with the fewest values, its ranges, and the cause: one scale for slices whose ranges differ."""
    graph, output, worst = min(_varying_slices(entry), key=lambda t: t[2]["levels"])
    slices = entry["outputs"][graph][output]["slices"]
    wide = max(slices, key=lambda s: s["float_range"][1] - s["float_range"][0])
    lo, hi = worst["range"]
    sqnr = "-" if worst["sqnr_db"] is None else f"{worst['sqnr_db']:.1f}"
    return (f"{_slice_text(graph, output, worst)} takes {worst['levels']} distinct value(s) here ({lo:.4g}..{hi:.4g}, "
            f"SQNR {sqnr} dB): one int8 scale serves the whole output and {_slice_text(graph, output, wide)} sets it; "
            "export the slices as separate outputs, so that each gets its own scale")


# The order is the order of the report's gate lines.
GATES: dict[str, Gate] = {g.name: g for g in (
    Gate("accuracy_drop", "max", "points",
         "top-1 accuracy of the float reference minus the artifact's, in percentage points", "runtimes",
         lambda ref, shipped, e: (ref["top1_accuracy"] - e["task"]["top1_accuracy"]) * 100.0,
         tasks=frozenset({"classification"})),
    Gate("bleu_drop", "max", "BLEU",
         "corpus BLEU of the float reference's translations minus the artifact's, vs the references", "runtimes",
         lambda ref, shipped, e: ref["bleu"] - e["task"]["bleu"], tasks=frozenset({"translation"})),
    Gate("top1_agreement", "min", "fraction",
         "share of eval samples whose top-1 class matches the float reference", "runtimes",
         lambda ref, shipped, e: e["task"]["top1_agreement"], tasks=frozenset({"classification"})),
    Gate("detection_agreement", "min", "F1",
         "F1 of the artifact's detections against the float model's (IoU 0.5, same class)", "runtimes",
         lambda ref, shipped, e: e["task"]["detection_agreement"], tasks=frozenset({"detection"})),
    Gate("map_drop", "max", "points",
         "mAP@0.5 against the labelled boxes of the float model minus the artifact's, in points (detection with labels)",
         "runtimes", lambda ref, shipped, e: (ref["map50"] - e["task"]["map50"]) * 100.0,
         tasks=frozenset({"detection"}), applies=lambda e: "map50" in e.get("task", {})),
    Gate("runtime_top1_agreement", "min", "fraction",
         "share of eval samples whose top-1 class is the same on another runtime as on the target's first", "parity",
         lambda ref, shipped, e: e["top1_agreement"], key="top1_agreement"),
    Gate("runtime_bleu_diff", "max", "BLEU",
         "BLEU difference between the target's first runtime and another one (translation)", "parity",
         lambda ref, shipped, e: e["bleu_diff"], key="bleu_diff"),
    Gate("output_cosine", "min", "cosine",
         "lowest cosine similarity, over the model's outputs, between the artifact's outputs and the float reference's",
         "runtimes", _min_cosine),
    Gate("output_slice_levels", "min", "levels",
         "fewest distinct values any slice of an output takes in the artifact, among the slices that vary in the "
         "float model; slices are cut where the float ranges along an axis differ 10x or more (pixel boxes next "
         "to scores in 0..1)", "runtimes", _fewest_levels, applies=lambda e: bool(_varying_slices(e)),
         explain=_explain_levels),
    Gate("int8_compute_ops", "min", "fraction",
         "share of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / BATCH_MATMUL ops that run in integer kernels: "
         "int8, or 16-bit activations with int8 weights where repair chose them (within [quantization] max_int16_ops); "
         "full-integer precisions only (int8, int16x8)",
         "artifact",
         _int8_share, applies=lambda e: bool(e.get("full_integer", True))),
    Gate("model_bytes", "max", "bytes", "size of the shipped model file", "artifact",
         lambda ref, shipped, e: float(shipped["bytes"])),
    Gate("arena_bytes", "max", "bytes",
         "RAM the TFLite Micro interpreter's tensor arena takes for the shipped model, as it measured when it loaded "
         "it (microcontroller targets)", "runtimes",
         lambda ref, shipped, e: e["describe"].get("arena_bytes"), applies=lambda e: "arena_bytes" in e.get("describe", {})),
)}


def evaluate_gate(name: str, value: float | None, limit: float) -> dict[str, Any]:
    """One gate result; ``margin`` is how far inside (>= 0) or outside (< 0) the limit the value is.
    A value that could not be measured (None) fails."""
    gate = GATES[name]
    if value is None:
        return {"name": name, "value": None, "limit": limit, "comparison": gate.comparison, "unit": gate.unit,
                "passed": False, "margin": None}
    passed = value <= limit if gate.comparison == "max" else value >= limit
    margin = (limit - value) if gate.comparison == "max" else (value - limit)
    return {"name": name, "value": value, "limit": limit, "comparison": gate.comparison, "unit": gate.unit,
            "passed": bool(passed), "margin": margin}


def evaluate(limits: list[GateLimit], task: str, reference_metrics: dict[str, Any], shipped: dict[str, Any],
             artifact: str) -> list[dict[str, Any]]:
    """Every gate in force that applies to ``task``, on the validation results of the shipped artifact
    (named ``artifact`` in the results): one result per gate and runtime, in ``limits``' order."""
    results = []
    for limit in limits:
        gate = GATES[limit.name]
        if gate.tasks is not None and task not in gate.tasks:
            continue
        if gate.over == "artifact":
            entries: dict[str | None, dict[str, Any]] = {None: shipped}
        elif gate.over == "parity":
            entries = {rt: e for rt, e in shipped.get("parity", {}).items() if gate.key in e}
        else:
            entries = dict(shipped["runtimes"])
        for runtime, entry in entries.items():
            if gate.applies is not None and not gate.applies(entry):
                continue
            # a runtime that ran a subset of the eval samples is compared with the reference over the same ones
            ref = entry.get("task", {}).get("reference", reference_metrics) if gate.over == "runtimes" else reference_metrics
            value = gate.measure(ref, shipped, entry)
            result = {**evaluate_gate(gate.name, value, limit.limit), "artifact": artifact, "runtime": runtime,
                      "source": limit.source}
            if not result["passed"] and gate.explain is not None and value is not None:
                result["detail"] = gate.explain(entry)
            results.append(result)
    return results
