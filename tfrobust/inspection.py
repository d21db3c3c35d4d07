"""Inspecting an untrusted model before anything in it runs.

A SavedModel is a program: `tf.saved_model.load` already runs parts of it (a restored resource's
`_initialize` function, a saveable's restore function, a TF1 graph's restore and init ops), and calling a
signature runs its graph. A graph can read, write and list files (`ReadFile`, `WriteFile`,
`MatchingFiles`, the `tf.io` readers, `tf.data`), run Python callbacks registered in the loading
process (`PyFunc`, `EagerPyFunc`), talk to other machines (`Send`/`Recv`, collectives, `RemoteCall`) or
end the process (`Abort`). `inspect_saved_model` reads `saved_model.pb` with TensorFlow's own parser
(`loader_impl.parse_saved_model`, the one `tf.saved_model.load` uses) without loading or executing it,
and checks every op of every graph node and every function in the graph's function library against an
allow-list of what a classifier's inference graph needs. Unknown ops are refused too (a custom op, an
op newer than this list), so the list fails closed.

What is checked. Every MetaGraph; in each, every node of `graph_def` and every `FunctionDef` of
`graph_def.library`: the functions called by name from nodes (`StatefulPartitionedCall`'s `f`, `If`'s
branches, `While`'s `cond`/`body`, `Case`'s `branches`, a node whose op is a function name) and also
every function that nothing calls (gradient functions of `tf.custom_gradient`, which attacks run when
they differentiate the model; functions the object graph restores by name). A call by name to a
function that the file does not define is refused as well: it would run a function of the loading
process's own runtime library. Attributes are not inspected beyond the function names they carry: no
allowed op takes a path or an address.

The saver exception. A SavedModel's graph carries the functions of its own `tf.train.Checkpoint` saver
(TF2: `__inference__traced_save_N` / `__inference__traced_restore_N`, called by the graph nodes that
`MetaGraphDef.saver_def` names; TF1: the `save/...` nodes), which use checkpoint I/O ops (`SaveV2`,
`RestoreV2`, `MergeV2Checkpoints`, `ShardedFilename`, `StringJoin`, ...). The rule:

- a node or function reachable *only* from the saver's restore op (`saver_def.restore_op_name`) may use
  the checkpoint-read ops (`RestoreV2` and its older forms); TF Serving and the TF1 loader run it;
- one reachable *only* from the save op (`saver_def.save_tensor_name`) may use the checkpoint-write ops
  too (`SaveV2`, `MergeV2Checkpoints`, ...); nothing in tfrobust runs it;
- everything else ("other") is held to the inference allow-list: every node not in the saver's closure,
  everything such a node reaches (its inputs, and the functions it calls, transitively), and every
  library function the saver does not reach. So a checkpoint op inside a serving function, a restored
  concrete function or a gradient function is refused, even though the same op is legitimate in the
  saver. TF2's `tf.saved_model.load` restores variables with its own Python-built `RestoreV2`, not with
  the graph's saver.

Reachability for graph nodes follows inputs backwards (data and control inputs); a node or function in
both the save and the restore closure is held to the restore rule.

How the allow-list is derived. The op sets of these SavedModels (every op that appears anywhere in them,
saver included), exported with TensorFlow 2.21 / Keras 3.15, are all covered:
tfrobust's `export_network` of `wrn-10-1` and `preact-resnet-18`; `tfrobust import` of the reference
PyTorch `wrn-16-2` and `preact-resnet-18`; `keras.applications` MobileNetV2, MobileNetV3Small,
ResNet50V2, EfficientNetB0, DenseNet121, ConvNeXtTiny, InceptionV3 and VGG16, each exported with both
`model.export` and `tf.saved_model.save`; a small ViT of Keras layers (Rescaling, Resizing, RandomFlip,
MultiHeadAttention, LayerNormalization, GELU, Dropout) exported with `model.export`; a `tf.Module` using
`tf.nn`, `tf.cond` and `tf.while_loop` saved with `tf.saved_model.save`; and a TF1 graph saved with
`tf.compat.v1.saved_model.Builder`. Around those ops the list adds, by name, the rest of the same
harmless categories (elementwise math, activations, convolutions and pooling, reductions, array and
shape manipulation, image resizing and colour ops, in-memory random numbers, variables, function calls
and control flow, tensor lists and arrays, fake quantisation, and the gradient ops that saved training
functions contain). None of them reads or writes outside the process's memory.

`.keras` files (`inspect_keras_file`). `keras.saving.load_model(..., safe_mode=True)` refuses Python
lambdas; recent Keras versions also refuse `TFSMLayer` (which loads a SavedModel from a path in the
config) and non-modelling functions named in a config (`keras.utils.get_file`,
`keras.config.enable_unsafe_deserialization`, `keras.models.load_model`), but tfrobust accepts Keras
>= 3.10, and the older of those versions lack these checks. `inspect_keras_file` reads the archive's
`config.json` without deserialising anything and refuses, naming the layer: a Python lambda
(`__lambda__`), a `TFSMLayer` or `TorchModuleWrapper` (a pickled PyTorch module), a function from a Keras
module other than the modelling ones (activations, ops, losses, metrics, initializers, regularizers,
constraints, random), and an unknown custom object (a class or function that is neither Keras's own nor
registered in this process with `keras.saving.register_keras_serializable`; Keras could not build it
anyway, and says so in a long multi-line message). The weights file is HDF5 data, read by Keras.

Overriding. `tfrobust.export.load_model(path, trust_model=True)` (the CLI's `--trust-model`) skips
these checks and loads a `.keras` file with `safe_mode=False`; the refusal messages say so.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

from tfrobust.errors import UserError

TRUST_HINT = "pass --trust-model (Python: trust_model=True) to run it anyway"

# --------------------------------------------------------------------------------------------------
# The allow-list: what a classifier's inference graph needs, by category.

_GRAPH_AND_CALLS = {
    "Const",
    "Placeholder",
    "PlaceholderWithDefault",
    "Identity",
    "IdentityN",
    "NoOp",
    "StopGradient",
    "PreventGradient",
    "Snapshot",
    "EnsureShape",
    "ControlTrigger",
    "Assert",
    "CheckNumerics",
    "CheckNumericsV2",
    # Function calls and functional control flow (the called functions are checked too).
    "PartitionedCall",
    "StatefulPartitionedCall",
    "If",
    "StatelessIf",
    "While",
    "StatelessWhile",
    "Case",
    "StatelessCase",
    # TF1 control flow.
    "Switch",
    "RefSwitch",
    "Merge",
    "RefMerge",
    "Enter",
    "RefEnter",
    "Exit",
    "RefExit",
    "NextIteration",
    "RefNextIteration",
    "LoopCond",
    # In-memory tensor lists and arrays (while loops over tensors).
    "EmptyTensorList",
    "TensorListReserve",
    "TensorListFromTensor",
    "TensorListStack",
    "TensorListGetItem",
    "TensorListSetItem",
    "TensorListPushBack",
    "TensorListPopBack",
    "TensorListLength",
    "TensorListElementShape",
    "TensorListGather",
    "TensorListScatterIntoExistingList",
    "TensorListConcatV2",
    "TensorListSplit",
    "TensorListResize",
    "TensorArrayV3",
    "TensorArrayReadV3",
    "TensorArrayWriteV3",
    "TensorArrayGatherV3",
    "TensorArrayScatterV3",
    "TensorArraySizeV3",
    "TensorArrayCloseV3",
    "TensorArrayConcatV3",
    "TensorArraySplitV3",
    "TensorArrayGradV3",
}
_VARIABLES = {
    "VarHandleOp",
    "ReadVariableOp",
    "AssignVariableOp",
    "AssignAddVariableOp",
    "AssignSubVariableOp",
    "VarIsInitializedOp",
    "VariableShape",
    "ResourceGather",
    "ResourceGatherNd",
    # TF1 reference variables.
    "VariableV2",
    "Variable",
    "Assign",
    "AssignAdd",
    "AssignSub",
    "IsVariableInitialized",
}
_MATH = {
    "Abs",
    "Add",
    "AddV2",
    "AddN",
    "Sub",
    "Mul",
    "MulNoNan",
    "Div",
    "RealDiv",
    "DivNoNan",
    "FloorDiv",
    "FloorMod",
    "TruncateDiv",
    "TruncateMod",
    "Mod",
    "Neg",
    "Reciprocal",
    "Inv",
    "Square",
    "SquaredDifference",
    "Sqrt",
    "Rsqrt",
    "Pow",
    "Exp",
    "Expm1",
    "Log",
    "Log1p",
    "Sin",
    "Cos",
    "Tan",
    "Asin",
    "Acos",
    "Atan",
    "Atan2",
    "Sinh",
    "Cosh",
    "Tanh",
    "Asinh",
    "Acosh",
    "Atanh",
    "Sigmoid",
    "Erf",
    "Erfc",
    "Erfinv",
    "Ndtri",
    "Lgamma",
    "Digamma",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
    "Rint",
    "Maximum",
    "Minimum",
    "ClipByValue",
    "IsNan",
    "IsInf",
    "IsFinite",
    "Real",
    "Imag",
    "Complex",
    "ComplexAbs",
    "Conj",
    "Angle",
    "Xlogy",
    "Xdivy",
    "Xlog1py",
    "Cumsum",
    "Cumprod",
    "CumulativeLogsumexp",
    # Comparison, logic and selection.
    "Equal",
    "NotEqual",
    "Less",
    "LessEqual",
    "Greater",
    "GreaterEqual",
    "ApproximateEqual",
    "LogicalAnd",
    "LogicalOr",
    "LogicalNot",
    "Select",
    "SelectV2",
    "Where",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "Invert",
    "LeftShift",
    "RightShift",
    # Reductions.
    "Sum",
    "Mean",
    "Max",
    "Min",
    "Prod",
    "All",
    "Any",
    "ArgMax",
    "ArgMin",
    "EuclideanNorm",
    "TopKV2",
    "InTopKV2",
    "SegmentSum",
    "SegmentMean",
    "SegmentMax",
    "SegmentMin",
    "UnsortedSegmentSum",
    "UnsortedSegmentMax",
    "UnsortedSegmentMin",
    "UnsortedSegmentProd",
    # Linear algebra.
    "MatMul",
    "BatchMatMul",
    "BatchMatMulV2",
    "BatchMatMulV3",
    "Einsum",
    "MatrixBandPart",
    "MatrixDiagV3",
    "MatrixDiagPartV3",
    "MatrixSetDiagV3",
    "Diag",
    "DiagPart",
}
_NN = {
    "BiasAdd",
    "BiasAddV1",
    "Conv2D",
    "Conv3D",
    "DepthwiseConv2dNative",
    "Conv2DBackpropInput",
    "Conv3DBackpropInputV2",
    "MaxPool",
    "MaxPoolV2",
    "MaxPool3D",
    "AvgPool",
    "AvgPool3D",
    "FusedBatchNorm",
    "FusedBatchNormV2",
    "FusedBatchNormV3",
    "BatchNormWithGlobalNormalization",
    "LRN",
    "Dilation2D",
    "Relu",
    "Relu6",
    "Elu",
    "Selu",
    "LeakyRelu",
    "Softplus",
    "Softsign",
    "Softmax",
    "LogSoftmax",
    "L2Loss",
    "FakeQuantWithMinMaxArgs",
    "FakeQuantWithMinMaxVars",
    "FakeQuantWithMinMaxVarsPerChannel",
    "QuantizeAndDequantizeV2",
    "QuantizeAndDequantizeV3",
    "QuantizeAndDequantizeV4",
    # Gradient ops, in saved training functions and registered gradients.
    "BroadcastGradientArgs",
    "ReluGrad",
    "Relu6Grad",
    "EluGrad",
    "SeluGrad",
    "LeakyReluGrad",
    "SoftplusGrad",
    "SoftsignGrad",
    "SigmoidGrad",
    "TanhGrad",
    "RsqrtGrad",
    "SqrtGrad",
    "ReciprocalGrad",
    "BiasAddGrad",
    "Conv2DBackpropFilter",
    "Conv3DBackpropFilterV2",
    "DepthwiseConv2dNativeBackpropInput",
    "DepthwiseConv2dNativeBackpropFilter",
    "MaxPoolGrad",
    "MaxPoolGradV2",
    "MaxPoolGradGrad",
    "AvgPoolGrad",
    "FusedBatchNormGrad",
    "FusedBatchNormGradV2",
    "FusedBatchNormGradV3",
    "ResizeBilinearGrad",
    "ResizeNearestNeighborGrad",
    "StridedSliceGrad",
    "MirrorPadGrad",
}
_ARRAY = {
    "Reshape",
    "Transpose",
    "ConjugateTranspose",
    "ConcatV2",
    "Concat",
    "Pack",
    "Unpack",
    "Split",
    "SplitV",
    "Slice",
    "StridedSlice",
    "Gather",
    "GatherV2",
    "GatherNd",
    "ScatterNd",
    "TensorScatterUpdate",
    "TensorScatterAdd",
    "TensorScatterSub",
    "TensorScatterMax",
    "TensorScatterMin",
    "Pad",
    "PadV2",
    "MirrorPad",
    "Tile",
    "ExpandDims",
    "Squeeze",
    "Shape",
    "ShapeN",
    "Size",
    "Rank",
    "Fill",
    "ZerosLike",
    "OnesLike",
    "Cast",
    "Bitcast",
    "BroadcastTo",
    "BroadcastArgs",
    "Range",
    "LinSpace",
    "OneHot",
    "Reverse",
    "ReverseV2",
    "ReverseSequence",
    "Roll",
    "SpaceToDepth",
    "DepthToSpace",
    "SpaceToBatchND",
    "BatchToSpaceND",
    "ExtractImagePatches",
    "ExtractVolumePatches",
    "InvertPermutation",
    "Unique",
    "UnravelIndex",
}
_IMAGE = {
    "ResizeBilinear",
    "ResizeNearestNeighbor",
    "ResizeBicubic",
    "ResizeArea",
    "ScaleAndTranslate",
    "CropAndResize",
    "AdjustContrastv2",
    "AdjustHue",
    "AdjustSaturation",
    "RGBToHSV",
    "HSVToRGB",
    "ImageProjectiveTransformV2",
    "ImageProjectiveTransformV3",
}
_RANDOM = {  # in-memory generators (dropout, random augmentation layers in training traces)
    "RandomUniform",
    "RandomUniformInt",
    "RandomStandardNormal",
    "TruncatedNormal",
    "Multinomial",
    "RandomShuffle",
    "StatelessRandomUniform",
    "StatelessRandomNormal",
    "StatelessTruncatedNormal",
    "StatelessRandomUniformInt",
    "StatelessMultinomial",
    "StatelessRandomUniformV2",
    "StatelessRandomNormalV2",
    "StatelessTruncatedNormalV2",
    "StatelessRandomUniformIntV2",
    "StatelessRandomUniformFullIntV2",
    "StatelessRandomGetKeyCounter",
    "StatelessRandomGetKeyCounterAlg",
    "StatelessRandomGetAlg",
    "RngReadAndSkip",
    "RngSkip",
    "StatefulUniform",
    "StatefulUniformInt",
    "StatefulUniformFullInt",
    "StatefulStandardNormalV2",
    "StatefulTruncatedNormal",
}

INFERENCE_OPS: frozenset[str] = frozenset(_GRAPH_AND_CALLS | _VARIABLES | _MATH | _NN | _ARRAY | _IMAGE | _RANDOM)
"""Ops allowed anywhere: every op of the models listed in the module docstring, and their categories."""

CHECKPOINT_READ_OPS: frozenset[str] = frozenset({"RestoreV2", "Restore", "RestoreSlice"})
"""Allowed only in nodes/functions that only the saver's restore op reaches."""

