"""Child process of the export stage for PyTorch models: import the user's model code, load the
weights without pickle, export every graph to ONNX with torch's TorchScript-based exporter.

    python -m edgeq.stages._torch_export_child JOB.json   ->   JOB.result.json

A separate process, like the converters': a crash in the user's code or in torch (segfault,
abort, out of memory), a ``sys.exit`` and torch's global state stay out of edgeq's process, and
the network is refused while it runs. Errors edgeq recognises (ModelError) go back as their
one-line message; anything else as its type and first line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from edgeq._proc import error_line
from edgeq.errors import ModelError
from edgeq.landlock import confine_child
from edgeq.stages._convert_child import _no_network

__all__ = ["export_graphs", "main"]


def _import_model_class(file: Path, class_name: str) -> type:
    module_name = f"edgeq_user_model_{hashlib.sha256(str(file).encode()).hexdigest()[:12]}"
    mod_spec = importlib.util.spec_from_file_location(module_name, file)
    if mod_spec is None or mod_spec.loader is None:
        raise ModelError(f"cannot import {file}; [model].file must be a Python file for format = 'pytorch'")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[module_name] = module
    try:
        mod_spec.loader.exec_module(module)
    except Exception as e:
        raise ModelError(f"importing {file.name} failed: {type(e).__name__}: {e}") from e
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ModelError(f"{file.name} has no class '{class_name}'; fix [model].class in edgeq.toml")
    return cls


def _load_state_dict(path: Path) -> dict[str, Any]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelError(f"{path.name} is not a readable safetensors file: {e}") from e
    if path.suffix in (".pt", ".pth", ".bin"):
        # weights_only=True is passed explicitly, which TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD does not override in
        # torch 2.13; the variable is still removed while loading, in case a torch version honours it.
        forced = os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for refused or broken files
            raise ModelError(
                f"{path.name} could not be loaded without running pickled code ({type(e).__name__}); "
                "save the weights with safetensors or torch.save(model.state_dict())"
            ) from e
        finally:
            if forced is not None:
                os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = forced
        if not isinstance(state, dict):
            raise ModelError(f"{path.name} holds a {type(state).__name__}, not a state_dict; save model.state_dict()")
        return state
    raise ModelError(f"weights file {path.name}: unsupported extension; use .safetensors, .pt or .pth")


def _load_model(job: dict[str, Any]) -> Any:
    """The user's nn.Module, built from its code and loaded from weights without pickle."""
    import torch

    file, class_name = Path(job["file"]), job["class_name"]
    cls = _import_model_class(file, class_name)
    try:
        model = cls(**job["init_args"])
    except Exception as e:
        raise ModelError(f"{class_name}(**init_args) failed: {type(e).__name__}: {e}") from e
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"{class_name} is not a torch.nn.Module")
    weights = Path(job["weights"])
    state = _load_state_dict(weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ModelError(f"{weights.name} does not match {class_name}: {first}") from e
    model.eval()
    return model


class _Method:
    """Wraps ``model.<method>`` as a module whose forward the exporter can trace."""

    def __new__(cls, model: Any, method: str) -> Any:
        import torch

        class Method(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *args: Any) -> Any:
                return getattr(self.model, method)(*args)

        return Method()


def _export_graph(model: Any, class_name: str, graph: dict[str, Any], opset: int) -> None:
    import torch

    what = class_name
    if graph["method"] is not None:
        if not callable(getattr(model, graph["method"], None)):
            raise ModelError(f"{class_name} has no method '{graph['method']}'; fix graphs.method in edgeq.toml")
        what = f"{class_name}.{graph['method']}"
        model = _Method(model, graph["method"])
    dtypes = {"float32": torch.float32, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}
    # A frozen input is given its value (export makes it a constant of the ONNX graph afterwards).
    example = tuple(torch.tensor(i["value"], dtype=dtypes[i["dtype"]]) if "value" in i
                    else torch.zeros(i["shape"], dtype=dtypes[i["dtype"]]) for i in graph["inputs"])
    output_names = graph["outputs"] or None
    with torch.no_grad():
        try:
            result = model(*example)
        except Exception as e:
            raise ModelError(
                f"{what} failed on inputs of shapes {[i['shape'] for i in graph['inputs']]}: {type(e).__name__}: {e}"
            ) from e
    n_out = len(result) if isinstance(result, (tuple, list)) else 1
    if output_names and len(output_names) != n_out:
        raise ModelError(f"{what} returns {n_out} output(s) but edgeq.toml lists {len(output_names)}: {output_names}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, example, graph["out"], dynamo=False, opset_version=opset,
            input_names=[i["name"] for i in graph["inputs"]], output_names=output_names,
            do_constant_folding=True,
        )


def export_graphs(job: dict[str, Any]) -> None:
    """Load the model once and write every graph's ONNX file (``graphs[k]["out"]``)."""
    model = _load_model(job)
    for graph in job["graphs"]:
        _export_graph(model, job["class_name"], graph, job["opset"])


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    confinement = confine_child(job.get("confine"))  # before the user's code or torch loads
    result_path = Path(job_path).with_suffix(".result.json")
    try:
        with _no_network():
            export_graphs(job)
        result: dict[str, Any] = {"ok": True}
    except ModelError as e:
        traceback.print_exc()
        result = {"ok": False, "error": str(e)}
    except Exception as e:  # torch's own failures: one line back to the parent, the traceback in the log
        traceback.print_exc()
        result = {"ok": False, "error": f"exporting to ONNX failed: {error_line(e)}"[:400]}
    result["confinement"] = confinement
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
