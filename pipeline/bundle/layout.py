"""The name of every file in a bundle, in one place.

A one-graph model ships as the target's ``model_file`` (model.tflite); a model of several graphs
as ``<graph>.tflite`` each. model.json says how to feed each file; manifest.json lists every other
file with its sha256 and bytes.
"""

from __future__ import annotations

__all__ = ["ATTRIBUTION_PNG", "KEEP_MARKER", "LABELS", "MANIFEST", "MODEL_JSON", "RECIPE_JSON", "REPORT_JSON", "REPORT_MD",
           "STAGING_PREFIX", "TOKENIZER", "graph_file"]

MANIFEST = "manifest.json"
MODEL_JSON = "model.json"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
RECIPE_JSON = "recipe.json"  # a repaired model's mixed-precision recipe (edgeq.repair)
ATTRIBUTION_PNG = "attribution.png"  # SQNR along the graph, per quantized artifact
LABELS = "labels.txt"  # a classifier's class names, one per line
TOKENIZER = "tokenizer.model"  # a translation model's SentencePiece model

STAGING_PREFIX = ".edgeq-staging-"  # next to --out: the folder a build writes in
KEEP_MARKER = ".edgeq-build"  # in a --keep-build folder: edgeq wrote it and may replace it


def graph_file(graph: str, model_file: str, single: bool) -> str:
    """The file a graph ships as: the target's model file for a one-graph model, else ``<graph>.tflite``."""
    return model_file if single else f"{graph}.tflite"
