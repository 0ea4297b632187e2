"""repair: when a gate fails, 16-bit activations for the ops where the INT8 error originates, a few
at a time, until the gates pass on the host runtime or the budget is spent.

Rules:

* Only for float32 model I/O (the app's contract stays as it is) and only when ``[quantization]
  repair`` and the command line allow it; the shipped artifact is not changed otherwise.
* Each graph's float32 .tflite is quantized again with litert-quantizer (edgeq.mixed_precision): try 0
  gives every op 8-bit activations with ranges from the min / max over the calibration set; try 1
  chooses each tensor's range by its error: min / max, a percentile or an
  MSE-optimal clip, whichever quantizes that tensor's calibration values with the least squared
  error. The attribution of the better of the two against the float .tflite
  (edgeq.attribution.attribute_tflite) finds the tensors where the error originates (SQNR drops by
  ``MIN_DROP_DB`` or more); those left less accurate than ``ACCURATE_DB`` come first, the largest
  drop (where the most error appears) first among them, and each following try, with
  those ranges, gives 16-bit activations (int8 weights) to the ops of the next ranked tensors,
  doubling the number of origins each time; a try that does not do better than the best so far
  takes its ops back (and their budget). Last, when the user allows float ops of a type
  (``[quantization] allow_float_ops``), one more try keeps the origins of those types in float32.
* A try that cannot be made or run (litert-quantizer leaves an op in float32 that is not allowed; a
  delegate refuses an op) is recorded with its error and the next one is tried; when none can, repair
  fails with the first error.
* Budget: compute ops (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, BATCH_MATMUL) with 16-bit
  activations, at most ``[quantization] max_int16_ops`` (default 10% of the compute ops, rounded
  down) over all graphs; an origin that would exceed it is skipped. Other ops (concatenations,
  reshapes, logistic, ...) cost no multiply-accumulates and are not counted, but are listed.
* Every try is validated on the host runtime with the gates that apply to one runtime; the first
  that passes them is the shipped artifact (then validated on every runtime of the target). When
  none does, the converter's INT8 artifact stays, and the report gives every try and the best one.
* XNNPACK has no 16x8 kernels: LiteRT runs those ops on its builtin kernels; the report gives the
  host latency of the repaired model against try 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeq.artifacts import Artifact
from edgeq.context import BuildContext
from edgeq.errors import one_line
from edgeq.results import CalibrationResult
from edgeq.tflite_io import to_tflite
from edgeq.tflite_run import latency_ms

__all__ = ["ACCURATE_DB", "BUDGET_SHARE", "CHOSEN", "MAX_TRIES", "MIN_DROP_DB", "Checker", "rank_origins", "repair"]

BUDGET_SHARE = 0.10  # compute ops that may get 16-bit activations, by default
MAX_TRIES = 7  # the two range choices and up to five promotions
MIN_DROP_DB = 1.0  # a tensor whose SQNR drops less than this is no origin
ACCURATE_DB = 30.0  # a tensor with this channel SQNR or more is as accurate as 8 bits make it: ranked after the rest
CALIBRATION_SAMPLES = 200  # at most, from the calibration set
LATENCY_RUNS = 20
CHOSEN = "per_tensor"  # the ranges of try 1: chosen per tensor by error (edgeq.mixed_precision.choose_ranges)

# Given a runtime and the shipped artifacts to check there (graph -> Artifact), the gate results
Checker = Callable[[str, dict[str, Artifact]], list[dict[str, Any]]]


def _gate_summary(gates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: g.get(k) for k in ("name", "runtime", "value", "limit", "passed", "detail") if g.get(k) is not None
             or k in ("value", "passed")} for g in gates]


def _score(gates: list[dict[str, Any]]) -> tuple[int, float]:
    """Fewer failed gates first, then the worst margin relative to its limit (larger is better)."""
    failed = [g for g in gates if not g["passed"]]
    margins = [g["margin"] / max(abs(g["limit"]), 1e-9) for g in failed if g.get("margin") is not None]
    return (len(failed), -min(margins, default=0.0))


def rank_origins(rows: dict[str, list[dict[str, Any]]]) -> list[tuple[float, str, list[str], dict[str, Any]]]:
    """(drop, graph, ops to promote, attribution row) for every tensor where the error originates (a
    drop of ``MIN_DROP_DB`` or more, with ops to promote), in the order repair tries them: the tensors
    left less accurate than ``ACCURATE_DB`` first, the largest drop first among them (a first layer
    fed a lossless input drops most from its clean input, yet loses no more than 8 bits always do;
    a low SQNR carried in from upstream is no reason to promote an op)."""
    origins = [(r["drop_db"], graph, r["promote"], r) for graph, graph_rows in rows.items() for r in graph_rows
               if r["drop_db"] >= MIN_DROP_DB and r["promote"]]
    origins.sort(key=lambda o: (o[3]["channel_sqnr_db"] >= ACCURATE_DB, -o[0], o[3]["channel_sqnr_db"]))
    return origins


def _range_counts(graphs: list[_Graph]) -> str:
    """How many tensors took each kind of range, e.g. "12 min/max, 3 percentile, 20 MSE clip"."""
    from collections import Counter

    kinds = Counter(r["method"].rsplit(" ", 1)[0] if r["method"] != "min/max" else "min/max"
                    for g in graphs for r in g.tensor_ranges().values())
    return ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))


def _refuse_float_ops(path: Path, allowed: tuple[str, ...], floated: list[str]) -> None:
    """ValueError when the try computes an op in float32 that neither the user allows nor repair chose:
    litert-quantizer leaves the ops it cannot quantize in float32 without a word."""
    from edgeq.tflite_inspect import inspect_tflite

    refused = {op: info for op, info in inspect_tflite(path)["float_ops"].items()
               if op not in allowed and not set(info["tensors"]) <= set(floated)}
    if refused:
        ops = ", ".join(f"{op} x{info['count']}" for op, info in refused.items())
        raise ValueError(f"litert-quantizer leaves {ops} in float32, which [quantization] allow_float_ops does not allow")


class _Graph:
    """One graph's float .tflite, its calibration feeds, and its compute ops by output tensor."""

    def __init__(self, ctx: BuildContext, name: str) -> None:
        from edgeq.tflite_inspect import COMPUTE_OPS

        self.name = name
        self.float_art = ctx.artifact("tflite_float32", name)
        self.float_bytes = self.float_art.path.read_bytes()
        self.signature = self.float_art.meta["signature"]
        sets = ctx.result(CalibrationResult).sets[name]
        self.feeds = [to_tflite(feed, self.float_art.meta) for _, feed in zip(range(CALIBRATION_SAMPLES), sets, strict=False)]
        self.compute: set[str] = set()
        self._ranges: dict[str, dict[str, Any]] | None = None
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_content=self.float_bytes)
        details = {d["index"]: d for d in interp.get_tensor_details()}
        for op in interp._get_ops_details():
            if op["op_name"] in COMPUTE_OPS and len(op["outputs"]):
                self.compute.add(details[op["outputs"][0]]["name"])

    def tensor_ranges(self) -> dict[str, dict[str, Any]]:
        """Each activation's 8-bit range chosen by its error on the calibration feeds (computed once)."""
        if self._ranges is None:
            from edgeq.mixed_precision import choose_ranges

            self._ranges = choose_ranges(self.float_bytes, self.signature, self.feeds)
        return self._ranges


