"""Reading a user's ONNX file safely: size limits and external data that must stay in the model folder.

An ONNX model may keep tensors in other files ("external data": ``location``, ``offset``,
``length`` per tensor). A model file is untrusted input, so before any byte of it is used:

* the .onnx file itself must be under the 2 GB protobuf limit (checked by size, before parsing);
* every external location must be a relative path inside the model's folder: no absolute path,
  no ``..``, no symlink anywhere on the way, a regular file with a single hard link (a second
  link could make a file outside the folder readable through it), long enough for the tensor it
  claims (offset + the tensor's byte size), and the tensor's byte size under the 2 GB limit;
* the data is then read by edgeq (``O_NOFOLLOW``, exact offset and length) and put into the
  model in memory; onnx's own loader never opens those paths.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from edgeq.errors import ModelError

__all__ = [
    "MAX_FLATBUFFER",
    "MAX_PROTOBUF",
    "check_onnx_file",
    "check_size",
    "check_weights_fit",
    "describe_nodes",
    "embedding_rows",
    "external_tensors",
    "inferred_shapes",
    "load_onnx_checked",
    "onnx_dim",
    "onnx_inputs",
]

MAX_PROTOBUF = 2**31 - 1  # bytes: protobuf's limit on one message
MAX_FLATBUFFER = 2**31 - 1  # bytes: a .tflite flatbuffer's limit (32-bit offsets)


def check_size(path: Path, what: str = "model file",
               fix: str = "export it with external data (tensors in a separate file next to it)") -> int:
    """The file's size; ModelError if over the 2 GB protobuf limit (checked before reading it)."""
    size = path.stat().st_size
    if size > MAX_PROTOBUF:
        raise ModelError(f"{what} {path.name} is {size} bytes, over the 2 GB protobuf limit; {fix}")
    return size


def _all_tensors(graph: Any) -> list[Any]:
    """Initializers and tensors in node attributes, subgraphs included."""
    from onnx import AttributeProto

    out = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                out.append(attr.t)
            elif attr.type == AttributeProto.TENSORS:
                out.extend(attr.tensors)
            elif attr.type == AttributeProto.GRAPH:
                out.extend(_all_tensors(attr.g))
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    out.extend(_all_tensors(g))
    return out


def external_tensors(model: Any) -> list[tuple[Any, dict[str, str]]]:
    """Every tensor of the model (subgraphs too) that keeps its data outside, with its external_data entries."""
    from onnx import TensorProto

    out = []
    for t in _all_tensors(model.graph):
        if t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL:
            out.append((t, {e.key: e.value for e in t.external_data}))
    return out


def _tensor_bytes(t: Any) -> int:
    from onnx import helper

    try:
        itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"tensor '{t.name}' has an unknown data type {t.data_type}; re-export the model") from None
    n = 1
    for d in t.dims:
        if d < 0:
            raise ModelError(f"tensor '{t.name}' has a negative dimension {d}; re-export the model")
        n *= d
    return n * itemsize


def _checked_location(folder: Path, source: Path, t: Any, info: dict[str, str]) -> tuple[Path, int, int]:
    where = f"{source.name}: tensor '{t.name}' keeps its data in"
    loc = info.get("location", "")
    p = PurePosixPath(loc.replace("\\", "/"))
    if not loc or p.is_absolute() or loc.startswith(("/", "\\")) or (len(loc) > 1 and loc[1] == ":"):
        raise ModelError(f"{where} {loc!r}, an absolute path; external data must be a file in the model's folder")
    if ".." in p.parts:
        raise ModelError(f"{where} {loc!r}, which leaves the model's folder ('..'); external data must be a file in that folder")
    path = folder
    for part in p.parts:
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise ModelError(f"{where} {loc!r}, which does not exist; put the external data file next to the model") from None
        if stat.S_ISLNK(st.st_mode):
            raise ModelError(f"{where} {loc!r}, which goes through a symlink; copy the real file into the model's folder")
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"{where} {loc!r}, which is not a regular file")
    if st.st_nlink > 1:
        raise ModelError(
            f"{where} {loc!r}, a file with {st.st_nlink} hard links; copy it (cp, not ln) so it has one"
        )
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ModelError(f"{where} {loc!r} with a non-numeric offset or length; re-export the model") from None
    need = _tensor_bytes(t)
    if need > MAX_PROTOBUF:
        raise ModelError(f"{where} {loc!r}: {need} bytes, over the 2 GB limit of one tensor in TFLite")
    if offset < 0 or (length is not None and length != need):
        raise ModelError(f"{where} {loc!r} at offset {offset} length {length}, but its shape needs {need} bytes; re-export it")
    if st.st_size < offset + need:
        raise ModelError(
            f"{where} {loc!r}, which has {st.st_size} bytes; the tensor needs {need} bytes from offset {offset} "
            "(the file is truncated); re-export the model"
        )
    return path, offset, need


def check_weights_fit(model: Any, source: Path) -> int:
    """The bytes of every tensor of ``model`` (external ones by their shape); ModelError if the float32
    .tflite could not hold them. Checked before the ONNX file is written and anything is converted."""
    total = sum(_tensor_bytes(t) for t in _all_tensors(model.graph))
    if total > MAX_FLATBUFFER:
        raise ModelError(
            f"{source.name}: the model's tensors come to {total} bytes, over the 2 GB limit of a .tflite "
            "flatbuffer (and of one ONNX protobuf); split it into graphs under 2 GB each ([[graphs]] in "
            "edgeq.toml) or quantize a smaller model"
        )
    return total


