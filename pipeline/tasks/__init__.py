"""Task metrics: each task turns runtime outputs into metrics, streaming one sample at a time.

``TASKS`` maps a task kind (edgeq.toml [task].kind) to its accumulator class. The generic tensor
metrics (``TensorMetrics``) apply to every model whatever its task.
"""

from __future__ import annotations

from edgeq.tasks.classification import ClassificationMetrics
from edgeq.tasks.generic import TensorMetrics

__all__ = ["TASKS", "ClassificationMetrics", "TensorMetrics"]

TASKS = {"classification": ClassificationMetrics}
