"""edgeq: a trained model to a validated, app-ready INT8 edge bundle, in one command.

Importing edgeq is cheap: tensorflow, torch and onnx2tf are imported by the stages that need them.
"""

from __future__ import annotations

import os

# Offline: onnxruntime (since 1.29) sends telemetry from Linux unless this is set before it loads.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

__all__ = ["__version__"]

__version__ = "0.1.0"
