"""The user's model files, checked before any work: nothing in them runs, every size is bounded.

ONNX files: size limits and external data inside the model folder; a .keras file: a config naming
only Keras' own classes; a SavedModel: plain files under the 2 GB limit, only math ops (TensorFlow
runs a SavedModel's ops when it loads it); PyTorch weights: under the 2 GB limit.
"""

from __future__ import annotations

from edgeq.config import ModelSpec

__all__ = ["check_model_files"]


def check_model_files(spec: ModelSpec, trust: bool = False) -> None:
    """The model's files, before any work: ONNX size limits and external data inside the model
    folder; a .keras file's config naming only Keras' own classes; a SavedModel of plain files."""
    if spec.format == "onnx":
        from edgeq.onnx_files import check_onnx_file

        for graph in spec.graphs:
            check_onnx_file(graph.file)
    elif spec.format == "keras":
        from edgeq.keras_files import check_keras_file

        check_keras_file(spec.file, trust)
    elif spec.format == "saved_model":
        from edgeq.errors import ModelError
        from edgeq.onnx_files import MAX_PROTOBUF

        total = 0
        for p in sorted(spec.file.rglob("*")):
            if p.is_symlink():
                raise ModelError(f"{spec.file.name}: {p.relative_to(spec.file)} is a symlink; a SavedModel must be plain files")
            total += p.stat().st_size if p.is_file() else 0
        if total > MAX_PROTOBUF:  # its variables become one ONNX protobuf and one .tflite: both stop at 2 GB
            raise ModelError(f"{spec.file.name} is {total} bytes, over the 2 GB limit of an ONNX model and a .tflite "
                             "file; quantize a smaller model")
        from edgeq.saved_model_ops import check_saved_model

        check_saved_model(spec.file, trust)  # only math ops: TensorFlow runs a SavedModel's ops when it loads it
    elif spec.format == "pytorch" and spec.weights is not None:
        from edgeq.onnx_files import check_size

        # The weights become one ONNX protobuf and one TFLite flatbuffer: both stop at 2 GB.
        check_size(spec.weights, "weights file", "an ONNX model and a .tflite file cannot hold it; quantize a smaller model")
