"""TensorRT versions: which one a JetPack ships, what its ONNX parser accepts, how V1's
deformable convs reach it.

Everything here is data from NVIDIA's documents, vendored so that a bundle can be checked
here, where TensorRT cannot be installed:

- JetPack -> TensorRT: the JetPack release notes (4.6 -> 8.2.1, 5.1.x -> 8.5.2, 6.0 -> 8.6.2,
  6.1/6.2 -> 10.3.0, 7.0 -> 10.13.3).
- ONNX operator support per TensorRT version: ``docs/operators.md`` of onnx/onnx-tensorrt at the
  release branches ``release/8.0``, ``8.2-GA``, ``8.4-GA``, ``8.5-GA``, ``8.6-GA``, ``10.0-GA``,
  ``10.1-GA``: the first version whose table marks the operator "Y". Versions after 10.1 are
  taken to support at least what 10.1 does (no operator in this table was ever removed).
- Highest ONNX opset per version: the same documents (8.0/8.2: 13; 8.4-8.6: 17; 10.0-10.8: 20;
  10.9-10.12: 22; 10.13+: 24).
"""

from __future__ import annotations

from dataclasses import dataclass

from ffedge.errors import FFEdgeError

# JetPack release -> the TensorRT it ships (major, minor, patch).
JETPACK_TRT: dict[str, tuple[int, int, int]] = {
    "4.6": (8, 2, 1),
    "5.1": (8, 5, 2),
    "6.0": (8, 6, 2),
    "6.1": (10, 3, 0),
    "6.2": (10, 3, 0),
    "7": (10, 13, 3),
}
JETPACK_ALIASES = {"7.0": "7", "6": "6.0", "5": "5.1", "4": "4.6"}
DEFAULT_JETPACK = "6.2"

DCN_MODES = ("native", "plugin", "gridsample")
NATIVE_DEFORMCONV_MIN = (10, 1)  # onnx-tensorrt 10.1-GA: DeformConv "Y"
PLUGIN_MIN = (8, 6)  # ModulatedDeformConv2d plugin (TensorRT OSS, Jan 2023 -> 8.6)
GRIDSAMPLE_MIN = (8, 5)  # onnx-tensorrt 8.5-GA: GridSample "Y"
DLA_MAX = (10, 99)  # DLA is gone in TensorRT 11.0-11.3 (TensorRT docs, "Working with DLA")

# Custom nodes the parser hands to a plugin (op_type -> first TensorRT version shipping it).
PLUGIN_OPS: dict[str, tuple[int, int]] = {"ModulatedDeformConv2d": PLUGIN_MIN}

# onnx-tensorrt docs/operators.md: first version with "Y" (release/8.0 is the oldest checked).
OP_FIRST_SUPPORTED: dict[str, str] = {
    "Abs": "8.0", "Add": "8.0", "And": "8.0", "ArgMax": "8.0", "ArgMin": "8.0",
    "AveragePool": "8.0", "BatchNormalization": "8.0", "Cast": "8.0", "CastLike": "10.0",
    "Ceil": "8.0", "Clip": "8.0", "Concat": "8.0", "Constant": "8.0", "ConstantOfShape": "8.0",
    "Conv": "8.0", "ConvTranspose": "8.0", "Cos": "8.0", "CumSum": "8.0", "DeformConv": "10.1",
    "DepthToSpace": "8.0", "DequantizeLinear": "8.0", "Div": "8.0", "Dropout": "8.0",
    "Einsum": "8.2", "Elu": "8.0", "Equal": "8.0", "Erf": "8.0", "Exp": "8.0", "Expand": "8.0",
    "Flatten": "8.0", "Floor": "8.0", "Gather": "8.0", "GatherElements": "8.0",
    "GatherND": "8.2", "Gelu": "10.0", "Gemm": "8.0", "GlobalAveragePool": "8.0",
    "GlobalMaxPool": "8.0", "Greater": "8.0", "GridSample": "8.5",
    "GroupNormalization": "8.6", "HardSigmoid": "8.0", "HardSwish": "8.6", "Identity": "8.0",
    "InstanceNormalization": "8.0", "LayerNormalization": "8.6", "LeakyRelu": "8.0",
    "Less": "8.0", "Log": "8.0", "LogSoftmax": "8.0", "MatMul": "8.0", "Max": "8.0",
    "MaxPool": "8.0", "Mean": "8.0", "Min": "8.0", "Mish": "10.0", "Mod": "8.6", "Mul": "8.0",
    "Neg": "8.0", "NonMaxSuppression": "8.5", "Not": "8.0", "Or": "8.0", "Pad": "8.0",
    "Pow": "8.0", "PRelu": "8.0", "QuantizeLinear": "8.0", "Range": "8.0",
    "Reciprocal": "8.5", "ReduceL2": "8.0", "ReduceMax": "8.0", "ReduceMean": "8.0",
    "ReduceMin": "8.0", "ReduceProd": "8.0", "ReduceSum": "8.0", "Relu": "8.0",
    "Reshape": "8.0", "Resize": "8.0", "RoiAlign": "8.5", "Round": "8.2",
    "ScatterND": "8.2", "Selu": "8.0", "Shape": "8.0", "Sigmoid": "8.0", "Sign": "8.2",
    "Sin": "8.0", "Slice": "8.0", "Softmax": "8.0", "Softplus": "8.0",
    "SpaceToDepth": "8.0", "Split": "8.0", "Sqrt": "8.0", "Squeeze": "8.0", "Sub": "8.0",
    "Sum": "8.0", "Tanh": "8.0", "Tile": "8.0", "TopK": "8.0", "Transpose": "8.0",
    "Trilu": "8.5", "Unsqueeze": "8.0", "Upsample": "8.0", "Where": "8.0",
}
# Operators the same tables mark "N" in every version (kept so the linter can say so).
OP_NEVER_SUPPORTED = ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul",
                      "DynamicQuantizeLinear", "Col2Im", "AffineGrid", "Unique")

