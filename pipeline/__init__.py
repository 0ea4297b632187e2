"""edgeq: a trained model to a validated, app-ready INT8 edge bundle, in one command.

Importing edgeq is cheap: tensorflow, torch and onnx2tf are imported by the stages that need them.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
