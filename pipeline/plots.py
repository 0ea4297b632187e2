"""attribution.png: the SQNR of every tensor along the graph, one line per quantized artifact.

Where a person would rather look than read: the line falls where the error originates. One panel
per graph; x is the tensor's position in its model's execution order (ONNX nodes or .tflite ops),
y the mean channel SQNR in dB (edgeq.attribution); each artifact's least accurate tensor is marked
and named. matplotlib (Agg, no display) draws it; it is imported here only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["attribution_plot"]

# (label, graph -> rows) per artifact; rows as edgeq.attribution returns them
Series = Sequence[tuple[str, Mapping[str, Any]]]
MAX_LABEL = 48
Y_TOP = 70.0  # SQNRs above this (error-free tensors: 120 dB) are drawn at it


def _short(name: str) -> str:
    return name if len(name) <= MAX_LABEL else "..." + name[-(MAX_LABEL - 3):]


def attribution_plot(series: Series, path: Path) -> bool:
    """Draw the PNG at ``path``; False (nothing written) when no artifact has measured rows."""
    graphs = list(dict.fromkeys(g for _, by_graph in series for g, rows in by_graph.items() if isinstance(rows, list) and rows))
    if not graphs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(graphs), 1, figsize=(10, 3.6 * len(graphs)), squeeze=False)
    for ax, graph in zip(axes[:, 0], graphs, strict=True):
        for k, (label, by_graph) in enumerate(series):
            rows = by_graph.get(graph)
            if not isinstance(rows, list) or not rows:
                continue
            order = sorted(rows, key=_position)
            xs = [k / max(len(order) - 1, 1) for k in range(len(order))]
            ys = [min(r["channel_sqnr_db"], Y_TOP) for r in order]  # error-free tensors (120 dB) at the top
            (line,) = ax.plot(xs, ys, marker=".", linewidth=1.2, label=label)
            worst = min(range(len(order)), key=lambda j: order[j]["channel_sqnr_db"])
            ax.annotate(f"{_short(order[worst]['tensor'])}\n({order[worst]['op']}, {order[worst]['channel_sqnr_db']:.1f} dB)",
                        (xs[worst], ys[worst]), textcoords="offset points", fontsize=7,
                        xytext=(-170 if xs[worst] > 0.6 else 6, 30 + 22 * k),
                        color=line.get_color(), arrowprops={"arrowstyle": "-", "color": line.get_color()})
        ax.set_title(f"{graph}: mean channel SQNR of each tensor vs the float model", fontsize=10)
        ax.set_xlabel("position in the graph (execution order, 0 = first op)")
        ax.set_ylabel(f"SQNR dB (at most {Y_TOP:.0f} shown)")
        ax.set_ylim(top=Y_TOP + 5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None, "Creation Time": None})  # same bytes on every build
    plt.close(fig)
    return True


def _position(row: Mapping[str, Any]) -> int:
    """Execution order: a .tflite op's index; an ONNX row keeps the order it was measured in (``index``)."""
    return int(row.get("op_index", row.get("index", 0)))