CHECKPOINT_WRITE_OPS: frozenset[str] = frozenset(
    {
        "SaveV2",
        "Save",
        "SaveSlices",
        "MergeV2Checkpoints",
        "ShardedFilename",
        "ShardedFilespec",
        "StringJoin",
        "StaticRegexFullMatch",
        "DisableCopyOnRead",
    }
)
"""Allowed (with the read ops) only in nodes/functions that only the saver's save op reaches."""

# --------------------------------------------------------------------------------------------------
# Categories of refused ops, for the message only (anything outside the allow-list is refused).

_REFUSED_CATEGORIES: dict[str, frozenset[str]] = {
    "file system": frozenset(
        {
            "ReadFile",
            "WriteFile",
            "MatchingFiles",
            "ImmutableConst",
            "PrintV2",
            "InitializeTableFromTextFile",
            "InitializeTableFromTextFileV2",
            "LoadAndRemapMatrix",
            "GenerateVocabRemapping",
            "RecordInput",
            "DecodeProtoV2",
            "CreateSummaryFileWriter",
            "CreateSummaryDbWriter",
            "SummaryWriter",
            "WriteSummary",
            "WriteScalarSummary",
            "WriteHistogramSummary",
            "WriteImageSummary",
            "WriteAudioSummary",
            "WriteGraphSummary",
            "WriteRawProtoSummary",
            "ImportEvent",
            "FlushSummaryWriter",
            "CloseSummaryWriter",
            "DebugIdentity",
            "DebugIdentityV2",
            "DebugIdentityV3",
            "DebugNanCount",
            "DebugNumericSummary",
            "DebugNumericSummaryV2",
            "FixedLengthRecordReader",
            "FixedLengthRecordReaderV2",
            "TFRecordReader",
            "TFRecordReaderV2",
            "TextLineReader",
            "TextLineReaderV2",
            "WholeFileReader",
            "WholeFileReaderV2",
            "IdentityReader",
            "IdentityReaderV2",
            "LMDBReader",
            "ReaderRead",
            "ReaderReadV2",
            "ReaderReadUpTo",
            "ReaderReadUpToV2",
            "ReaderRestoreState",
            "ReaderRestoreStateV2",
            "ReaderSerializeState",
            "ReaderSerializeStateV2",
            "ReaderReset",
            "ReaderResetV2",
            "ReaderNumRecordsProduced",
            "ReaderNumRecordsProducedV2",
            "ReaderNumWorkUnitsCompleted",
            "ReaderNumWorkUnitsCompletedV2",
        }
    ),
    "checkpoint I/O outside the saver": CHECKPOINT_READ_OPS | CHECKPOINT_WRITE_OPS,
    "Python": frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"}),
    "network": frozenset(
        {
            "Send",
            "Recv",
            "_Send",
            "_Recv",
            "_HostSend",
            "_HostRecv",
            "RemoteCall",
            "CollectiveReduce",
            "CollectiveReduceV2",
            "CollectiveReduceV3",
            "CollectiveGather",
            "CollectiveGatherV2",
            "CollectiveBcastSend",
            "CollectiveBcastRecv",
            "CollectiveBcastSendV2",
            "CollectiveBcastRecvV2",
            "CollectiveAllToAllV2",
            "CollectiveAllToAllV3",
            "CollectivePermute",
            "CollectiveAssignGroupV2",
            "CollectiveInitializeCommunicator",
            "NcclAllReduce",
            "NcclReduce",
            "NcclBroadcast",
            "RpcCall",
            "RpcCheckStatus",
            "RpcClient",
            "RpcGetValue",
            "RpcServer",
            "RpcServerRegister",
            "RpcServerStart",
            "RegisterDataset",
            "RegisterDatasetV2",
            "GcsConfigureBlockCache",
            "GcsConfigureCredentials",
            "BigQueryReader",
        }
    ),
    "process": frozenset({"Abort"}),
}


