"""A user's TF SavedModel as untrusted input: every op it holds is checked before TensorFlow opens it.

A SavedModel is a program. ``tf.saved_model.load`` runs the functions it names as resource
initializers, and calling its serving signature runs the serving function: file ops (ReadFile,
WriteFile, MatchingFiles, ...), Python ops (PyFunc, EagerPyFunc) and the like would run on the CI
machine that builds the model. So ``saved_model.pb`` is parsed here first, without TensorFlow
(protobuf with a hand-declared subset of TensorFlow's schema, unknown fields skipped), and:

* the file is read once, with a size bound (the 2 GB protobuf limit), not following a symlink;
  bytes that do not parse as a SavedModel are refused;
* every node of every meta graph - the top-level graph and every function of its library - must
  run an op of ``ALLOWLIST``: math, array, neural-network, control-flow, variable, lookup-table
  and random ops that Keras and TensorFlow write into real models. A node may also call a function
  of the library (its op, or a ``func`` / ``list(func)`` attribute such as ``f``, ``then_branch``,
  ``body``); a function attribute naming something that is not in the library names an op
  (TensorFlow then runs that op alone) and is checked like one.
* one exception: ``tf.saved_model.save`` writes a checkpoint function pair (``_traced_save`` /
  ``_traced_restore``) that the saver_def's save and restore nodes call. ``tf.saved_model.load``
  restores variables from Python and never runs them (a TF1-style load runs the restore node, to
  read the variables folder). Checkpoint ops (``SAVE_OPS``: SaveV2, MergeV2Checkpoints, string
  ops; ``RESTORE_OPS``: RestoreV2) are allowed only in a function that:

  - the top-level save (or restore) node named by saver_def calls, and which nothing else names:
    no other node (its op, any function, string or nested attribute), no other function, no
    gradient entry, and not the object graph, the signatures or the collections (their bytes
    are searched for the name: a false match only makes the check stricter);
  - does not declare ``api_implements`` (Grappler may swap such a function in for another one);
  - is called by a save / restore node that no other node takes as an input and that the
    signatures, collections and object graph do not name (so that nothing that load or the
    serving signature runs can run it).

  Save ops only in the save node's function, restore ops only in the restore node's. Functions
  that function calls get no exception. Savers written at the top level of the graph (TF1's
  ``tf.compat.v1.train.Saver``) are not excepted: such models need ``--trust-model``.

``trust=True`` (``--trust-model``) skips the check.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from edgeq.errors import ModelError
from edgeq.inputs.shown import shown
from edgeq.onnx_files import MAX_PROTOBUF

__all__ = ["ALLOWLIST", "RESTORE_OPS", "SAVE_OPS", "check_saved_model", "parse_saved_model"]

ALLOWLIST = frozenset({
    # graph structure, calls and control flow (TF2 functional, TF1 loops)
    "Assert", "Case", "CheckNumerics", "Const", "EnsureShape", "Enter", "Exit", "Identity", "IdentityN", "If",
    "LoopCond", "Merge", "NextIteration", "NoOp", "PartitionedCall", "Placeholder", "PlaceholderWithDefault",
    "PreventGradient", "Snapshot", "StatefulPartitionedCall", "StatelessCase", "StatelessIf", "StatelessWhile",
    "StopGradient", "Switch", "While",
    # resource variables
    "AssignAddVariableOp", "AssignSubVariableOp", "AssignVariableOp", "DestroyResourceOp", "DisableCopyOnRead",
    "ReadVariableOp", "ResourceGather", "ResourceGatherNd", "VarHandleOp", "VarIsInitializedOp", "VariableShape",
    # in-memory lookup tables (StaticHashTable, StringLookup / IntegerLookup); not the ones reading text files
    "AnonymousHashTable", "AnonymousMutableHashTable", "HashTableV2", "InitializeTableV2", "LookupTableExportV2",
    "LookupTableFindV2", "LookupTableImportV2", "LookupTableInsertV2", "LookupTableRemoveV2", "LookupTableSizeV2",
    "MutableDenseHashTableV2", "MutableHashTableV2",
    # tensor lists and arrays (RNN loops)
    "EmptyTensorList", "TensorArrayCloseV3", "TensorArrayConcatV3", "TensorArrayGatherV3", "TensorArrayReadV3",
    "TensorArrayScatterV3", "TensorArraySizeV3", "TensorArraySplitV3", "TensorArrayV3", "TensorArrayWriteV3",
    "TensorListConcatV2", "TensorListElementShape", "TensorListFromTensor", "TensorListGather", "TensorListGetItem",
    "TensorListLength", "TensorListPopBack", "TensorListPushBack", "TensorListReserve", "TensorListResize",
    "TensorListScatterIntoExistingList", "TensorListSetItem", "TensorListSplit", "TensorListStack",
    # element-wise math and comparisons
    "Abs", "Acos", "Acosh", "Add", "AddN", "AddV2", "Asin", "Asinh", "Atan", "Atan2", "Atanh", "BiasAdd",
    "BiasAddV1", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "Ceil", "ClipByValue", "Cos", "Cosh", "Div", "DivNoNan",
    "Equal", "Erf", "Erfc", "Exp", "Expm1", "Floor", "FloorDiv", "FloorMod", "Greater", "GreaterEqual", "Invert",
    "IsFinite", "IsInf", "IsNan", "LeftShift", "Less", "LessEqual", "Lgamma", "Log", "Log1p", "LogicalAnd",
    "LogicalNot", "LogicalOr", "Maximum", "Minimum", "Mod", "Mul", "MulNoNan", "Neg", "NotEqual", "Pow", "RealDiv",
    "Reciprocal", "RightShift", "Rint", "Round", "Rsqrt", "Select", "SelectV2", "Sign", "Sin", "Sinh", "Sqrt",
    "Square", "SquaredDifference", "Sub", "Tan", "TruncateDiv", "TruncateMod", "Xdivy", "Xlog1py", "Xlogy",
    # activations
    "Elu", "LeakyRelu", "LogSoftmax", "Relu", "Relu6", "Selu", "Sigmoid", "Softmax", "Softplus", "Softsign", "Tanh",
    # reductions, scans, sorting
    "All", "Any", "ArgMax", "ArgMin", "Cumprod", "Cumsum", "CumulativeLogsumexp", "EuclideanNorm", "Max", "Mean",
    "Min", "Prod", "Sum", "TopKV2", "UnsortedSegmentMax", "UnsortedSegmentMin", "UnsortedSegmentProd",
    "UnsortedSegmentSum",
    # linear algebra
    "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum", "MatMul", "MatrixBandPart", "MatrixDiagPartV3",
    "MatrixDiagV3", "MatrixSetDiagV3",
    # neural-network layers (cuDNN RNN ops: tf_keras' GPU LSTM / GRU branches)
    "AvgPool", "AvgPool3D", "Conv2D", "Conv2DBackpropInput", "Conv3D", "Conv3DBackpropInputV2", "CudnnRNN",
    "CudnnRNNV2", "CudnnRNNV3", "DepthwiseConv2dNative", "DepthwiseConv2dNativeBackpropInput", "Dilation2D",
    "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "LRN", "MaxPool", "MaxPool3D", "MaxPoolV2",
    "MaxPoolWithArgmax",
    # gradients (training functions tf_keras saves beside the inference ones)
    "AvgPoolGrad", "BiasAddGrad", "BroadcastGradientArgs", "Conv2DBackpropFilter", "CudnnRNNBackprop",
    "CudnnRNNBackpropV2", "CudnnRNNBackpropV3", "DepthwiseConv2dNativeBackpropFilter", "EluGrad",
    "FusedBatchNormGradV3", "LeakyReluGrad", "MaxPoolGrad", "MaxPoolGradV2", "Relu6Grad", "ReluGrad",
    "RsqrtGrad", "SeluGrad", "SigmoidGrad", "SoftmaxCrossEntropyWithLogits", "SoftplusGrad", "SoftsignGrad",
    "SparseSoftmaxCrossEntropyWithLogits", "SqrtGrad", "StridedSliceGrad", "TanhGrad",
    # shapes and array manipulation
    "BatchToSpaceND", "Bitcast", "BroadcastArgs", "BroadcastTo", "Cast", "Concat", "ConcatOffset", "ConcatV2",
    "DepthToSpace", "ExpandDims", "ExtractImagePatches", "Fill", "Gather", "GatherNd", "GatherV2",
    "InvertPermutation", "LinSpace", "MirrorPad", "OneHot", "OnesLike", "Pack", "Pad", "PadV2", "Range", "Rank",
    "Reshape", "ReverseSequence", "ReverseV2", "Roll", "ScatterNd", "Shape", "ShapeN", "Size", "Slice",
    "SpaceToBatchND", "SpaceToDepth", "Split", "SplitV", "Squeeze", "StridedSlice", "TensorScatterAdd",
    "TensorScatterUpdate", "Tile", "Transpose", "Unique", "Unpack", "Where", "ZerosLike",
    # complex numbers and FFT (audio front ends)
    "Angle", "ComplexAbs", "Complex", "FFT", "IFFT", "IRFFT", "Imag", "RFFT", "Real",
    # images
    "CropAndResize", "ImageProjectiveTransformV2", "ImageProjectiveTransformV3", "NonMaxSuppressionV3",
    "NonMaxSuppressionV4", "NonMaxSuppressionV5", "ResizeArea", "ResizeBicubic", "ResizeBilinear",
    "ResizeNearestNeighbor",
    # random numbers (dropout, augmentation, sampling)
    "RandomStandardNormal", "RandomUniform", "RandomUniformInt", "RngReadAndSkip", "StatelessRandomGetAlg",
    "StatelessRandomGetKeyCounter", "StatelessRandomGetKeyCounterAlg", "StatelessRandomNormal",
    "StatelessRandomNormalV2", "StatelessRandomUniform", "StatelessRandomUniformIntV2", "StatelessRandomUniformV2",
    "StatelessTruncatedNormal", "StatelessTruncatedNormalV2", "TruncatedNormal",
    # quantization-aware training
    "FakeQuantWithMinMaxArgs", "FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxVarsPerChannel",
    "QuantizeAndDequantizeV2", "QuantizeAndDequantizeV3", "QuantizeAndDequantizeV4",
})

# String formatting of checkpoint file names: no file access, but only the checkpoint functions use them.
_CHECKPOINT_NAMES = frozenset({"ShardedFilename", "StaticRegexFullMatch", "StringJoin"})
# Only in the function the saver_def's save node alone calls: SaveV2 writes files, MergeV2Checkpoints deletes some.
SAVE_OPS = frozenset({"MergeV2Checkpoints", "SaveV2"}) | _CHECKPOINT_NAMES
# Only in the function the saver_def's restore node alone calls: reads the checkpoint it is given.
RESTORE_OPS = frozenset({"RestoreV2"}) | _CHECKPOINT_NAMES

_NAME_CHARS = 80  # of a name shown in a message


def _show(name: str) -> str:
    """A name from the file, quoted, as text (escaped, cut at _NAME_CHARS)."""
    return repr(shown(name, _NAME_CHARS))


@cache
def _classes() -> dict[str, Any]:
    """Message classes for the subset of TensorFlow's schema the check reads (field numbers from
    tensorflow/core/protobuf/saved_model.proto, meta_graph.proto, saver.proto and
    tensorflow/core/framework/graph.proto, node_def.proto, function.proto, op_def.proto,
    attr_value.proto). Maps are declared as repeated entry messages (the same bytes). The object
    graph, signatures and collections are kept as raw bytes, searched for names."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto  # noqa: N806  (a class, named as one)
    f = descriptor_pb2.FileDescriptorProto(name="edgeq_saved_model_subset.proto", package="edgeq_tf", syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = f.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            field = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = f".edgeq_tf.{type_name}"

    one, many = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg, string, raw = F.TYPE_MESSAGE, F.TYPE_STRING, F.TYPE_BYTES
    message("SavedModel", ("meta_graphs", 2, msg, many, "MetaGraphDef"))
    message("MetaGraphDef", ("graph_def", 2, msg, one, "GraphDef"), ("saver_def", 3, msg, one, "SaverDef"),
            ("collection_def", 4, raw, many, ""), ("signature_def", 5, raw, many, ""),
            ("object_graph_def", 7, raw, one, ""))
    message("SaverDef", ("filename_tensor_name", 1, string, one, ""), ("save_tensor_name", 2, string, one, ""),
            ("restore_op_name", 3, string, one, ""))
    message("GraphDef", ("node", 1, msg, many, "NodeDef"), ("library", 2, msg, one, "FunctionDefLibrary"))
    message("NodeDef", ("name", 1, string, one, ""), ("op", 2, string, one, ""), ("input", 3, string, many, ""),
            ("attr", 5, msg, many, "AttrEntry"))
    message("AttrEntry", ("key", 1, string, one, ""), ("value", 2, msg, one, "AttrValue"))
    message("AttrValue", ("list", 1, msg, one, "ListValue"), ("s", 2, raw, one, ""), ("func", 10, msg, one, "NameAttrList"))
    message("ListValue", ("s", 2, raw, many, ""), ("func", 9, msg, many, "NameAttrList"))
    message("NameAttrList", ("name", 1, string, one, ""), ("attr", 2, msg, many, "AttrEntry"))
    message("FunctionDefLibrary", ("function", 1, msg, many, "FunctionDef"), ("gradient", 2, msg, many, "GradientDef"))
    message("FunctionDef", ("signature", 1, msg, one, "OpDef"), ("node_def", 3, msg, many, "NodeDef"),
            ("attr", 5, msg, many, "AttrEntry"))
    message("OpDef", ("name", 1, string, one, ""))
    message("GradientDef", ("function_name", 1, string, one, ""), ("gradient_func", 2, string, one, ""))
    pool = descriptor_pool.DescriptorPool()  # its own pool, apart from TensorFlow's types if they are loaded
    pool.Add(f)
    return {"SavedModel": message_factory.GetMessageClass(pool.FindMessageTypeByName("edgeq_tf.SavedModel"))}


def parse_saved_model(data: bytes, where: str) -> Any:
    """``data`` (the bytes of saved_model.pb) as the declared subset; ModelError if they do not parse."""
    from google.protobuf.message import DecodeError

    model = _classes()["SavedModel"]()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:  # RuntimeError: upb's recursion limit
        raise ModelError(f"{where} is not a readable SavedModel ({type(e).__name__}); save it again with "
                         "tf.saved_model.save") from e
    if not model.meta_graphs:
        raise ModelError(f"{where} holds no MetaGraph, so it is not a SavedModel; save it with tf.saved_model.save")
    return model


def _read(path: Path, where: str) -> bytes:
    """The file's bytes, read once: not through a symlink, at most MAX_PROTOBUF bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise ModelError(f"{where} cannot be opened ({e.strerror}); a SavedModel must be plain files") from e
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_PROTOBUF:
            raise ModelError(f"{where} is {size} bytes, over the 2 GB protobuf limit; quantize a smaller model")
        data = fh.read(MAX_PROTOBUF + 1)
    if len(data) > MAX_PROTOBUF:  # grew while being read
        raise ModelError(f"{where} is over the 2 GB protobuf limit; quantize a smaller model")
    return data


@dataclass(frozen=True)
class _Use:
    """A node's op (or an op a function attribute names) in ``unit``: "the graph" or a function's name."""

    unit: str | None  # None: the top-level graph
    node: str
    op: str


def _attr_names(value: Any) -> Iterator[tuple[str, bool]]:
    """(name, is_function) for every function an attribute names, and every string it holds
    (a string may name a function too, e.g. tf_keras' backward_function_name), nested ones included."""
    if value.HasField("func"):
        yield value.func.name, True
        for entry in value.func.attr:
            yield from _attr_names(entry.value)
    for func in value.list.func:
        yield func.name, True
        for entry in func.attr:
            yield from _attr_names(entry.value)
    for s in (value.s, *value.list.s):
        if s:
            yield s.decode("utf-8", "replace"), False


def _check_meta_graph(meta: Any, where: str) -> None:
    library = {fn.signature.name: fn for fn in meta.graph_def.library.function}
    refs: dict[str, list[tuple[str | None, str]]] = {}  # function -> (unit, node) naming it
    uses: list[_Use] = []

    def visit(unit: str | None, node: Any) -> None:
        if node.op in library:
            refs.setdefault(node.op, []).append((unit, node.name))
        else:
            uses.append(_Use(unit, node.name, node.op))
        for entry in node.attr:
            for name, is_func in _attr_names(entry.value):
                if name in library:
                    refs.setdefault(name, []).append((unit, node.name))
                elif is_func:  # TensorFlow runs a primitive op named by a function attribute
                    uses.append(_Use(unit, node.name, name))

    for node in meta.graph_def.node:
        visit(None, node)
    for name, fn in library.items():
        for node in fn.node_def:
            visit(name, node)
        for entry in fn.attr:
            for ref, _ in _attr_names(entry.value):
                if ref in library:
                    refs.setdefault(ref, []).append((name, ""))
    for grad in meta.graph_def.library.gradient:
        for ref in (grad.function_name, grad.gradient_func):
            refs.setdefault(ref, []).append(("gradient", ""))
        if grad.gradient_func not in library:
            uses.append(_Use(None, f"gradient of {grad.function_name}", grad.gradient_func))

    extra = _checkpoint_functions(meta, library, refs)
    for use in uses:
        if use.op in ALLOWLIST or (use.unit is not None and use.op in extra.get(use.unit, ())):
            continue
        unit = "the graph" if use.unit is None else f"function {_show(use.unit)}"
        why = ("a checkpoint op, which edgeq allows only in the save and restore functions that the saver alone calls"
               if use.op in SAVE_OPS | RESTORE_OPS else
               "which is not one of the math ops edgeq lets a SavedModel run (file, process and Python ops run when "
               "TensorFlow loads or calls the model)")
        raise ModelError(f"{where}: {unit} runs op {_show(use.op)} (node {_show(use.node)}), {why}; remove it, "
                         "or pass --trust-model if you trust this file")


def _checkpoint_functions(meta: Any, library: dict[str, Any],
                          refs: dict[str, list[tuple[str | None, str]]]) -> dict[str, frozenset[str]]:
    """The functions that may run checkpoint ops, each with the ops it may run (the module's rules)."""
    elsewhere = b"\0".join([meta.object_graph_def, *meta.signature_def, *meta.collection_def])
    saver = meta.saver_def
    nodes: dict[str, list[Any]] = {}
    for node in meta.graph_def.node:
        nodes.setdefault(node.name, []).append(node)
    consumed = {i.lstrip("^").partition(":")[0] for n in meta.graph_def.node for i in n.input}  # "^n", "n:0"
    out: dict[str, frozenset[str]] = {}
    for tensor, ops in ((saver.save_tensor_name, SAVE_OPS), (saver.restore_op_name, RESTORE_OPS)):
        name = tensor.lstrip("^").partition(":")[0]
        if not name or len(nodes.get(name, [])) != 1 or name in consumed or name.encode() in elsewhere:
            continue
        for entry in nodes[name][0].attr:
            for fname, is_func in _attr_names(entry.value):
                fn = library.get(fname)
                if (is_func and fn is not None and refs.get(fname) == [(None, name)]
                        and fname.encode() not in elsewhere
                        and not any(a.key == "api_implements" for a in fn.attr)):
                    out[fname] = ops
    return out


def check_saved_model(folder: Path, trust: bool) -> None:
    """ModelError if ``folder/saved_model.pb`` does not parse, or runs an op outside the allowlist
    beyond the checkpoint exception (see the module's rules); nothing if ``trust``."""
    if trust:
        return
    where = f"{folder.name}/saved_model.pb"
    model = parse_saved_model(_read(folder / "saved_model.pb", where), where)
    for meta in model.meta_graphs:
        _check_meta_graph(meta, where)
