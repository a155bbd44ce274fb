"""Which ops of a ``.tflite`` the mobile GPU and Core ML delegates take, from the file alone.

ai-edge-litert's offline GPU analyser reports every node as compatible (it never fills in
the incompatible list), so this module applies the rules itself, walking the flatbuffer:

* **GPU delegate** (Android OpenCL/OpenGL, iOS Metal): the op list and per-op constraints of
  LiteRT ``tflite/tools/versioning/gpu_compatibility.cc`` (``CheckGpuDelegateCompatibility``):
  no GATHER_ND, no SHAPE, GATHER only with 1-D int32 indices, STRIDED_SLICE without
  ellipsis/new-axis/shrink masks on 3-D/4-D input, SLICE on 3-D/4-D, reductions and MEAN
  with constant int32 axes, PAD with a 3x2/4x2 paddings tensor, softmax beta 1, no
  SIGN_BIT fused activation, ... Every op not in that list is unsupported.
* **Core ML delegate** (iOS): float models only (FP32/FP16), and the delegate's op list
  (TFLite ``coreml_delegate`` docs: Add, AveragePool2D, Concatenation, Conv2D,
  DepthwiseConv2D, FullyConnected, HardSwish, Logistic, MaxPool2D, MirrorPad, Mul, Pad/PadV2,
  Relu/ReluN1To1/Relu6, Reshape, ResizeBilinear, Softmax, Tanh, TransposeConv).

A delegate takes maximal runs of supported ops; the GPU delegate takes **one** partition by
default (``max_delegated_partitions = 1``), so one unsupported op in the middle leaves half
the graph on the CPU. The report says full / partial (how much the largest run covers) /
cpu-only (the largest run is under half the ops).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ffedge.errors import require

#: Ops with no extra constraint in gpu_compatibility.cc beyond being listed.
_GPU_PLAIN = {
    "ADD_N", "BATCH_MATMUL", "BITCAST", "CONCATENATION", "CUMSUM", "DENSIFY",
    "DEQUANTIZE", "DYNAMIC_UPDATE_SLICE", "EMBEDDING_LOOKUP", "HARD_SWISH", "LSTM",
    "PACK", "ONE_HOT", "QUANTIZE", "RELU_N1_TO_1", "PRELU", "RESHAPE", "SELECT",
    "SELECT_V2", "SPLIT", "SPLIT_V", "TILE", "TOPK_V2", "TRANSPOSE", "TRANSPOSE_CONV",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RELU", "RELU6", "LEAKY_RELU",
    "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
    "SOFTMAX", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "CAST", "ADD", "MUL", "GATHER",
    "STRIDED_SLICE", "SLICE", "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD",
    "REDUCE_ANY", "REDUCE_ALL", "PAD", "PADV2", "MIRROR_PAD", "REVERSE_V2",
    "STABLEHLO_BROADCAST_IN_DIM", "STABLEHLO_CBRT", "STABLEHLO_CLAMP", "CUSTOM",
}
_GPU_UNARY = {"ABS", "CEIL", "COS", "ELU", "EXP", "FLOOR", "GELU", "LOG", "LOGICAL_NOT",
              "LOGISTIC", "NEG", "ROUND", "RSQRT", "SIGN", "SIN", "SQRT", "SQUARE", "TANH"}
_GPU_BINARY = {"ATAN2", "DIV", "EQUAL", "FLOOR_DIV", "FLOOR_MOD", "GREATER", "GREATER_EQUAL",
               "LOGICAL_AND", "LOGICAL_OR", "LESS", "LESS_EQUAL", "MAXIMUM", "MINIMUM",
               "NOT_EQUAL", "POW", "RIGHT_SHIFT", "STABLEHLO_REMAINDER",
               "STABLEHLO_SHIFT_LEFT", "SQUARED_DIFFERENCE", "SUB"}
GPU_OPS = frozenset(_GPU_PLAIN | _GPU_UNARY | _GPU_BINARY)
COREML_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED", "HARD_SWISH", "LOGISTIC", "MAX_POOL_2D", "MIRROR_PAD", "MUL", "PAD",
    "PADV2", "RELU", "RELU_N1_TO_1", "RELU6", "RESHAPE", "RESIZE_BILINEAR", "SOFTMAX",
    "TANH", "TRANSPOSE_CONV"})
_GPU_CUSTOM = {"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D",
               "Resampler"}


@dataclass
class OpView:
    """What the rules need of one operator."""

    index: int
    name: str
    inputs: list[dict[str, Any]]  # {"dims", "type", "const"}; missing optional inputs left out
    outputs: list[dict[str, Any]]
    options: Any
    custom: str = ""


@dataclass
class DelegateReport:
    """Per delegate: the ops it refuses (index, op, reason) and how the graph splits."""

    delegate: str
    total_ops: int
    refused: list[tuple[int, str, str]] = field(default_factory=list)
    largest_run: int = 0
    partitions: int = 0

    @property
    def label(self) -> str:
        if not self.refused:
            return "full"
        return "partial" if self.largest_run * 2 >= self.total_ops else "cpu-only"

    @property
    def ok(self) -> bool:
        return not self.refused

    def offending(self) -> dict[str, str]:
        """Refused op -> first reason, with a count: ``{"GATHER_ND": "x2: not supported"}``."""
        counts = Counter(op for _, op, _ in self.refused)
        first: dict[str, str] = {}
        for _, op, reason in self.refused:
            first.setdefault(op, reason)
        return {op: f"x{counts[op]}: {first[op]}" for op in counts}

    def summary(self) -> str:
        name = {"gpu": "GPU delegate", "coreml": "Core ML delegate"}.get(self.delegate,
                                                                         self.delegate)
        if not self.refused:
            return f"{name}: full ({self.total_ops} ops)"
        whole = self.whole_model_reason()
        if whole is not None:
            return f"{name}: {self.label} ({whole})"
        ops = "; ".join(f"{op} {why}" for op, why in self.offending().items())
        cover = 100.0 * self.largest_run / max(self.total_ops, 1)
        return (f"{name}: {self.label} (largest delegated run {self.largest_run}/"
                f"{self.total_ops} ops = {cover:.0f}%, {self.partitions} runs; refused: {ops})")

    def whole_model_reason(self) -> str | None:
        """The one reason when every op is refused for it (e.g. an integer model)."""
        reasons = {why for _, _, why in self.refused}
        if len(reasons) == 1 and len(self.refused) == self.total_ops \
                and len({op for _, op, _ in self.refused}) > 1:
            return next(iter(reasons))
        return None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"label": self.label, "total_ops": self.total_ops,
                             "largest_run": self.largest_run, "partitions": self.partitions}
        whole = self.whole_model_reason()
        if whole is not None:
            d["reason"] = whole
        elif self.refused:
            d["refused"] = self.offending()
        return d


def _schema() -> Any:
    return require("ai_edge_litert.schema_py_generated", "tflite")


def op_views(tflite_bytes: bytes) -> list[OpView]:
    """The main subgraph's operators with their tensors' dims, types and constness."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    fb = _schema()
    model = fu.read_model_from_bytearray(bytearray(tflite_bytes))
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    sg = model.subgraphs[0]

    def tensor(i: int) -> dict[str, Any]:
        t = sg.tensors[int(i)]
        data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        return {"dims": [int(v) for v in (t.shape if t.shape is not None else [])],
                "type": types.get(t.type, str(t.type)),
                "const": data is not None and len(data) > 0}

    # FP16 weights: DEQUANTIZE of a constant is folded by the delegates at load time, so
    # its output counts as a constant for the rules (conv weights "must be constant").
    folded: set[int] = set()
    for op in sg.operators:
        code = fu.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
        if names.get(code) == "DEQUANTIZE" and tensor(op.inputs[0])["const"]:
            folded.update(int(o) for o in op.outputs)

    def operand(i: int) -> dict[str, Any]:
        d = tensor(i)
        d["const"] = d["const"] or int(i) in folded
        return d

    views = []
    for k, op in enumerate(sg.operators):
        code = fu.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
        custom = model.operatorCodes[op.opcodeIndex].customCode
        views.append(OpView(
            k, names.get(code, str(code)),
            [operand(i) for i in (op.inputs if op.inputs is not None else []) if i >= 0],
            [tensor(i) for i in (op.outputs if op.outputs is not None else [])],
            op.builtinOptions,
            custom.decode() if isinstance(custom, bytes) else (custom or "")))
    return views