_NOT_LISTED = "not on the allow-list of inference ops"


def refusal_category(op: str) -> str:
    """Why `op` is refused, in a few words: a known category, or not on the allow-list."""
    for category, ops in _REFUSED_CATEGORIES.items():
        if op in ops:
            return category
    if "Dataset" in op or op.startswith(("Iterator", "AnonymousIterator", "MultiDeviceIterator")):
        return "tf.data input pipeline: reads files"
    return _NOT_LISTED


# --------------------------------------------------------------------------------------------------
# SavedModel


def inspect_saved_model(directory: str) -> None:
    """Refuses (UserError, one line) a SavedModel whose graph uses an op outside the allow-list.

    Reads `saved_model.pb` (or `.pbtxt`) without loading or running anything; see the module docstring
    for what is checked and the saver rule.
    """
    proto = _parse_saved_model(directory)
    findings = [finding for meta_graph in proto.meta_graphs for finding in _refused_ops(meta_graph)]
    if findings:
        # A known-dangerous op says more than an op that is merely not on the list.
        where, op, why = min(findings, key=lambda finding: finding[2] == _NOT_LISTED)
        raise UserError(f"refusing to run model {directory}: {where} uses op {op} ({why}); {TRUST_HINT}")


def saved_model_ops(directory: str) -> dict[str, set[str]]:
    """{"graph" or a function's name: the ops it uses}, over every MetaGraph (the allow-list's evidence)."""
    proto = _parse_saved_model(directory)
    ops: dict[str, set[str]] = {}
    for meta_graph in proto.meta_graphs:
        ops.setdefault("graph", set()).update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.setdefault(function.signature.name, set()).update(node.op for node in function.node_def)
    return ops


