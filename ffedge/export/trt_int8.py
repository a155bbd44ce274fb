"""INT8 QDQ ONNX by TensorRT's rules, through onnxruntime's static quantisation.

``quantize_static`` with QDQ format, int8 activations and weights, ``ActivationSymmetric``
and ``WeightSymmetric`` (zero-points 0), ``QuantizeBias: False`` (biases stay float: no int32
DequantizeLinear), per-channel weights (axis 0 for Conv), ``DedicatedQDQPair`` (TensorRT
cannot share one Q/DQ pair between consumers). Only Conv/Gemm and residual Adds are
quantised, on their inputs only (``OpTypesToExcludeOutputQuantization``): that is TensorRT's
recommended placement, and it keeps deformable-conv offsets/masks and GridSample grids float.
onnxruntime's defaults do none of this (uint8 zero-points, int32 biases, Q/DQ everywhere).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

from ffedge.errors import require

TRT_QUANT_OPS = ("Conv", "Gemm", "Add")
CALIB_METHODS = ("minmax", "entropy", "percentile")


def residual_adds(proto) -> list[str]:
    """Adds whose one input is a Conv output and the other a non-constant, non-Conv tensor:
    the skip connections TensorRT fuses into the Conv when the skip input is quantised."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    consts = {i.name for i in proto.graph.initializer}
    consts |= {n.output[0] for n in proto.graph.node if n.op_type == "Constant"}
    out = []
    for n in proto.graph.node:
        if n.op_type != "Add" or len(n.input) != 2:
            continue
        kinds = [producer[i].op_type if i in producer else ("const" if i in consts else "input")
                 for i in n.input]
        if "Conv" in kinds and "const" not in kinds and kinds != ["Conv", "Conv"]:
            out.append(n.name)
    return out


def trt_quant_nodes(proto, exclude: tuple[str, ...] = ()) -> list[str]:
    """Node names to quantise: every Conv/Gemm plus the residual Adds, minus ``exclude``."""
    skip = set(exclude)
    names = [n.name for n in proto.graph.node if n.op_type in ("Conv", "Gemm")]
    names += residual_adds(proto)
    return [n for n in names if n not in skip]


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def quantize_for_trt(fp32_path: str | Path, out_path: str | Path, dataset, method: str = "minmax",
                     exclude: tuple[str, ...] = (), input_name: str = "images") -> Path:
    """Static QDQ quantisation of ``fp32_path`` by TensorRT's rules, calibrated on ``dataset``
    (a :class:`~ffedge.calibration.CalibrationDataset`); ``exclude`` node names stay float."""
    require("onnxruntime", "onnx")
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
             "DedicatedQDQPair": True,
             "OpTypesToExcludeOutputQuantization": list(TRT_QUANT_OPS)}
    with tempfile.TemporaryDirectory(prefix="ffedge-trtq-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        root = logging.getLogger()
        level = root.level
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            root.setLevel(logging.ERROR)  # per-tensor chatter at WARNING
            try:
                quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
                nodes = trt_quant_nodes(onnx.load(str(pre)), exclude)
                if not nodes:  # onnxruntime reads an empty list as "quantise everything"
                    Path(out_path).write_bytes(Path(fp32_path).read_bytes())
                    return Path(out_path)
                quantize_static(
                    str(pre), str(out_path), dataset.as_ort_reader(input_name),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=_method(method), nodes_to_quantize=nodes,
                    op_types_to_quantize=list(TRT_QUANT_OPS), reduce_range=False,
                    extra_options=extra,
                )
            finally:
                root.setLevel(level)
    return Path(out_path)


def activation_amax(fp32_path: str | Path, dataset, method: str = "entropy",
                    input_name: str = "images") -> dict[str, float]:
    """max |x| per float tensor of the FP32 graph over ``dataset`` (onnxruntime's calibrator
    on every node output): the input of a TensorRT calibration cache."""
    require("onnxruntime", "onnx")
    from onnxruntime.quantization.calibrate import create_calibrator

    with tempfile.TemporaryDirectory(prefix="ffedge-amax-") as tmp:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cal = create_calibrator(str(fp32_path), None, str(Path(tmp) / "aug.onnx"),
                                        calibrate_method=_method(method),
                                        extra_options={"symmetric": True})
                cal.collect_data(dataset.as_ort_reader(input_name))
                ranges = cal.compute_data()
        finally:
            root.setLevel(level)
    out = {}
    for name, rng in ranges.data.items():
        lo, hi = (float(v) for v in rng.range_value)
        out[name] = max(abs(lo), abs(hi))
    return out