def _runtime(op: OpView) -> int:
    return sum(1 for t in op.inputs if not t["const"])


def _gpu_rule(op: OpView) -> str | None:
    """None when the GPU delegate takes ``op``, else the reason."""
    o, n = op.options, op.name
    act = getattr(o, "fusedActivationFunction", 0)
    if act == 5:  # SIGN_BIT
        return "fused SIGN_BIT activation"
    if n not in GPU_OPS:
        return "not supported"
    if n == "CUSTOM":
        return None if op.custom in _GPU_CUSTOM else f"custom op {op.custom!r}"
    if n == "GATHER":
        if len(op.inputs) < 2 or len(op.inputs[1]["dims"]) != 1:
            return "indices must be 1-D"
        return None if op.inputs[1]["type"] == "INT32" else "indices must be int32"
    if n == "STRIDED_SLICE":
        for mask in ("ellipsisMask", "newAxisMask", "shrinkAxisMask"):
            if getattr(o, mask, 0):
                return f"{mask} set"
        if len(op.inputs[0]["dims"]) not in (3, 4):
            return f"{len(op.inputs[0]['dims'])}-D input (3-D/4-D only)"
    if n == "SLICE" and len(op.inputs[0]["dims"]) not in (3, 4):
        return f"{len(op.inputs[0]['dims'])}-D input (3-D/4-D only)"
    if n in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY",
             "REDUCE_ALL"):
        axes = op.inputs[1] if len(op.inputs) > 1 else None
        if axes is None or not axes["const"] or axes["type"] != "INT32":
            return "axes must be a constant int32 tensor"
    if n in ("PAD", "PADV2", "MIRROR_PAD"):
        pads = op.inputs[1]["dims"] if len(op.inputs) > 1 else []
        if len(pads) != 2 or pads[0] not in (3, 4) or pads[1] != 2:
            return f"paddings {pads} (3x2 or 4x2 only)"
        if n == "MIRROR_PAD" and getattr(o, "mode", 0) != 0:
            return "MIRROR_PAD: REFLECT only"
    if n in ("RESHAPE", "TRANSPOSE", "QUANTIZE") and _runtime(op) != 1:
        return f"{_runtime(op)} runtime inputs (shape/perm must be constant)"
    if n == "SOFTMAX" and getattr(o, "beta", 1.0) not in (0.0, 1.0):
        return "beta != 1"
    if n == "FULLY_CONNECTED":
        if getattr(o, "weightsFormat", 0) != 0:
            return "shuffled weights format"
        if _runtime(op) > 2:
            return "more than 2 runtime inputs"
    if n in _GPU_UNARY and not (_runtime(op) == 1 and len(op.inputs) == 1):
        return "expects one runtime input"
    if n in _GPU_BINARY and not (len(op.inputs) == 2 and _runtime(op) >= 1):
        return "expects two inputs, at most one constant"
    if n == "CAST":
        pair = (op.inputs[0]["type"], op.outputs[0]["type"])
        ok = {("BOOL", "FLOAT32"), ("BOOL", "FLOAT16"), ("FLOAT32", "BOOL"),
              ("FLOAT16", "BOOL"), ("FLOAT32", "INT32"), ("INT32", "FLOAT32"),
              ("FLOAT32", "FLOAT32"), ("INT32", "INT32")}
        if pair not in ok:
            return f"cast {pair[0]} -> {pair[1]}"
    if n == "DEQUANTIZE" and op.inputs and op.inputs[0]["type"] == "INT16":
        return "int16 input"
    return None


