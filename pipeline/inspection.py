"""`edgeq inspect FILE`: what a model file's weights weigh, per stored dtype and at every precision rung.

.onnx, .tflite, .safetensors and .gguf files and edgeq bundle folders (the .tflite files model.json
lists). Nothing from a file runs and no read is unbounded: pickles are refused; a safetensors header
is parsed here, its length checked first; .tflite is read by LiteRT's flatbuffer accessors over a
memory map, .gguf by the memory-mapped ``gguf.GGUFReader``, ONNX without its external data. Weights
are the constant tensors; a quantized weight's scales (blockwise scale tensors, QDQ scale
initializers, per-channel scales) count in its bytes. Names are capped here, escaped when printed.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import stat
import struct
from collections import Counter
from pathlib import Path
from typing import Any

from edgeq.bundle.layout import MODEL_JSON
from edgeq.errors import ConfigError
from edgeq.inputs.files import inside, load_json
from edgeq.inputs.shown import shown
from edgeq.precisions import ladder, size_text
from edgeq.tflite_inspect import OPERAND_ROLES, TYPE_CHANGE_OPS

__all__ = ["MAX_TENSORS", "inspect_path", "inspection_lines"]

MAX_TENSORS = 2000  # tensors listed in the result, largest first; the rest are counted
MAX_NAME = 1000  # characters of a name or metadata string kept in the result
MAX_HEADER = 100 << 20  # a safetensors JSON header
PICKLES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")
_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
              "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
              "F8_E4M3": "float8_e4m3", "F8_E5M2": "float8_e5m2"}
_FOUR_BIT = ("int4", "uint4", "float4_e2m1fn")
_UNREADABLE = (ValueError, IndexError, KeyError, TypeError, OverflowError, struct.error, OSError, MemoryError,
               RecursionError, AttributeError)


def _cap(text: str) -> str:
    return text if len(text) <= MAX_NAME else f"{text[:MAX_NAME]}...[{len(text) - MAX_NAME} more characters]"


def _tensor(name: str, shape: list[int], dtype: str, params: int, nbytes: int, **quant: Any) -> dict[str, Any]:
    return {"name": _cap(name), "shape": shape, "dtype": dtype, "params": params, "bytes": nbytes, **quant}


def _bits_per_weight(nbytes: int, params: int) -> float:
    return round(nbytes * 8 / params, 4) if params else 0.0


def _absorb(tensors: dict[Any, dict[str, Any]], owner: Any, parts: list[Any], more: int = 0, **quant: Any) -> None:
    """Moves the scale / zero-point tensors ``parts`` (and ``more`` bytes of scales stored elsewhere)
    into ``owner``'s bytes: they are its overhead."""
    extra = more + sum(tensors.pop(p)["bytes"] for p in parts if p in tensors and p != owner)
    t = tensors[owner]
    t.update(quant, scale_bytes=t.get("scale_bytes", 0) + extra, bytes=t["bytes"] + extra)


def _at(dtype: list[str], operands: list[int], i: int) -> str:
    k = operands[i] if 0 <= i < len(operands) else -1
    return dtype[k] if 0 <= k < len(dtype) else "none"


