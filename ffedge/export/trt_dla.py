"""DLA (Jetson Orin) support: the INT8 calibration cache and a per-layer eligibility report.

**Calibration cache.** Before TensorRT 11, INT8 on the DLA runs in implicit-quantisation mode
and reads per-tensor scales from a calibration cache (``trtexec --int8 --calib=FILE``), a text
file TensorRT writes and reads as: a header ``TRT-<NV_TENSORRT_VERSION>-EntropyCalibration2``
(8601 for 8.6.1, 100300 for 10.3.0), then one ``<tensor name>: <hex>`` line per tensor where
``<hex>`` is the IEEE-754 float32 bit pattern of the scale ``amax / 127`` written as a
lowercase hexadecimal integer (``3c010a14``; ``0`` for a zero scale). TensorRT ignores a
cache whose header names another version, so the cache is made for one exact version.

**Eligibility.** DLA runs FP16/INT8 only, static shapes, no plugins; TensorRT moves anything
else to the GPU when ``GPU_FALLBACK`` is set. The report predicts, per ONNX node, where it
lands, from NVIDIA's "DLA Supported Layers and Restrictions" (TensorRT 8.6/10.x docs); the
build log (``trtexec --verbose``) has the final placement.
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from pathlib import Path

from ffedge.errors import FFEdgeError
from ffedge.export.trt_versions import TrtVersion

CALIBRATOR = "EntropyCalibration2"
_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")


def scale_hex(scale: float) -> str:
    """TensorRT's cache encoding of one scale: float32 bits as a hex integer."""
    (bits,) = struct.unpack(">I", struct.pack(">f", float(scale)))
    return format(bits, "x")


def hex_scale(text: str) -> float:
    (value,) = struct.unpack(">f", struct.pack(">I", int(text, 16)))
    return value


def calibration_cache_text(amax: dict[str, float], version: TrtVersion) -> str:
    """The cache for ``amax`` (max |x| per tensor name) and exactly this TensorRT version."""
    lines = [f"TRT-{version.cache_number}-{CALIBRATOR}"]
    for name in sorted(amax):
        if "\n" in name or ": " in name:
            raise FFEdgeError(f"tensor name {name!r} cannot be written to a calibration cache")
        lines.append(f"{name}: {scale_hex(max(float(amax[name]), 0.0) / 127.0)}")
    return "\n".join(lines) + "\n"


def read_calibration_cache(path: str | Path) -> tuple[int, dict[str, float]]:
    """(version number, {tensor: scale}) from a cache file; FFEdgeError when malformed."""
    lines = Path(path).read_text().splitlines()
    m = _HEADER.match(lines[0].strip()) if lines else None
    if m is None or m.group(2) != CALIBRATOR:
        raise FFEdgeError(f"{path} is not a TensorRT {CALIBRATOR} calibration cache")
    scales = {}
    for i, line in enumerate(lines[1:], 2):
        name, sep, value = line.rpartition(": ")
        if not sep:
            raise FFEdgeError(f"{path}:{i}: expected 'tensor: hexscale', got {line[:60]!r}")
        scales[name] = hex_scale(value.strip())
    return int(m.group(1)), scales


# ONNX op -> (DLA verdict, note). "yes": runs on DLA; "maybe": runs when the attributes fit
# the restriction noted; "no": TensorRT puts it on the GPU (GPU_FALLBACK).
DLA_OPS: dict[str, tuple[str, str]] = {
    "Conv": ("yes", "kernel <= 32, constant weights"),
    "Gemm": ("yes", "fully connected, constant weights"),
    "MaxPool": ("yes", "window <= 8"), "AveragePool": ("yes", "window <= 8"),
    "Relu": ("yes", ""), "Sigmoid": ("yes", ""), "Tanh": ("yes", ""), "Clip": ("yes", ""),
    "LeakyRelu": ("yes", ""), "PRelu": ("yes", "constant slope"),
    "BatchNormalization": ("yes", "scale layer"),
    "Add": ("yes", "elementwise sum"), "Sub": ("yes", ""), "Mul": ("yes", "elementwise prod"),
    "Max": ("yes", ""), "Min": ("yes", ""),
    "Concat": ("maybe", "channel axis only"),
    "Resize": ("maybe", "nearest/bilinear upsampling by integer factors"),
    "Softmax": ("maybe", "channel axis of a 4-D tensor only"),
    "Reshape": ("maybe", "shuffle: 4-D, batch unchanged"),
    "Transpose": ("maybe", "shuffle: 4-D, batch unchanged"),
    "QuantizeLinear": ("no", "explicit Q/DQ is not run on DLA before TensorRT 11"),
    "DequantizeLinear": ("no", "explicit Q/DQ is not run on DLA before TensorRT 11"),
}
_REASONS = {
    "DeformConv": "parsed into a plugin: plugins never run on DLA",
    "ModulatedDeformConv2d": "plugin: plugins never run on DLA",
    "GridSample": "no DLA implementation",
    "Div": "DLA has no DIV elementwise",
    "Exp": "unary op not on DLA", "Sqrt": "unary op not on DLA",
    "ReduceMean": "reduce not on DLA", "ReduceMax": "reduce not on DLA (CHW-max only)",
    "ReduceSum": "reduce not on DLA", "Pad": "no DLA padding layer",
    "Gather": "no DLA gather", "MatMul": "non-constant matrix multiply",
}
_FREE = ("Constant", "Identity", "Unsqueeze", "Squeeze", "Shape", "Flatten")


def dla_report(proto, precision: str) -> dict:
    """Per-node predicted placement with ``--useDLACore N --allowGPUFallback``."""
    layers = []
    for n in proto.graph.node:
        if n.op_type in _FREE:
            continue
        verdict, note = DLA_OPS.get(n.op_type, ("no", _REASONS.get(n.op_type, "not a DLA layer")))
        if precision == "fp32":
            verdict, note = "no", "DLA runs FP16/INT8 only"
        layers.append({"node": n.name, "op": n.op_type, "dla": verdict, "note": note})
    counts = Counter(layer["dla"] for layer in layers)
    gpu_ops = Counter(layer["op"] for layer in layers if layer["dla"] == "no")
    return {"predicted_from": "NVIDIA 'DLA Supported Layers and Restrictions' (TensorRT 8.6/10.x)",
            "layers_total": len(layers), "dla": counts.get("yes", 0),
            "dla_if_attributes_fit": counts.get("maybe", 0), "gpu_fallback": counts.get("no", 0),
            "gpu_fallback_ops": dict(gpu_ops.most_common()), "layers": layers}


def check_dla(version: TrtVersion, precision: str, jetpack: str | None) -> None:
    """DLA needs FP16/INT8, a TensorRT that has it, and a Jetson with one (not Thor)."""
    if precision not in ("fp16", "int8"):
        raise FFEdgeError("--dla runs FP16 or INT8 only; add --precision fp16 or int8")
    if not version.has_dla:
        raise FFEdgeError(f"TensorRT {version} has no DLA support (removed in 11.0); target "
                          "JetPack 6.x (--jetpack 6.2) or drop --dla")
    if jetpack == "7":
        raise FFEdgeError("JetPack 7 (Jetson Thor) has no DLA; drop --dla or target Orin "
                          "(--jetpack 6.2)")