def _coreml_rule(op: OpView, float_model: bool) -> str | None:
    if not float_model:
        return "integer model (Core ML delegate takes FP32/FP16 only)"
    if op.name == "DEQUANTIZE" and op.inputs and op.inputs[0]["type"] == "FLOAT16":
        return None  # FP16 weights: folded by the delegate
    if op.name not in COREML_OPS:
        return "not supported"
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV") and _runtime(op) != 1:
        return "weights and bias must be constant"
    if op.name in ("PAD", "PADV2", "MIRROR_PAD") and len(op.inputs[0]["dims"]) != 4:
        return "4-D input only"
    return None


def _runs(refused: set[int], total: int) -> tuple[int, int]:
    """(largest run of accepted ops, number of runs) in execution order."""
    best = runs = cur = 0
    for k in range(total):
        if k in refused:
            cur = 0
            continue
        if cur == 0:
            runs += 1
        cur += 1
        best = max(best, cur)
    return best, runs


def delegate_report(tflite_bytes: bytes, delegate: str = "gpu") -> DelegateReport:
    """Apply ``delegate``'s rules ("gpu" or "coreml") to every op of the model."""
    views = op_views(tflite_bytes)
    if delegate == "gpu":
        rule = _gpu_rule
    elif delegate == "coreml":
        integer = any(t["type"] in ("INT8", "UINT8") and not t["const"]
                      for v in views for t in v.inputs + v.outputs)
        def rule(op: OpView) -> str | None:
            return _coreml_rule(op, not integer)
    else:
        raise ValueError(f"unknown delegate {delegate!r}")
    report = DelegateReport(delegate, len(views))
    for v in views:
        why = rule(v)
        if why is not None:
            report.refused.append((v.index, v.name, why))
    report.largest_run, report.partitions = _runs({k for k, _, _ in report.refused},
                                                  len(views))
    return report


def gpu_delegate_report(tflite_bytes: bytes) -> DelegateReport:
    return delegate_report(tflite_bytes, "gpu")


def coreml_delegate_report(tflite_bytes: bytes) -> DelegateReport:
    return delegate_report(tflite_bytes, "coreml")


def delegate_summary(tflite_bytes: bytes) -> list[str]:
    """One line per delegate, e.g. ``GPU delegate: full (409 ops)``."""
    return [delegate_report(tflite_bytes, d).summary() for d in ("gpu", "coreml")]