def _tflite(path: Path) -> dict[str, Any]:
    """.tflite: LiteRT's flatbuffer accessors over a memory map (the object API would copy every buffer)."""
    from ai_edge_litert import schema_py_generated as fb

    def names(cls: type) -> dict[int, str]:
        return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}

    types, opnames = names(fb.TensorType), names(fb.BuiltinOperator)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if len(buf) < 8 or buf[4:8] != b"TFL3":
            raise ValueError("no TFL3 flatbuffer identifier")

        def count(n: int) -> range:  # a vector of n offsets must fit in the file
            if not 0 <= n * 4 <= len(buf):
                raise ValueError("a vector runs past the end of the file")
            return range(n)

        model = fb.Model.GetRootAs(buf, 0)
        sizes = []
        for i in count(model.BuffersLength()):
            b = model.Buffers(i)
            sizes.append(b.DataLength() or (b.Size() if b.Offset() > 1 else 0))
        codes = [opnames.get(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), "CUSTOM")
                 for c in (model.OperatorCodes(i) for i in count(model.OperatorCodesLength()))]
        weights: dict[int, dict[str, Any]] = {}
        load: dict[int, int] = {}
        ops: Counter[tuple[str, str]] = Counter()
        for s in count(model.SubgraphsLength()):
            sg = model.Subgraphs(s)
            tt = [sg.Tensors(j) for j in count(sg.TensorsLength())]
            dtype = [types.get(t.Type(), str(t.Type())).lower() for t in tt]
            shape = [[int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else [] for t in tt]
            const = {j: t.Buffer() for j, t in enumerate(tt) if 0 < t.Buffer() < len(sizes) and sizes[t.Buffer()]}
            owner = {}  # buffer -> the first tensor that holds it (a buffer shared by tensors is counted once)
            for j, b in const.items():
                if b not in weights:
                    owner[b] = j
                    name = (tt[j].Name() or b"").decode(errors="replace")
                    weights[b] = _tensor(name, shape[j], dtype[j], math.prod(shape[j]), sizes[b])
            for b, j in owner.items():
                q = tt[j].Quantization()
                if q is None or b not in weights:  # not quantized, or itself another tensor's scales
                    continue
                if q.DetailsType() == fb.QuantizationDetails.BlockwiseQuantization:
                    bw = fb.BlockwiseQuantization()
                    bw.Init(q.Details().Bytes, q.Details().Pos)
                    k = bw.Scales() if 0 <= bw.Scales() < len(tt) else None
                    parts = [const.get(i) for i in (bw.Scales(), bw.ZeroPoints()) if 0 <= i < len(tt)]
                    _absorb(weights, b, parts, scales=math.prod(shape[k]) if k is not None else 0,
                            scale_dtype=dtype[k] if k is not None else None, block_size=bw.BlockSize(),
                            quantized_dimension=q.QuantizedDimension())
                elif q.ScaleLength():  # per-tensor / per-channel: float32 scales, int64 zero points in the flatbuffer
                    _absorb(weights, b, [], 4 * q.ScaleLength() + 8 * q.ZeroPointLength(), scales=q.ScaleLength(),
                            quantized_dimension=q.QuantizedDimension())
            graph = [(codes[op.OpcodeIndex()] if op.OpcodeIndex() < len(codes) else "?",
                      [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else [],
                      [int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else [])
                     for op in (sg.Operators(k) for k in count(sg.OperatorsLength()))]
            # a constant through DEQUANTIZE (float16, weight-only int8): LiteRT makes it float32 once at load
            dequantized = {o[0]: i[0] for n, i, o in graph if n == "DEQUANTIZE" and i and o and i[0] in const}
            load.update({const[i]: math.prod(shape[o]) * 4 for o, i in dequantized.items() if 0 <= o < len(tt)})
            for name, ins, outs in graph:
                if name in OPERAND_ROLES:  # by the weights' stored dtype (BATCH_MATMUL of two activations: both)
                    r = OPERAND_ROLES[name]
                    w = ins[r.weights] if r.weights < len(ins) else -1
                    act, wd = _at(dtype, ins, r.activation), _at(dtype, ins, r.weights)
                    group = (f"{dtype[dequantized[w]]} weights dequantized at load, {act} activations" if w in dequantized
                             else f"{wd} weights, {act} activations" if w in const else f"{act} x {wd} activations")
                else:
                    group = f"{_at(dtype, ins, 0)} -> {_at(dtype, outs, 0)}" if name in TYPE_CHANGE_OPS else _at(dtype, outs, 0)
                ops[(group, name)] += 1
        size = len(buf)
    notes = [f"{len(load)} constant(s) feed a DEQUANTIZE op: LiteRT dequantizes them to float32 once at load, so load "
             "memory counts their float32 size"] if load else []
    return {"format": "tflite", "bytes": size, "tensors": list(weights.values()), "ops": ops,
            "load_bytes": sum(load.get(b, t["bytes"]) for b, t in weights.items()), "notes": notes}


def _onnx(path: Path) -> dict[str, Any]:
    """.onnx: initializers and Constant nodes; QDQ scales belong to the weight they dequantize."""
    import numpy as np
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError as e:
        raise ValueError(f"not an ONNX protobuf: {e}") from e
    g = model.graph

    def dtype_name(dt: int) -> str:
        try:
            return str(helper.tensor_dtype_to_np_dtype(dt))
        except (KeyError, ValueError, TypeError):
            return f"onnx type {dt}"

    weights: dict[str, dict[str, Any]] = {}
    consts = [(t.name, t) for t in g.initializer]
    consts += [(n.output[0], a.t) for n in g.node if n.op_type == "Constant" and n.output
               for a in n.attribute if a.name == "value"]
    for name, t in consts:
        dt, shape = dtype_name(t.data_type), [int(d) for d in t.dims]
        params = math.prod(shape)
        bits = 4 if dt in _FOUR_BIT else np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize * 8
        weights.setdefault(name, _tensor(name, shape, dt, params, math.ceil(params * bits / 8)))
    types = {n: w["dtype"] for n, w in weights.items()}
    for vi in [*g.input, *g.value_info, *g.output]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types.setdefault(vi.name, dtype_name(vi.type.tensor_type.elem_type))
    producer: dict[str, Any] = {}
    ops: Counter[tuple[str, str]] = Counter()
    qdq = 0
    for n in g.node:
        first = types.get(n.input[0], "unknown") if n.input else "none"
        src = producer.get(n.input[0]) if n.input else None
        out = {"Cast": dtype_name(next((a.i for a in n.attribute if a.name == "to"), 0)), "DequantizeLinear": "float32",
               "QuantizeLinear": types.get(n.input[2], "uint8") if len(n.input) > 2 else "uint8",
               "Shape": "int64", "Size": "int64"}.get(n.op_type, first)
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            group = f"{first} -> {out}"
            if n.op_type == "DequantizeLinear" and n.input[0] in weights:
                attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
                scales = weights[n.input[1]]["params"] if len(n.input) > 1 and n.input[1] in weights else 0
                _absorb(weights, n.input[0], list(n.input[1:]), scales=scales, block_size=attrs.get("block_size", 0),
                        **({"quantized_dimension": attrs.get("axis", 1)} if scales > 1 else {}))
                qdq += 1
        elif n.op_type.startswith("QLinear") or n.op_type.endswith("Integer"):
            group = f"{first if first != 'unknown' else 'int8'} (integer kernel)"
        elif src is not None and src.op_type == "DequantizeLinear":
            group = f"{types.get(src.input[0], 'int8')} (QDQ)"
        else:
            group = first
        ops[(group, n.op_type)] += 1
        for o in n.output:
            producer[o] = n
            types.setdefault(o, out)
    notes = [f"{qdq} QDQ weight(s): their scale and zero-point initializers count in their bytes"] if qdq else []
    if external := sum(t.data_location == onnx.TensorProto.EXTERNAL for _, t in consts):
        notes.append(f"{external} initializer(s) are stored in external data files, which the file's bytes leave out")
    return {"format": "onnx", "bytes": path.stat().st_size, "tensors": list(weights.values()), "ops": ops, "notes": notes}


def _safetensors(path: Path) -> dict[str, Any]:
    """.safetensors: an 8-byte header length, a JSON header, the tensors' bytes."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConfigError(f"{shown(path.name)!r} is truncated: {len(head)} bytes, under the 8-byte safetensors header "
                              "length; copy the file again")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or n > size - 8:
            raise ConfigError(f"{shown(path.name)!r}: the safetensors header claims {n:,} bytes, "
                              f"{'over the 100 MB limit' if n > MAX_HEADER else f'more than the file holds ({size:,} bytes)'}"
                              "; the file is truncated or not safetensors, copy or convert it again")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    tensors = []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        shape, (begin, end) = [int(d) for d in t["shape"]], t["data_offsets"]
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= size - 8 - n):
            raise ValueError(f"tensor {shown(name)!r} lies outside the file")
        dt = str(t["dtype"])
        tensors.append(_tensor(name, shape, _ST_DTYPES.get(dt, _cap(dt).lower()), math.prod(shape), end - begin))
    return {"format": "safetensors", "bytes": size, "tensors": tensors}


def _gguf(path: Path) -> dict[str, Any]:
    """.gguf: gguf.GGUFReader (memory-mapped); llama.cpp's block types decoded from GGML_QUANT_SIZES."""
    import gguf

    reader = gguf.GGUFReader(path, "r")

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        if f is None or not f.data:
            return None
        value = f.parts[f.data[0]]
        if f.types and f.types[0] == gguf.GGUFValueType.STRING:
            return _cap(bytes(value[: MAX_NAME + 1]).decode("utf-8", errors="replace"))
        return int(value[0]) if value.dtype.kind in "iu" else None

    tensors = []
    for t in reader.tensors:
        qt = gguf.GGMLQuantizationType(t.tensor_type)
        block, per_block = gguf.GGML_QUANT_SIZES[qt]
        params, nbytes = int(t.n_elements), int(t.n_bytes)
        nominal = re.match(r"^(?:I?Q|TQ)(\d)", qt.name)
        bits = int(nominal.group(1)) if nominal else 4 if "FP4" in qt.name else per_block * 8 // block
        quant = {"block_size": block, "scale_bytes": max(0, nbytes - params * bits // 8)} if block > 1 else {}
        tensors.append(_tensor(t.name, [int(d) for d in reversed(t.shape)], qt.name, params, nbytes, **quant))
    info: dict[str, Any] = {"format": "gguf", "bytes": path.stat().st_size, "tensors": tensors,
                            "notes": ["shapes are outermost first (GGUF stores them innermost first)"]}
    code = field("general.file_type")
    if code is not None:
        try:
            kind = gguf.LlamaFileType(code).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            kind = f"unknown ({code})"
        measured = _bits_per_weight(sum(t["bytes"] for t in tensors), sum(t["params"] for t in tensors))
        info["file_type"] = {"code": code, "name": kind, "bits_per_weight": measured}  # the recipe; what the tensors hold
    for key in ("general.architecture", "general.name"):
        if (value := field(key)) is not None:
            info[key.split(".")[1]] = value
    return info


_READERS = {".tflite": _tflite, ".onnx": _onnx, ".safetensors": _safetensors, ".gguf": _gguf}
_FORMATS = ".onnx, .tflite, .safetensors or .gguf file, or an edgeq bundle folder"


def _file(path: Path) -> dict[str, Any]:
    name = shown(path.name or str(path))
    suffix = path.suffix.lower()
    if suffix in PICKLES:
        raise ConfigError(f"{name!r} is a pickle ({suffix}), which could run code when loaded; edgeq never loads one: "
                          "convert it to .safetensors (safetensors.torch.save_file) or .onnx and inspect that")
    if suffix not in _READERS:
        raise ConfigError(f"{name!r} is not a model file edgeq can inspect; pass a {_FORMATS}")
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ConfigError(f"{name!r} is not a regular file; pass a {_FORMATS}")
    try:
        info = _READERS[suffix](path)
    except _UNREADABLE as e:  # a damaged file may fail anywhere in a parser
        why = shown(str(e).splitlines()[0] if str(e).strip() else type(e).__name__, 200)
        raise ConfigError(f"{name!r} is not a readable {suffix[1:]} file ({why}); it may be truncated or damaged, "
                          "copy or export it again") from None
    return {"file": _cap(path.name), **info}


def _bundle(path: Path) -> dict[str, Any]:
    where = f"{shown(path.name or str(path))}/{MODEL_JSON}"
    if not os.path.lexists(path / MODEL_JSON):
        raise ConfigError(f"{shown(str(path))!r} is a folder without {MODEL_JSON}, not an edgeq bundle; pass a {_FORMATS}")
    model = load_json(inside(path, MODEL_JSON, f"the bundle's {MODEL_JSON}"), where)
    graphs = (model.get("graphs") or {"model": model}) if isinstance(model, dict) else None
    files = [g.get("file") for g in graphs.values() if isinstance(g, dict)] if isinstance(graphs, dict) else []
    if not files or not all(isinstance(f, str) and f.endswith(".tflite") for f in files):
        raise ConfigError(f"{where} lists no .tflite files; the bundle is damaged, rebuild it")
    parts = [_file(inside(path, f, f"{where} file")) for f in files]
    ops: Counter[tuple[str, str]] = Counter()
    for p in parts:
        ops.update(p["ops"])
    tensors = [{**t, "name": _cap(f"{p['file']}:{t['name']}")} for p in parts for t in p["tensors"]]
    return {"format": "edgeq bundle", "file": _cap(path.name), "bytes": sum(p["bytes"] for p in parts), "tensors": tensors,
            "ops": ops, "load_bytes": sum(p.get("load_bytes", 0) for p in parts),
            "notes": sorted({n for p in parts for n in p.get("notes", [])}),
            "files": [{"file": p["file"], "bytes": p["bytes"], "params": sum(t["params"] for t in p["tensors"])} for p in parts]}


def inspect_path(path: Path) -> dict[str, Any]:
    """A JSON-serialisable description of a model file or edgeq bundle folder: its bytes and weights by
    stored dtype, its tensors (largest first), its ops by dtype, its weights at every precision rung.
    A missing, unknown, damaged or refused file raises ConfigError with one line."""
    path = Path(path)
    if not os.path.exists(path):
        raise ConfigError(f"{shown(str(path))!r} does not exist; pass a {_FORMATS}")
    info = _bundle(path) if path.is_dir() else _file(path)
    tensors = sorted(info.pop("tensors"), key=lambda t: -t["bytes"])
    by_dtype: dict[str, dict[str, int]] = {}
    for t in tensors:
        t["bits_per_weight"] = _bits_per_weight(t["bytes"], t["params"])
        d = by_dtype.setdefault(t["dtype"], {"tensors": 0, "params": 0, "bytes": 0})
        d.update(tensors=d["tensors"] + 1, params=d["params"] + t["params"], bytes=d["bytes"] + t["bytes"])
    params, weight_bytes = sum(t["params"] for t in tensors), sum(t["bytes"] for t in tensors)
    rungs = [{**r, "scale_bytes": params * (float(r["bits_per_weight"]) % 1) / 8,  # int4: a float16 scale per block
              "ratio": float(r["bytes"]) / weight_bytes if weight_bytes else None} for r in (ladder(params) if params else [])]
    ops = info.pop("ops", None)
    out = {"format": info.pop("format"), "file": info.pop("file"), "bytes": info.pop("bytes"), "params": params,
           "weight_bytes": weight_bytes, "bits_per_weight": _bits_per_weight(weight_bytes, params),
           "by_dtype": dict(sorted(by_dtype.items(), key=lambda kv: -kv[1]["bytes"])),
           "tensors": tensors[:MAX_TENSORS], "tensors_left_out": max(0, len(tensors) - MAX_TENSORS),
           "ladder": rungs, "load_bytes": info.pop("load_bytes", weight_bytes), "notes": info.pop("notes", [])}
    if ops is not None:
        out["ops_by_dtype"] = {}
        for (group, op), n in sorted(ops.items()):
            out["ops_by_dtype"].setdefault(group, {})[op] = n
    return {**out, **info}


def _name(text: str, width: int) -> str:
    """A name escaped to fit ``width`` columns: its end kept, which tells tensors apart."""
    text = shown(text, 10 * width)
    return text if len(text) <= width else "..." + text[3 - width:]


def inspection_lines(info: dict[str, Any]) -> list[str]:
    """`edgeq inspect FILE`: the header, bytes by dtype, ops by dtype, the ladder, load memory, the notes
    and the largest tensors, in 100 columns; every name from the file escaped."""
    import textwrap

    wrap = textwrap.TextWrapper(98, initial_indent="  ", subsequent_indent="      ").wrap
    wb, n = info["weight_bytes"], sum(d["tensors"] for d in info["by_dtype"].values())
    where = f"in its {len(info['files'])} .tflite file(s)" if "files" in info else "on disk"
    lines = [f"{_name(info['file'], 60)}: {info['format']}, {size_text(info['bytes'])} {where}",
             f"  {info['params']:,} weights in {n:,} tensors: {size_text(wb)}, {info['bits_per_weight']:.3g} bits/weight "
             "(scales included)"]
    if "file_type" in info:
        ft = info["file_type"]
        lines.append(f"  file type {_name(ft['name'], 20)} (general.file_type {ft['code']}): {ft['bits_per_weight']:.3g} "
                     "bits/weight measured over its tensors")
    if meta := ", ".join(f"{k} '{_name(info[k], 40)}'" for k in ("architecture", "name") if k in info):
        lines.append(f"  {meta}")
    lines += ["bytes by dtype:", f"  {'dtype':<14}{'tensors':>9}{'weights':>16}{'bytes':>11}{'share':>8}"]
    lines += [f"  {_name(k, 14):<14}{d['tensors']:>9,}{d['params']:>16,}{size_text(d['bytes']):>11}"
              f"{d['bytes'] / wb if wb else 0:>8.1%}" for k, d in info["by_dtype"].items()]
    if "ops_by_dtype" in info:
        lines.append("ops by the dtypes they compute in:")
        for group, ops in info["ops_by_dtype"].items():
            lines += wrap(f"{_name(group, 60)}: " + ", ".join(f"{_name(op, 40)}({k})" for op, k in
                                                             sorted(ops.items(), key=lambda kv: -kv[1])))
    if info["ladder"]:
        lines.append("its weights at each precision (x: against the file's weight bytes; scales: their share):")
        lines += [f"  {r['alias']:<13} {r['name']:<26} {r['bits_per_weight']:>4g} bits/weight {size_text(r['bytes']):>9}"
                  f"  x{r['ratio'] or 0:<6.2f} scales {size_text(r['scale_bytes'])}" for r in info["ladder"]]
    lines.append(f"load memory: {size_text(info['load_bytes'])} for the weights (activations and runtime buffers come on top)")
    lines += [line for note in info["notes"] for line in textwrap.wrap(f"note: {note}", 100, subsequent_indent="      ")]
    if info["tensors"]:
        lines += ["largest tensors:", f"  {'name':<40} {'dtype':<10} {'shape':<20} {'bits/weight':>11} {'block':>6}"]
        lines += [f"  {_name(t['name'], 40):<40} {_name(t['dtype'], 10):<10} {_name('x'.join(map(str, t['shape'])), 20):<20} "
                  f"{t['bits_per_weight']:>11.3g} {t.get('block_size') or '':>6}" for t in info["tensors"][:10]]
        if (more := len(info["tensors"]) - 10 + info["tensors_left_out"]) > 0:
            lines.append(f"  ... and {more:,} more")
    return [line.rstrip() for line in lines]