def repair(ctx: BuildContext, check: Checker, shipped_key: str, failed: list[str]) -> dict[str, Any]:
    """Try 16-bit activations where the error originates; returns the report entry. When a try passes,
    ``ctx.artifacts[shipped_key]`` holds its files (and ``entry["chosen"]`` is its number). ``failed``:
    the names of the gates the artifact as converted failed."""
    from edgeq.attribution import attribute_tflite
    from edgeq.gates import GATES
    from edgeq.mixed_precision import quantize_mixed
    from edgeq.tflite_inspect import TYPE_CHANGE_OPS

    if failed and all(GATES[g].over == "artifact" for g in failed):
        return {"skipped": f"the failed gates ({', '.join(dict.fromkeys(failed))}) measure the file, which 16-bit "
                           "activations do not make smaller or more int8"}
    if ctx.target.io_dtype != "float32":
        return {"skipped": f"repair keeps float32 model inputs and outputs; this build's io dtype is {ctx.target.io_dtype}"}
    from edgeq.runtimes import emulators

    emulated = {r for r, _ in emulators(ctx.target)}
    host = next((r for r in ctx.target.runtimes if r not in emulated), ctx.target.runtimes[0])
    graphs = [_Graph(ctx, g.name) for g in ctx.spec.graphs]
    total_compute = sum(len(g.compute) for g in graphs)
    budget = ctx.spec.quantization.max_int16_ops
    if budget is None:
        budget = math.floor(BUDGET_SHARE * total_compute)
    allowed = ctx.spec.quantization.allow_float_ops
    folder = ctx.build_dir / "repair"
    folder.mkdir(exist_ok=True)
    original = dict(ctx.artifacts[shipped_key])
    tries: list[dict[str, Any]] = []
    models: list[dict[str, bytes]] = []

    def attempt(promoted: dict[str, list[str]], why: str, ranges: str, floats: dict[str, list[str]] | None = None) -> bool:
        k = len(tries)
        floats = floats or {}
        record: dict[str, Any] = {"try": k, "change": why, "ranges": ranges,
                                  "int16_ops": {g: list(v) for g, v in promoted.items() if v},
                                  "int16_compute_ops": sum(1 for g in graphs for t in promoted.get(g.name, []) if t in g.compute)}
        if any(floats.values()):
            record["float_ops"] = {g: list(v) for g, v in floats.items() if v}
        files: dict[str, bytes] = {}
        try:
            arts: dict[str, Artifact] = {}
            for g in graphs:
                files[g.name] = quantize_mixed(g.float_bytes, g.signature, g.feeds, promoted.get(g.name, []),
                                               "minmax" if ranges == CHOSEN else ranges,  # then the chosen ones replace them
                                               tensor_ranges=g.tensor_ranges() if ranges == CHOSEN else None,
                                               float_ops=floats.get(g.name, []))
                path = folder / f"try{k}.{g.name}.tflite"
                path.write_bytes(files[g.name])
                _refuse_float_ops(path, allowed, floats.get(g.name, []))
                arts[g.name] = Artifact(shipped_key, path, "tflite", "int8+int16" if promoted.get(g.name) else "int8",
                                        dict(g.float_art.meta), graph=g.name)
            gates = check(host, arts)
        except Exception as e:  # a try that cannot be made or run: recorded, and the next one is tried
            tries.append({**record, "bytes": sum(len(b) for b in files.values()) or None, "passed": False,
                          "error": one_line(e), "gates": [], "_score": (math.inf, 0.0), "_arts": {}})
            models.append(files)
            return False
        passed = all(x["passed"] for x in gates)
        tries.append({**record, "bytes": sum(len(b) for b in files.values()), "passed": passed,
                      "gates": _gate_summary(gates), "_score": _score(gates), "_arts": arts})
        models.append(files)
        return passed

    passed = attempt({}, "litert-quantizer, 8-bit activations and weights everywhere; ranges: min/max", "minmax")
    if not passed:
        passed = attempt({}, "ranges chosen per tensor: min/max, percentile or MSE-optimal clipping, the least "
                             "error on the calibration set (" + _range_counts(graphs) + ")", CHOSEN)
    if not passed and all("error" in t for t in tries):
        raise RuntimeError(f"no try could be made and run ({tries[0]['error']})")
    if not passed:
        base = min(tries, key=lambda t: t["_score"])
        ranges = base["ranges"]
        origins = rank_origins({g.name: attribute_tflite(g.float_bytes, models[base["try"]][g.name], g.signature,
                                                         g.feeds) for g in graphs})
        promoted: dict[str, list[str]] = {}
        compute_used = 0
        step, taken = 1, 0
        while not passed and len(tries) < MAX_TRIES and taken < len(origins):
            added: list[str] = []
            new_by_graph: dict[str, list[str]] = {}
            step_cost = 0
            while len(added) < step and taken < len(origins):
                drop, gname, names, row = origins[taken]
                taken += 1
                graph = next(g for g in graphs if g.name == gname)
                new = [n for n in names if n not in promoted.get(gname, [])]
                cost = sum(1 for n in new if n in graph.compute)
                if not new or compute_used + cost > budget:
                    continue
                compute_used += cost
                step_cost += cost
                promoted.setdefault(gname, []).extend(new)
                new_by_graph.setdefault(gname, []).extend(new)
                added.append(f"{row['op']} {row['tensor']} (SQNR drops {drop:.1f} dB there)")
            if not added:
                break
            best_before = min(t["_score"] for t in tries)
            passed = attempt({g: list(v) for g, v in promoted.items()},
                             "16-bit activations for the ops where the error originates: " + "; ".join(added), ranges)
            if not passed and tries[-1]["_score"] >= best_before:  # no better: take these back, spend the budget elsewhere
                for gname, names in new_by_graph.items():
                    promoted[gname] = [n for n in promoted[gname] if n not in names]
                compute_used -= step_cost
            step *= 2
        # last, float kernels where the user allows float ops: the origins of those op types not yet 16-bit
        floats: dict[str, list[str]] = {}
        named: list[str] = []
        for drop, gname, _, row in origins:
            writer = row["promote"][0] if row["op"] not in TYPE_CHANGE_OPS else None  # as _promotion lists them
            if writer and row["op"] in allowed and writer not in promoted.get(gname, []) + floats.get(gname, []):
                floats.setdefault(gname, []).append(writer)
                named.append(f"{row['op']} {row['tensor']} (SQNR drops {drop:.1f} dB there)")
        if not passed and floats:
            passed = attempt({g: list(v) for g, v in promoted.items()},
                             "float32 kernels (allowed by [quantization] allow_float_ops) for the ops where the error "
                             "originates: " + "; ".join(named), ranges, floats)
    chosen = next((t["try"] for t in tries if t["passed"]), None)
    best = chosen if chosen is not None else min(tries, key=lambda t: t["_score"])["try"]
    if chosen is not None:
        ctx.artifacts[shipped_key] = dict(tries[chosen]["_arts"])
    else:
        ctx.artifacts[shipped_key] = original
    entry: dict[str, Any] = {
        "tries": [{k: v for k, v in t.items() if not k.startswith("_")} for t in tries],
        "chosen": chosen, "best": best, "budget_int16_compute_ops": budget, "compute_ops": total_compute,
        "host_runtime": host,
    }
    if chosen is not None:
        t = tries[chosen]
        entry["recipe"] = {"quantizer": "litert-quantizer", "default": "a8w8 (int8 activations, int8 weights)",
                           "a16w8": t["int16_ops"], "float32": t.get("float_ops", {}), "ranges": t["ranges"],
                           "tensor_ranges": {g.name: {n: {k: r[k] for k in ("min", "max", "method")}
                                                      for n, r in g.tensor_ranges().items() if r["method"] != "min/max"}
                                             for g in graphs} if t["ranges"] == CHOSEN else {},
                           "calibration_samples": {g.name: len(g.feeds) for g in graphs}}
        g0, threads = graphs[0], ctx.target.threads
        entry["cost"] = {
            "bytes": t["bytes"], "bytes_all_int8": tries[0]["bytes"], "int16_compute_ops": t["int16_compute_ops"],
            "int16_ops": sum(len(v) for v in t["int16_ops"].values()),
            "kernels": "ops with 16-bit activations run on LiteRT's builtin kernels (XNNPACK has no 16x8 kernels)",
            "host_latency_ms": latency_ms(models[chosen][g0.name], g0.signature, g0.feeds[0], threads, LATENCY_RUNS),
            "host_latency_ms_all_int8": latency_ms(models[0][g0.name], g0.signature, g0.feeds[0], threads, LATENCY_RUNS),
            "all_int8_try": 0,
            "latency_graph": g0.name,
        }
    return entry

