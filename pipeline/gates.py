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
    return sum(i["int8_compute_ops"] for i in insp) / total if total else 1.0


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
    Gate("runtime_top1_agreement", "min", "fraction",
         "share of eval samples whose top-1 class is the same on another runtime as on the target's first", "parity",
         lambda ref, shipped, e: e["top1_agreement"], key="top1_agreement"),
    Gate("runtime_bleu_diff", "max", "BLEU",
         "BLEU difference between the target's first runtime and another one (translation)", "parity",
         lambda ref, shipped, e: e["bleu_diff"], key="bleu_diff"),
    Gate("output_cosine", "min", "cosine",
         "lowest cosine similarity, over the model's outputs, between the artifact's outputs and the float reference's",
         "runtimes", _min_cosine),
    Gate("int8_compute_ops", "min", "fraction",
         "share of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / BATCH_MATMUL ops that run in int8", "artifact",
         _int8_share),
    Gate("model_bytes", "max", "bytes", "size of the shipped model file", "artifact",
         lambda ref, shipped, e: float(shipped["bytes"])),
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
            value = gate.measure(reference_metrics, shipped, entry)
            results.append({**evaluate_gate(gate.name, value, limit.limit), "artifact": artifact, "runtime": runtime,
                            "source": limit.source})
    return results
