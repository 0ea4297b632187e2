"""The build stages and their one contract.

Stages are listed in one explicit table, ``STAGES``, in the order they run; each entry names the
module that defines ``STAGE``. Modules are imported when a build reaches them, so importing edgeq
never imports tensorflow, torch or onnx2tf.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgeq.context import BuildContext

__all__ = ["STAGES", "Stage", "StageResult", "load_stage"]


@dataclass(frozen=True)
class StageResult:
    """What a stage reports back: artifact keys it produced and facts for the report."""

    produced: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    """One step of a build.

    Rules a stage keeps: it reads only the artifacts named in ``requires`` (from ``ctx.artifacts``),
    writes files only under ``ctx.build_dir`` (or ``ctx.bundle_dir`` for the package stage), adds
    every artifact named in ``produces`` to the context, and raises ``EdgeqError`` subclasses for
    failures a user can act on.
    """

    name: str
    requires: tuple[str, ...]
    produces: tuple[str, ...]

    def run(self, ctx: BuildContext) -> StageResult: ...


STAGES: tuple[tuple[str, str], ...] = (
    ("export", "edgeq.stages.export"),
    ("calibrate", "edgeq.stages.calibrate"),
    ("quantize", "edgeq.stages.quantize"),
    ("convert", "edgeq.stages.convert"),
    ("validate", "edgeq.stages.validate"),
    ("package", "edgeq.stages.package"),
)


def load_stage(name: str) -> Stage:
    module = dict(STAGES)[name]
    return importlib.import_module(module).STAGE