def _printable(text: str) -> str:
    """`text`, or its repr where it holds a newline or other control character (the message is one line)."""
    return text if text.isprintable() else repr(text)


def _parse_saved_model(directory: str):
    from tensorflow.python.saved_model import loader_impl

    try:
        return loader_impl.parse_saved_model(directory)
    except (OSError, ValueError) as error:  # missing or unparsable: IOError; a .pbtxt not in UTF-8: ValueError
        raise UserError(f"cannot load SavedModel {directory}: {type(error).__name__}: {str(error)[:200]}") from None


def _called_functions(node, library: set[str]) -> Iterator[str]:
    """The library functions `node` (a NodeDef) calls: a function-valued op, or function-valued attrs."""
    if node.op in library:
        yield node.op
    yield from (name for name in _attr_functions(node.attr.values()) if name in library)


def _attr_functions(values: Iterable[Any]) -> Iterator[str]:
    """Every function name in these AttrValues (`func`, `list(func)`, and the attrs of those functions)."""
    for value in values:
        kind = value.WhichOneof("value")
        if kind == "func":
            functions = [value.func]
        elif kind == "list":
            functions = list(value.list.func)
        else:
            continue
        for function in functions:
            yield function.name
            yield from _attr_functions(function.attr.values())


def _tensor_node(name: str) -> str:
    """'^name', 'name:0' or 'name' -> 'name'."""
    return name.lstrip("^").split(":")[0]


