"""The build stages and their one contract.

Stages are listed in one explicit table, ``STAGES``, in the order they run; each entry names the
module that defines ``STAGE``. Modules are imported when a build reaches them, so importing edgeq
never imports tensorflow, torch or onnx2tf.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from edgeq.context import BuildContext

__all__ = ["STAGES", "Stage", "load_stage"]


class Stage(Protocol):
    """One step of a build.

    ``requires`` and ``produces`` name artifact keys (str) and result types (edgeq.results). Rules a
    stage keeps: it reads only the artifacts and results named in ``requires`` (``ctx.artifacts``,
    ``ctx.result(Type)``), writes files only under ``ctx.build_dir`` (or ``ctx.bundle_dir`` for the
    package stage), adds every artifact named in ``produces`` to the context and returns the result
    type it names, and raises ``EdgeqError`` subclasses for failures a user can act on. The runner
    checks ``requires`` before and ``produces`` after.
    """

    name: str
    requires: tuple[str | type, ...]
    produces: tuple[str | type, ...]

    def run(self, ctx: BuildContext) -> Any:
        """Do the work; return this stage's result (an edgeq.results type)."""
        ...


STAGES: tuple[tuple[str, str], ...] = (
    ("export", "edgeq.stages.export"),
    ("calibrate", "edgeq.stages.calibrate"),
    ("quantize", "edgeq.stages.quantize"),
    ("convert", "edgeq.stages.convert"),
    ("precision", "edgeq.stages.precision"),
    ("validate", "edgeq.stages.validate"),
    ("package", "edgeq.stages.package"),
)


def load_stage(name: str) -> Stage:
    """The ``STAGE`` of the module that ``STAGES`` names for ``name`` (imported now)."""
    module = dict(STAGES)[name]
    return importlib.import_module(module).STAGE  # type: ignore[no-any-return]