def check_onnx_file(source: Path) -> tuple[Any, list[tuple[Any, Path, int, int]]]:
    """Parse ``source`` (external data not read) and check it and every external location."""
    import onnx
    from google.protobuf.message import DecodeError

    check_size(source)
    try:
        model = onnx.load_model(str(source), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise ModelError(f"{source.name} is not a readable ONNX file ({type(e).__name__}); re-export the model") from e
    if not model.graph.node:
        raise ModelError(f"{source.name} has an empty graph; re-export the model")
    checked = [(t, *_checked_location(source.parent, source, t, info)) for t, info in external_tensors(model)]
    total = sum(n for *_, n in checked) + source.stat().st_size
    if total > MAX_PROTOBUF:
        raise ModelError(
            f"{source.name} with its external data is {total} bytes, over the 2 GB protobuf limit edgeq's "
            "converters work within; quantize a smaller model"
        )
    return model, checked


def load_onnx_checked(source: Path) -> Any:
    """The ONNX model at ``source`` with every external tensor checked and read into memory."""
    import onnx

    model, checked = check_onnx_file(source)
    for t, path, offset, n in checked:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            data = os.pread(fd, n, offset)
        finally:
            os.close(fd)
        if len(data) != n:
            raise ModelError(f"{source.name}: tensor '{t.name}': short read from {path.name}; the file changed, re-export it")
        t.raw_data = data
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT
    return model


def describe_nodes(onnx_path: Path, op: str, count: int | None = None) -> str:
    """"ONNX node(s) 'a', 'b'" for the nodes of ``onnx_path`` whose op type is ``op``, compared
    without case and underscores (TFLite's CUMSUM and TensorFlow's Cumsum are ONNX's CumSum), or "".
    ``count``: how many of them are meant, when that is fewer than the ONNX graph has ("1 of ...")."""
    import onnx

    def key(name: str) -> str:
        return name.replace("_", "").lower()

    model = onnx.load_model(str(onnx_path), load_external_data=False)
    nodes = [n for n in model.graph.node if key(n.op_type) == key(op)]
    if not nodes:
        return ""
    more = f" and {len(nodes) - 3} more" if len(nodes) > 3 else ""
    listed = f"{', '.join(repr(n.name or '(unnamed)') for n in nodes[:3])}{more}"
    if count is not None and count < len(nodes):
        return f"{count} of the {len(nodes)} ONNX {nodes[0].op_type} nodes {listed}"
    return f"ONNX node{'s' if len(nodes) != 1 else ''} {listed}"


_PASS_THROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Flatten"}


def embedding_rows(onnx_path: Path, inputs: Any) -> dict[str, int]:
    """For each integer input that indexes an embedding table (a Gather on a constant, maybe after
    a Cast or Reshape), the number of rows of that table: the ids it accepts are 0 .. rows - 1."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_model(str(onnx_path), load_external_data=False)
    consts = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute:
            consts[node.output[0]] = node.attribute[0].t
    users: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    rows: dict[str, int] = {}
    for spec in inputs:
        if not spec.dtype.startswith("int"):
            continue
        frontier, seen = [spec.name], set()
        while frontier:
            name = frontier.pop()
            seen.add(name)
            for node in users.get(name, []):
                if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name and node.input[0] in consts:
                    n = int(numpy_helper.to_array(consts[node.input[0]]).shape[0])
                    rows[spec.name] = min(rows.get(spec.name, n), n)
                elif node.op_type in _PASS_THROUGH:
                    frontier += [o for o in node.output if o not in seen]
    return rows


_ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int32"}  # FLOAT, INT32, INT64 (token ids become int32)


def onnx_dim(d: Any) -> int | str:
    """One dimension of an ONNX shape: its size, or - when dynamic - what the model calls it: a name
    or expression ('batch', '2*N'), '-1' or '0' as older exporters write a dynamic size, '?' for none."""
    if d.HasField("dim_value") and d.dim_value > 0:
        return int(d.dim_value)
    return d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?")


def onnx_inputs(path: Path) -> dict[str, tuple[str | None, list[int | str] | None]]:
    """The graph inputs of an ONNX file (initializers excluded): name -> (edgeq dtype or None, dims),
    a dim being its size or, when dynamic, its ``onnx_dim`` text; dims None when the model does not
    declare the input's shape at all (not even its rank)."""
    import onnx
    from google.protobuf.message import DecodeError

    check_size(path)
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise ModelError(f"{path.name} is not a readable ONNX file ({type(e).__name__}); re-export the model") from e
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, tuple[str | None, list[int | str] | None]] = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        dims = [onnx_dim(d) for d in tt.shape.dim] if tt.HasField("shape") else None
        out[i.name] = (_ONNX_DTYPES.get(tt.elem_type), dims)
    return out


def inferred_shapes(model: Any) -> dict[str, list[int]]:
    """Static shapes of the graph's tensors, as far as onnx's shape inference knows them."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # metadata only: a tensor without a known shape is simply left out
        inferred = model
    out = {}
    for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        tt = v.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") and d.dim_value > 0 for d in tt.shape.dim):
            out[v.name] = [d.dim_value for d in tt.shape.dim]
    return out
