"""The shape of the package, kept by tests: module sizes, the public API, and the plug-in rules
(no stage, build, report or command branches on a task kind; validation never asks which kind of
runtime it has). The import layers and cycles are import-linter's (`make lint`)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import edgeq
from edgeq.tasks import TASKS

PACKAGE = Path(edgeq.__file__).resolve().parent
MAX_LINES = 400  # a module longer than this does more than one job: split it


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_the_line_budget() -> None:
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    over = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"
    assert len(sizes) > 40  # the walk found the package


def _all_modules() -> list[str]:
    names = ["edgeq"]
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="edgeq."):
        if info.name.split(".")[-1] in ("__main__", "worker"):  # the entry point; the emulator's guest script
            continue
        names.append(info.name)
    return names


@pytest.mark.parametrize("name", _all_modules())
def test_every_module_declares_what_it_exports(name: str) -> None:
    """``__all__`` lists only names the module has; every public module has one (packages may re-export)."""
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if name.rsplit(".", 1)[-1].startswith("_") or name == "edgeq":
        return
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names {missing}, which it does not define"


# The API other code builds on: the command line's modules, scripts (bench/) and plug-ins (a new task,
# runtime or stage). Changing it is a decision: update this table with the change.
PUBLIC_API = {
    "edgeq.build": {"BuildOptions", "BuildOutcome", "build"},
    "edgeq.config": {"CALIBRATION_METHODS", "CONFIG_FILE", "INPUT_DTYPES", "IO_DTYPES", "MODEL_FORMATS", "PRECISION_CHOICES",
                     "TASK_KINDS", "DataSpec", "FrozenInput", "GraphSpec", "InputSpec", "ModelSpec", "OutputSpec", "QuantSpec",
                     "TargetSpec", "TaskSpec", "available_targets", "check_tflite_ops", "load_model_spec", "load_target",
                     "parse_gate_override", "parse_input_shape", "parse_input_value"},
    "edgeq.context": {"BuildContext", "Column", "Evaluation", "Pair", "Task", "TaskValidation"},
    "edgeq.execution": {"DecodeJob", "Decoded", "FeedRecorder", "FeedSet", "Feeds", "Runtime", "Work"},
    "edgeq.results": {"CalibrationResult", "ConvertResult", "ExportResult", "PackageResult", "PrecisionResult", "QuantizeResult",
                      "StageResultType", "ValidationResult"},
    "edgeq.artifacts": {"SINGLE_GRAPH", "Artifact"},
    "edgeq.gates": None,  # checked below: the gate table is data
    "edgeq.tasks": {"TASKS", "ClassificationMetrics", "Parity", "ParityMetrics", "TensorMetrics", "make_task", "task_class"},
    "edgeq.runtimes": {"RUNTIMES", "SUBSET_SEED", "subsets",
                       "Engine", "InProcess", "RuntimeFacts", "cannot_run", "check_name", "check_runtimes",
                       "create_runtime", "emulators", "facts", "installed", "open_runtime", "require_emulators", "split_name",
                       "start_all", "stop_all", "with_runtimes"},
    "edgeq.stages": {"STAGES", "Stage", "load_stage"},
    "edgeq.runner": {"EventHook", "run_stages"},
    "edgeq.bundle.layout": {"ATTRIBUTION_PNG", "KEEP_MARKER", "LABELS", "MANIFEST", "MODEL_JSON", "RECIPE_JSON", "REPORT_JSON",
                            "REPORT_MD", "STAGING_PREFIX", "TOKENIZER", "graph_file"},
    "edgeq.bundle.reader": {"Bundle", "translate"},
    "edgeq.bundle.verify": {"Finding", "verify"},
}


@pytest.mark.parametrize("name", sorted(PUBLIC_API))
def test_public_api(name: str) -> None:
    module = importlib.import_module(name)
    if PUBLIC_API[name] is not None:
        assert set(module.__all__) == PUBLIC_API[name]


def test_the_protocols_are_implemented() -> None:
    """Every task class has every member of the Task protocol; both kinds of validation runtime have
    every member of the Runtime protocol."""
    from edgeq.context import Task
    from edgeq.execution import Runtime
    from edgeq.runtimes import InProcess
    from edgeq.runtimes.arm64 import LiteRTArm64

    def members(protocol: type) -> set[str]:
        return {m for m in vars(protocol) if not m.startswith("_")} | set(getattr(protocol, "__annotations__", {}))

    for cls in TASKS.values():
        assert members(Task) <= set(dir(cls)), cls
    for cls in (InProcess, LiteRTArm64):
        assert members(Runtime) - {"name"} <= set(dir(cls)), cls  # name: set per instance


def _string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


@pytest.mark.parametrize("rel", ["build.py", "report.py", "cli.py", *sorted(
    p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "stages").glob("*.py"))])
def test_no_branch_on_a_task_kind(rel: str) -> None:
    """Stages, build, report and the command line take the task from the registry: no task kind in them."""
    found = [(line, s) for line, s in _string_constants(PACKAGE / rel) if s in TASKS]
    assert not found, f"{rel} names task kinds: {found}"


def test_validation_never_asks_which_kind_of_runtime_it_has() -> None:
    from edgeq.runtimes import RUNTIMES

    source = (PACKAGE / "stages" / "validate.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not attrs & {"emulator", "background", "whole_artifact", "emulated"}
    names = {s for _, s in _string_constants(PACKAGE / "stages" / "validate.py")}
    assert not names & (set(RUNTIMES) - {"onnxruntime"})  # onnxruntime: the float reference's runtime
    assert "emulat" not in source.split('"""', 2)[2]  # past the docstring


def test_stage_results_are_typed() -> None:
    """No stage result travels in a dict keyed by a string."""
    for path in _modules():
        assert "ctx.results[" not in path.read_text(encoding="utf-8"), path
