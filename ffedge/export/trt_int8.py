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

import contextlib
import inspect
import logging
import tempfile
import warnings
from collections.abc import Iterator
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
                     exclude: tuple[str, ...] = (), input_name: str = "images", *,
                     equalize: bool = True, bias_correction: bool = True,
                     prep_dir: str | Path | None = None,
                     calibration_cache: str | Path | None = None) -> Path:
    """Static QDQ quantisation of ``fp32_path`` by TensorRT's rules, calibrated on ``dataset``
    (a :class:`~ffedge.calibration.CalibrationDataset`); ``exclude`` node names stay float.

    ``equalize`` / ``bias_correction``: :mod:`ffedge.export.int8_prep`'s cross-layer
    equalisation and weight-rounding bias correction of the float graph first (both keep the
    float function; docs/tensorrt.md has the measured effect). ``prep_dir`` keeps the
    equalised graph and its conv input means between calls with the same graph and dataset;
    ``calibration_cache`` (onnxruntime >= 1.32) the activation ranges: the first call must be
    the one with nothing excluded, so every tensor is calibrated."""
    require("onnxruntime", "onnx")
    import onnx

    with tempfile.TemporaryDirectory(prefix="ffedge-trtq-") as tmp, _quiet():
        pre = prepare_for_trt(fp32_path, Path(prep_dir or tmp), dataset, equalize, input_name)
        nodes = trt_quant_nodes(onnx.load(str(pre)), exclude)
        if not nodes:  # onnxruntime reads an empty list as "quantise everything"
            Path(out_path).write_bytes(Path(fp32_path).read_bytes())
            return Path(out_path)
        if bias_correction:
            pre = _bias_corrected(pre, Path(tmp) / "build.onnx", set(exclude))
        _quantize(pre, out_path, dataset, method, nodes, input_name, calibration_cache)
    return Path(out_path)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantiser logs per-tensor chatter at WARNING and warns on shapes."""
    root = logging.getLogger()
    level = root.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.setLevel(level)


def prepare_for_trt(fp32_path: str | Path, prep_dir: Path, dataset, equalize: bool = True,
                    input_name: str = "images") -> Path:
    """onnxruntime's pre-processing, then (``equalize``) cross-layer equalisation; the
    per-channel mean of every conv input is saved next to it for bias correction. Kept in
    ``prep_dir`` and reused while the settings match."""
    import numpy as np
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ffedge.export import int8_prep

    prep_dir.mkdir(parents=True, exist_ok=True)
    pre, tag = prep_dir / "prepared.onnx", f"{Path(fp32_path).resolve()}|eq={equalize}"
    if pre.exists() and (prep_dir / "tag").is_file() and (prep_dir / "tag").read_text() == tag:
        return pre
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    proto = onnx.load(str(pre))
    reader = dataset.as_ort_reader(input_name)
    feeds = list(iter(reader.get_next, None))
    if equalize:
        int8_prep.equalize(proto, feeds)
    np.savez(prep_dir / "conv_means.npz", **int8_prep.conv_input_means(proto, feeds))
    onnx.save(proto, str(pre))
    (prep_dir / "tag").write_text(tag)
    return pre


def _bias_corrected(pre: Path, out: Path, keep_float: set[str]) -> Path:
    """``pre`` with each int8-weight conv's rounding shift folded into its bias (not the
    convs in ``keep_float``: their weights stay float)."""
    import numpy as np
    import onnx

    from ffedge.export.int8_prep import bias_correct

    proto = onnx.load(str(pre))
    bias_correct(proto, dict(np.load(pre.parent / "conv_means.npz")), keep_float, 127)
    onnx.save(proto, str(out))
    return out


def _quantize(pre: Path, out_path, dataset, method: str, nodes: list[str], input_name: str,
              calibration_cache) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
             "DedicatedQDQPair": True,
             "OpTypesToExcludeOutputQuantization": list(TRT_QUANT_OPS)}
    cache = {}
    if calibration_cache and "calibration_cache_path" in inspect.signature(
            quantize_static).parameters:
        cache["calibration_cache_path"] = str(calibration_cache)
    quantize_static(
        str(pre), str(out_path), dataset.as_ort_reader(input_name),
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        calibrate_method=_method(method), nodes_to_quantize=nodes,
        op_types_to_quantize=list(TRT_QUANT_OPS), reduce_range=False,
        extra_options=extra, **cache,
    )


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
