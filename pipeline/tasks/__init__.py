"""Task metrics: each task turns runtime outputs into metrics, streaming one sample at a time.

``TASKS`` maps a task kind (edgeq.toml [task].kind) to its accumulator class. The generic tensor
metrics (``TensorMetrics``) apply to every model whatever its task.
"""

from __future__ import annotations

from edgeq.tasks.classification import ClassificationMetrics
from edgeq.tasks.generic import ParityMetrics, TensorMetrics

__all__ = ["TASKS", "ClassificationMetrics", "ParityMetrics", "TensorMetrics"]

TASKS = {"classification": ClassificationMetrics}
