"""What stages and tasks share: the build context, the Task contract, and what validation hands a task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from edgeq.artifacts import Artifact
from edgeq.cache import StageCache
from edgeq.config import ModelSpec, TargetSpec
from edgeq.execution import DecodeJob, FeedSet, Runtime
from edgeq.gates import GateLimit
from edgeq.precisions import precision

__all__ = ["BuildContext", "Column", "Evaluation", "Pair", "Task", "TaskValidation"]

R = TypeVar("R")
Pair = tuple[str, str]  # (artifact key, runtime name)


@dataclass(frozen=True)
class Column:
    """A task metric as a table column: title, key in the metrics, decimals, shown for the reference."""

    title: str
    key: str
    digits: int
    reference: bool = True


@dataclass(frozen=True)
class TaskValidation:
    """What a task's evaluation found."""

    reference: dict[str, Any]  # the float reference's task metrics
    task: dict[Pair, dict[str, Any]]  # task metrics per artifact and runtime
    tensors: dict[Pair, dict[str, dict[str, Any]]]  # per artifact and runtime: graph -> output -> tensor metrics
    parity: dict[str, Any]  # the shipped artifact: runtime -> its distance to the target's first runtime


@dataclass
class Evaluation:
    """What the validate stage hands a task: the float reference and every (artifact, runtime) pair,
    loaded. ``start(feeds, decode)`` announces the whole work to all of them before the first run.
    ``subsets``: a pair that runs only some of the eval samples (``sees``) is asked for those only, and its
    task metrics come with the reference's over the same samples (``"reference"``)."""

    ctx: BuildContext
    reference: Runtime  # the float ONNX model on onnxruntime
    runners: dict[Pair, Runtime]
    start: Callable[[dict[str, FeedSet], DecodeJob | None], None]
    shipped: str = "tflite_int8"
    subsets: dict[Pair, tuple[int, ...] | None] = field(default_factory=dict)  # the samples a pair runs; None: all
    _sets: dict[Pair, frozenset[int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._sets = {p: frozenset(s) for p, s in self.subsets.items() if s is not None}

    def sees(self, pair: Pair, k: int) -> bool:
        """Whether ``pair`` runs eval sample ``k`` (a runtime under an emulator runs a seeded subset)."""
        chosen = self._sets.get(pair)
        return chosen is None or k in chosen


class Task(Protocol):
    """What a model is for, and how edgeq measures it. One module per task in edgeq.tasks, one line in
    its registry; a task is made per build from the model spec (``make_task``).

    Class attributes are data the report and the command line read from the task kind alone.
    """

    kind: str
    columns: tuple[Column, ...]  # task metrics in report.md's artifact table
    summary_columns: tuple[Column, ...]  # task metrics in the terminal summary
    parity_columns: tuple[Column, ...]  # (metric, agreement with float, difference vs the first runtime)

    def open_data(self) -> tuple[Any, Any]:
        """The calibration and eval sets, checked against the model spec before any work starts."""
        ...

    def materialize(self, data: Any, role: str, folder: Path) -> Any:
        """The data as the stages read it, written under ``folder`` if it must be converted first."""
        ...

    def calibration_sets(self, ctx: BuildContext, reference: Callable[[], Runtime]) -> dict[str, Any]:
        """The calibration set of every graph (ArrayDataset); ``reference()`` loads the float model."""
        ...

    def evaluate(self, ev: Evaluation) -> TaskValidation:
        """Run the eval set through the reference and every pair; task, tensor and parity metrics."""
        ...

    def bundle_files(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        """Write the task's files into the bundle folder ``out``; model.json's ``task`` entry."""
        ...


@dataclass
class BuildContext:
    """The state of one build. ``artifacts[kind][graph]`` is the artifact of that kind for a graph;
    ``results`` holds each stage's result by its type (read with ``result``)."""

    spec: ModelSpec
    target: TargetSpec
    build_dir: Path  # intermediate files
    bundle_dir: Path  # the bundle being staged; renamed to --out at the end
    gates: list[GateLimit]
    task: Task
    calibration: Any  # the user's calibration data: ArrayDataset, or ParallelText for translation
    eval: Any  # the user's eval data: ArrayDataset, or ParallelText for translation
    artifacts: dict[str, dict[str, Artifact]] = field(default_factory=dict)
    results: dict[type, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    trust_model: bool = False  # --trust-model: Keras Lambda layers and custom objects may load
    convert_timeout: float = 1800.0  # --convert-timeout: seconds the converter child may run per graph
    precision: str = "int8"  # the rung being validated and shipped (an alias of edgeq.precisions)
    ladder: str | None = None  # "auto" or "all": validate every rung the target allows (edgeq.stages.validate)
    subset_samples: int | None = None  # eval samples a runtime under an emulator runs (seeded); None: all (edgeq.build
    # sets it from --emulated-samples, default EMULATED_SAMPLES there)
    cache: StageCache | None = None  # the stage cache (edgeq.cache); None: --no-cache
    cache_base: str | None = None  # the key of everything the stages' outputs depend on before any stage (edgeq.build)
    model_key: str | None = None  # the model folder's files and edgeq.toml without gates: part of every measurement's key
    eval_key: str | None = None  # the eval data's hash: part of the key of validate's measurements
    calibration_key: str | None = None  # the calibration data's hash: part of the key of every stage from calibrate on

    @property
    def shipped(self) -> str:
        """The artifact key of the rung being validated and shipped."""
        return precision(self.precision).key

    def rungs(self) -> list[str]:
        """The rungs this build makes: the one it ships, or every one the target allows for a ladder."""
        return list(self.target.precisions) if self.ladder else [self.precision]

    def add(self, artifact: Artifact) -> Artifact:
        """Record an artifact a stage produced."""
        self.artifacts.setdefault(artifact.key, {})[artifact.graph] = artifact
        return artifact

    def artifact(self, kind: str, graph: str | None = None) -> Artifact:
        """The artifact of ``kind`` for ``graph`` (default: the model's only graph)."""
        return self.artifacts[kind][graph if graph is not None else self.spec.single.name]

    def result(self, kind: type[R]) -> R:
        """The result of the stage that returns ``kind`` (KeyError if it has not run)."""
        return self.results[kind]  # type: ignore[no-any-return]

    def put(self, result: Any) -> None:
        """Keep a stage's result (the runner does, for every stage)."""
        self.results[type(result)] = result
