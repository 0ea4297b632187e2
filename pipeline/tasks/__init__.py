"""Tasks: what a model is for, and how edgeq feeds it, calibrates it, measures it and bundles it.

``TASKS`` is the one registry: a task kind (edgeq.toml [task].kind) -> the class that implements
the Task protocol (edgeq.context.Task). Stages take the build's task from the context
(``make_task`` made it from the model spec) and never branch on the kind; the report and the
command line read a task's columns from its class (``task_class``).

A new task is one module here and one line below.
"""

from __future__ import annotations

from typing import Any

from edgeq.config import ModelSpec
from edgeq.context import Task
from edgeq.tasks.classification import Classification, ClassificationMetrics
from edgeq.tasks.detection import Detection
from edgeq.tasks.generic import Generic
from edgeq.tasks.metrics import Parity, ParityMetrics, TensorMetrics
from edgeq.tasks.translation import Translation

__all__ = ["TASKS", "ClassificationMetrics", "Parity", "ParityMetrics", "TensorMetrics", "make_task", "task_class"]

TASKS: dict[str, type[Any]] = {
    "classification": Classification,
    "detection": Detection,
    "generic": Generic,
    "translation": Translation,
}


def task_class(kind: str) -> type[Any]:
    """The class of a task kind (KeyError naming the known kinds)."""
    try:
        return TASKS[kind]
    except KeyError:
        raise KeyError(f"unknown task '{kind}'; known: {', '.join(TASKS)}") from None


def make_task(spec: ModelSpec) -> Task:
    """The build's task, made from its model spec."""
    return task_class(spec.task.kind)(spec)  # type: ignore[no-any-return]