# Highest ONNX opset the parser imports, by the first version it applies to.
MAX_OPSET: tuple[tuple[tuple[int, int], int], ...] = (
    ((8, 0), 13), ((8, 4), 17), ((10, 0), 20), ((10, 9), 22), ((10, 13), 24),
)


@dataclass(frozen=True, order=True)
class TrtVersion:
    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> TrtVersion:
        parts = str(text).strip().split(".")
        try:
            nums = [int(p) for p in parts[:3]]
        except ValueError:
            nums = []
        if len(nums) < 2 or nums[0] < 7:
            raise FFEdgeError(f"--trt-version {text!r}: give TensorRT's version as MAJOR.MINOR"
                              "[.PATCH], e.g. 8.6 or 10.3.0")
        return cls(*nums)

    @property
    def mm(self) -> tuple[int, int]:
        return (self.major, self.minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def cache_number(self) -> int:
        """The number in a calibration cache header (``TRT-8602-...``, ``TRT-100300-...``):
        ``NV_TENSORRT_VERSION``, major*1000+minor*100+patch before 10, major*10000 after."""
        base = 1000 if self.major < 10 else 10000
        return self.major * base + self.minor * 100 + self.patch

    @property
    def max_opset(self) -> int:
        best = 13
        for since, opset in MAX_OPSET:
            if self.mm >= since:
                best = opset
        return best

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT 11 drops the FP16/INT8 builder flags and implicit quantisation."""
        return self.major >= 11

    @property
    def has_dla(self) -> bool:
        return self.mm <= DLA_MAX


def resolve_version(jetpack: str | None = None, trt_version: str | None = None) -> TrtVersion:
    """The target TensorRT from ``--jetpack`` or ``--trt-version`` (not both)."""
    if jetpack and trt_version:
        raise FFEdgeError("give --jetpack or --trt-version, not both")
    if trt_version:
        return TrtVersion.parse(trt_version)
    jp = str(jetpack or DEFAULT_JETPACK)
    jp = JETPACK_ALIASES.get(jp, jp)
    if jp not in JETPACK_TRT:
        known = ", ".join(JETPACK_TRT)
        raise FFEdgeError(f"unknown --jetpack {jetpack!r}; choose one of {known} "
                          "(or give --trt-version X.Y)")
    return TrtVersion(*JETPACK_TRT[jp])


def jetpack_for(version: TrtVersion) -> str | None:
    for jp, v in JETPACK_TRT.items():
        if v == (version.major, version.minor, version.patch):
            return jp
    return None


def default_dcn_mode(version: TrtVersion) -> str:
    """How deformable convs reach this TensorRT: native ONNX DeformConv from 10.1, the
    ModulatedDeformConv2d plugin node on 8.6/10.0, GridSample + MatMul on 8.5."""
    if version.mm >= NATIVE_DEFORMCONV_MIN:
        return "native"
    if version.mm >= PLUGIN_MIN:
        return "plugin"
    if version.mm >= GRIDSAMPLE_MIN:
        return "gridsample"
    raise FFEdgeError(
        f"TensorRT {version.major}.{version.minor} has no way to run deformable convs (native "
        "DeformConv needs >= 10.1, the ModulatedDeformConv2d plugin >= 8.6, GridSample >= 8.5); "
        "use JetPack >= 5.1 (--jetpack 5.1) or a model without DCN (e.g. --model nano_b)"
    )


def check_dcn_mode(mode: str, version: TrtVersion) -> None:
    if mode not in DCN_MODES:
        raise FFEdgeError(f"unknown --dcn {mode!r}; choose one of {DCN_MODES}")
    need = {"native": NATIVE_DEFORMCONV_MIN, "plugin": PLUGIN_MIN, "gridsample": GRIDSAMPLE_MIN}[mode]
    if version.mm < need:
        raise FFEdgeError(f"--dcn {mode} needs TensorRT >= {need[0]}.{need[1]}, the target is "
                          f"{version}; drop --dcn to pick the mode this version supports")


def op_supported(op_type: str, version: TrtVersion) -> bool | None:
    """True/False from the vendored table; None when the table does not know the op."""
    if op_type in PLUGIN_OPS:
        return version.mm >= PLUGIN_OPS[op_type]
    if op_type in OP_NEVER_SUPPORTED:
        return False
    first = OP_FIRST_SUPPORTED.get(op_type)
    if first is None:
        return None
    major, minor = (int(x) for x in first.split("."))
    return version.mm >= (major, minor)


def min_version_for_ops(op_types: set[str]) -> str:
    """The lowest TensorRT version (from the table) that parses every op in ``op_types``."""
    best = (8, 0)
    for op in op_types:
        if op in PLUGIN_OPS:
            need = PLUGIN_OPS[op]
        elif op in OP_FIRST_SUPPORTED:
            need = tuple(int(x) for x in OP_FIRST_SUPPORTED[op].split("."))
        else:
            continue
        best = max(best, need)
    return f"{best[0]}.{best[1]}"