def _closure(start: Iterable[str], edges: dict[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    stack = [s for s in start if s in edges]
    while stack:
        item = stack.pop()
        if item in seen:
            continue
        seen.add(item)
        stack.extend(e for e in edges[item] if e in edges and e not in seen)
    return seen


def _refused_ops(meta_graph) -> Iterator[tuple[str, str, str]]:
    """("function NAME" or "graph node NAME", op, why) for every op its place does not allow, in file order."""
    graph = meta_graph.graph_def
    functions = {f.signature.name: f for f in graph.library.function}
    names = set(functions)
    nodes = {node.name: node for node in graph.node}
    node_inputs = {name: [_tensor_node(i) for i in node.input] for name, node in nodes.items()}
    calls = {
        name: sorted({f for n in function.node_def for f in _called_functions(n, names)})
        for name, function in functions.items()
    }

    saver = meta_graph.saver_def
    save_root = _tensor_node(saver.save_tensor_name) if saver.save_tensor_name else ""
    restore_root = _tensor_node(saver.restore_op_name) if saver.restore_op_name else ""
    save_nodes = _closure([save_root], node_inputs)
    restore_nodes = _closure([restore_root], node_inputs)
    saver_nodes = save_nodes | restore_nodes
    other_nodes = _closure([n for n in nodes if n not in saver_nodes], node_inputs)
    save_nodes -= other_nodes
    restore_nodes -= other_nodes

    def called_by(node_names: Iterable[str]) -> set[str]:
        direct = {f for n in node_names for f in _called_functions(nodes[n], names)}
        return _closure(direct, calls)

    save_functions = called_by(save_nodes)
    restore_functions = called_by(restore_nodes)
    other_functions = _closure(called_by(other_nodes) | (names - save_functions - restore_functions), calls)
    save_functions -= other_functions
    restore_functions -= other_functions

    def refusal(op: str, in_restore: bool, in_save: bool) -> str | None:
        if op in INFERENCE_OPS or op in names:
            return None
        if in_restore and op in CHECKPOINT_WRITE_OPS:
            return "checkpoint write reachable from the saver's restore op"
        if (in_restore or in_save) and op in CHECKPOINT_READ_OPS:
            return None
        if in_save and not in_restore and op in CHECKPOINT_WRITE_OPS:
            return None
        return refusal_category(op)

    def outside_calls(node) -> Iterator[str]:
        # A call by name to a function the file does not define would run one of the loading process's
        # own functions (its runtime library holds every tf.function it has traced).
        for called in _attr_functions(node.attr.values()):
            if called not in names:
                yield f"calls function {_printable(called)}, which the SavedModel does not define"

    for node in graph.node:
        why = refusal(node.op, node.name in restore_nodes, node.name in save_nodes)
        for reason in ([why] if why is not None else []) + list(outside_calls(node)):
            yield f"graph node {_printable(node.name)}", _printable(node.op), reason
    for name, function in functions.items():
        in_restore, in_save = name in restore_functions, name in save_functions
        for node in function.node_def:
            why = refusal(node.op, in_restore, in_save)
            for reason in ([why] if why is not None else []) + list(outside_calls(node)):
                yield f"function {_printable(name)}", _printable(node.op), reason


# --------------------------------------------------------------------------------------------------
# .keras files

# Keras modules whose functions a model config may name (an activation, a Lambda layer's function):
# pure tensor functions. Not keras.utils (get_file), keras.models / keras.saving (load_model),
# keras.config (enable_unsafe_deserialization), keras.backend, keras.preprocessing, ...
_KERAS_FUNCTION_MODULES = (
    "activations",
    "ops",
    "losses",
    "metrics",
    "initializers",
    "regularizers",
    "constraints",
    "random",
)
# Keras classes that carry code or load it from elsewhere.
_CODE_CARRYING_CLASSES = {
    "TFSMLayer": "is a TFSMLayer, which loads the SavedModel {filepath!r}",
    "TorchModuleWrapper": "is a TorchModuleWrapper, which unpickles a PyTorch module",
}
_KERAS_PACKAGES = ("keras", "keras_hub", "keras_cv", "keras_nlp")  # the packages Keras itself imports from
# Config entries that are data, not classes (keras.saving.serialization_lib's special cases).
_DATA_CLASS_NAMES = {
    "__keras_tensor__",
    "__tensor__",
    "__numpy__",
    "__bytes__",
    "__ellipsis__",
    "__slice__",
    "__typespec__",
}


def inspect_keras_file(path: str) -> None:
    """Refuses (UserError, one line) a `.keras` file holding code or objects that cannot be checked.

    Reads only the archive's `config.json`; see the module docstring for what is refused.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise UserError(
            f"cannot load {path}: not a .keras archive with a config.json ({type(error).__name__})"
        ) from None
    for layer, entry in _config_objects(config, layer=None):
        problem = _keras_problem(entry)
        if problem is None:
            continue
        reason, trust_helps = problem
        where = f"layer {layer!r}" if layer else "the model config"
        if trust_helps:
            raise UserError(f"refusing to load model {path}: {where} {reason}; {TRUST_HINT}")
        raise UserError(f"cannot load {path}: {where} {reason}")


def _config_objects(value: Any, layer: str | None) -> Iterator[tuple[str | None, dict]]:
    """Every serialised object (a dict with `class_name`) in a Keras config, with its enclosing layer."""
    if isinstance(value, dict):
        if "class_name" in value:
            inner = value.get("config")
            if isinstance(inner, dict) and isinstance(inner.get("name"), str):
                layer = inner["name"]
            yield layer, value
        for item in value.values():
            yield from _config_objects(item, layer)
    elif isinstance(value, list):
        for item in value:
            yield from _config_objects(item, layer)


def _keras_problem(entry: dict) -> tuple[str, bool] | None:
    """(what is wrong, whether --trust-model can load it anyway) for one serialised object, or None."""
    import keras

    class_name = entry.get("class_name")
    module = entry.get("module")
    registered = entry.get("registered_name")
    if not isinstance(class_name, str):
        return None
    if class_name == "__lambda__":
        return "holds a Python lambda (code that would run on load or call)", True
    if class_name in _DATA_CLASS_NAMES:
        return None
    if class_name == "function":
        name = entry.get("config")
        if isinstance(name, str) and keras.saving.get_registered_object(name) is not None:
            return None
        if isinstance(registered, str) and keras.saving.get_registered_object(registered) is not None:
            return None
        if module == "builtins":  # Keras resolves these names in its own activations/losses/metrics
            return None
        if isinstance(module, str) and module.split(".")[0] == "keras":
            if _is_keras_modelling_module(module):
                return None
            return f"names function {name!r} from module {module!r}, not a Keras modelling function", True
        return (
            f"names function {name!r} from module {module!r}, which is neither a Keras function nor registered "
            "in this process with keras.saving.register_keras_serializable"
        ), False
    if class_name in _CODE_CARRYING_CLASSES:
        inner = entry.get("config")
        filepath = inner.get("filepath") if isinstance(inner, dict) else None
        return _CODE_CARRYING_CLASSES[class_name].format(filepath=filepath), True
    for key in (registered, class_name):
        if isinstance(key, str) and keras.saving.get_registered_object(key) is not None:
            return None
    if isinstance(module, str) and module.split(".", 1)[0] in _KERAS_PACKAGES:
        return None
    return (
        f"uses class {class_name!r} (module {module!r}), which is neither a Keras class nor registered in "
        "this process with keras.saving.register_keras_serializable (import the code that registers it)"
    ), False


def _is_keras_modelling_module(module: str) -> bool:
    parts = module.split(".")
    if parts[0] != "keras":
        return False
    rest = parts[2:] if len(parts) > 1 and parts[1] == "src" else parts[1:]
    return bool(rest) and rest[0] in _KERAS_FUNCTION_MODULES
