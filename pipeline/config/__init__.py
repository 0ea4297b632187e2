"""Build configuration: ``ModelSpec`` (a model folder's edgeq.toml) and ``TargetSpec`` (targets/*.toml).

Both are frozen dataclasses, validated when they are built: a wrong or missing value raises
``ConfigError`` with one line that names the file, the key and the fix. Unknown keys are errors
too, so a typo never silently falls back to a default.

* ``toml``: reading one TOML table with every key checked; the command-line value parsers.
* ``model``: the model spec's dataclasses. ``model_toml``: reading edgeq.toml into one.
* ``target``: the target spec and the built-in targets.
"""

from __future__ import annotations

from edgeq.config.model import (
    CALIBRATION_METHODS,
    CONFIG_FILE,
    INPUT_DTYPES,
    IO_DTYPES,
    MODEL_FORMATS,
    PRECISION_CHOICES,
    TASK_KINDS,
    DataSpec,
    FrozenInput,
    GraphSpec,
    InputSpec,
    ModelSpec,
    OutputSpec,
    QuantSpec,
    TaskSpec,
)
from edgeq.config.model_toml import load_model_spec
from edgeq.config.target import TargetSpec, available_targets, load_target
from edgeq.config.toml import check_tflite_ops, parse_gate_override, parse_input_shape, parse_input_value

__all__ = [
    "CALIBRATION_METHODS",
    "CONFIG_FILE",
    "INPUT_DTYPES",
    "IO_DTYPES",
    "MODEL_FORMATS",
    "PRECISION_CHOICES",
    "TASK_KINDS",
    "DataSpec",
    "FrozenInput",
    "GraphSpec",
    "InputSpec",
    "ModelSpec",
    "OutputSpec",
    "QuantSpec",
    "TargetSpec",
    "TaskSpec",
    "available_targets",
    "check_tflite_ops",
    "load_model_spec",
    "load_target",
    "parse_gate_override",
    "parse_input_shape",
    "parse_input_value",
]
