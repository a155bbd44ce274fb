"""INT8 QDQ ONNX through ONNX Runtime's static quantisation.

Weights int8 per channel; activations uint8 asymmetric by default or int8 symmetric
(``symmetric=True``: the form TensorRT's explicit quantisation and most NPUs want).
On x86 CPUs without VNNI, ORT's u8s8 kernels accumulate pairs in int16 and saturate;
``reduce_range`` (7-bit weights) avoids that, so by default it is turned on exactly there.
"""

from __future__ import annotations

import inspect
import logging
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from ffedge.errors import FFEdgeError, require

METHODS = ("minmax", "entropy", "percentile", "auto")  # auto: per tensor (int8_ranges)
FALLBACK_PRECISIONS = ("int16", "float")
QUANTIZABLE_OPS = ("Conv", "MatMul", "Gemm")


@dataclass(frozen=True)
class QuantOptions:
    symmetric: bool = False
    method: str = "minmax"
    exclude: tuple[str, ...] = ()  # node names or op types kept in float (user-given)
    fallback: tuple[str, ...] = ()  # node names kept in float by the auto-fallback search
    per_channel: bool = True
    reduce_range: bool | None = None  # None: on for uint8 activations on CPUs without VNNI
    percentile: float = 99.999
    equalize: bool = True  # cross-layer equalisation of Conv-act-Conv chains (int8_prep)
    bias_correction: bool = True  # fold the int8 weight-rounding shift into conv biases
    fallback_precision: str = "float"  # fallback nodes: float, or "int16" (16-bit act, int8 w)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise FFEdgeError(f"unknown calibration method {self.method!r}; choose one of {METHODS}")
        if self.fallback_precision not in FALLBACK_PRECISIONS:
            raise FFEdgeError(f"unknown fallback precision {self.fallback_precision!r}; choose "
                              f"one of {FALLBACK_PRECISIONS}")

    def resolved_reduce_range(self) -> bool:
        if self.reduce_range is not None:
            return self.reduce_range
        return not self.symmetric and not cpu_has_vnni()

    def with_fallback(self, names: list[str] | tuple[str, ...]) -> QuantOptions:
        return replace(self, fallback=tuple(dict.fromkeys(names)))

    def describe(self) -> dict:
        return {"activations": "int8 symmetric" if self.symmetric else "uint8 asymmetric",
                "weights": "int8 per-channel" if self.per_channel else "int8 per-tensor",
                "method": self.method, "reduce_range": self.resolved_reduce_range(),
                "equalize": self.equalize, "bias_correction": self.bias_correction,
                "excluded": list(self.exclude), "fallback_nodes": len(self.fallback),
                "fallback_precision": self.fallback_precision}


def cpu_has_vnni() -> bool:
    """True on x86 CPUs with AVX-512 VNNI or AVX-VNNI (int8 dot products without int16
    saturation); False elsewhere, including when /proc/cpuinfo is unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        pass
    return False


def resolve_exclusions(model_path: Path, exclude: tuple[str, ...]) -> list[str]:
    """Node names for ``exclude`` entries that are op types; names pass through.
    An entry that is neither fails with the closest names."""
    onnx = require("onnx", "onnx")
    proto = onnx.load(str(model_path))
    names = {n.name for n in proto.graph.node}
    by_type: dict[str, list[str]] = {}
    for n in proto.graph.node:
        by_type.setdefault(n.op_type, []).append(n.name)
    out: list[str] = []
    for e in exclude:
        if e in names:
            out.append(e)
        elif e in by_type:
            out.extend(by_type[e])
        else:
            hits = [n for n in names if e in n][:3]
            raise FFEdgeError(f"--exclude {e!r} is neither a node name nor an op type in the "
                              f"graph" + (f" (did you mean {', '.join(hits)}?)" if hits else ""))
    return out


def quantize_qdq(fp32_path: str | Path, out_path: str | Path, dataset, options: QuantOptions,
                 input_name: str = "images", calibration_cache: str | Path | None = None,
                 prep_dir: str | Path | None = None) -> Path:
    """Static QDQ quantisation of ``fp32_path`` calibrated on ``dataset`` (a
    :class:`~ffedge.calibration.CalibrationDataset`), written to ``out_path``.

    ``calibration_cache``: a JSON file of tensor ranges (ORT's calibration cache): written
    by the first call, reused by later ones with the same model and method, so a search
    that rebuilds with different float nodes calibrates once (the first call must be the
    one with no float nodes: it calibrates every tensor).
    ``prep_dir``: where the equalised graph and its conv input means are kept between
    calls (same model and dataset); None: recomputed."""
    require("onnxruntime", "onnx")
    from onnxruntime.quantization import CalibrationMethod

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile,
              "auto": CalibrationMethod.MinMax}[options.method]
    extra: dict = {"ActivationSymmetric": options.symmetric, "WeightSymmetric": True}
    if options.method == "percentile":
        extra["CalibPercentile"] = options.percentile
    with tempfile.TemporaryDirectory(prefix="ffedge-q-") as tmp:
        root = logging.getLogger()
        level = root.level
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            root.setLevel(logging.ERROR)  # the quantiser logs per-tensor chatter at WARNING
            try:
                pre = _prepared(fp32_path, Path(prep_dir or tmp), dataset, options, input_name,
                                Path(tmp) / "build.onnx")
                if options.method == "auto":
                    calibration_cache = _chosen_ranges(pre, dataset, options, input_name,
                                                       calibration_cache or Path(tmp) / "r.json")
                _quantize(pre, out_path, dataset, options, input_name, method, extra,
                          calibration_cache)
            finally:
                root.setLevel(level)
    return Path(out_path)


def _prepared(fp32_path, prep_dir: Path, dataset, options: QuantOptions, input_name: str,
              build: Path) -> Path:
    """The graph the quantiser sees: ORT pre-processing, cross-layer equalisation (kept in
    ``prep_dir``), then bias correction of the convs whose weights become int8."""
    import numpy as np
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ffedge.export import int8_prep

    prep_dir.mkdir(parents=True, exist_ok=True)
    pre, means_file = prep_dir / "prepared.onnx", prep_dir / "conv_means.npz"
    tag = f"eq={options.equalize}"
    if not pre.exists() or (prep_dir / "tag").read_text() != tag:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        proto = onnx.load(str(pre))
        feeds = _feeds(dataset, input_name)
        if options.equalize:
            int8_prep.equalize(proto, feeds)
        np.savez(means_file, **int8_prep.conv_input_means(proto, feeds))
        onnx.save(proto, str(pre))
        (prep_dir / "tag").write_text(tag)
    if not options.bias_correction:
        return pre
    proto = onnx.load(str(pre))
    means = dict(np.load(means_file))
    keep_float_weights = set(resolve_exclusions(pre, options.exclude))
    if options.fallback_precision == "float":
        keep_float_weights |= set(options.fallback)
    int8_prep.bias_correct(proto, means, keep_float_weights,
                           63 if options.resolved_reduce_range() else 127)
    onnx.save(proto, str(build))
    return build


def _chosen_ranges(pre: Path, dataset, options: QuantOptions, input_name: str,
                   cache: str | Path) -> Path:
    """ORT's calibration cache with each tensor's range chosen by measured Q/DQ noise
    (:mod:`ffedge.export.int8_ranges`), computed once per cache file."""
    from onnxruntime.quantization import quantize_static

    from ffedge.export.int8_ranges import write_chosen_ranges

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise FFEdgeError("--method auto needs onnxruntime >= 1.32 (calibration "
                          "cache); use --method minmax")
    if not Path(cache).exists():
        write_chosen_ranges(pre, dataset.as_ort_reader(input_name), _feeds(dataset, input_name),
                            cache, options.symmetric)
    return Path(cache)


def _feeds(dataset, input_name: str) -> list[dict]:
    """The calibration inputs as ORT feeds (through the same reader the quantiser uses)."""
    reader = dataset.as_ort_reader(input_name)
    feeds = []
    while (feed := reader.get_next()) is not None:
        feeds.append(feed)
    return feeds


def sixteen_bit_overrides(model_path: Path, nodes: tuple[str, ...]) -> dict:
    """ORT ``TensorQuantOverrides``: every activation tensor in or out of ``nodes`` at
    uint16 (their weights stay int8)."""
    import onnx
    from onnxruntime.quantization import QuantType

    if not nodes:
        return {}
    proto = onnx.load(str(model_path))
    inits = {i.name for i in proto.graph.initializer}
    wanted = set(nodes)
    tensors: set[str] = set()
    for n in proto.graph.node:
        if n.name in wanted:
            tensors.update(t for t in [n.input[0] if n.input else "", *n.output]
                           if t and t not in inits)
    return {t: [{"quant_type": QuantType.QUInt16}] for t in sorted(tensors)}


def _quantize(pre, out_path, dataset, options, input_name, method, extra,
              calibration_cache=None) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    cache = {}
    if calibration_cache and "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        cache["calibration_cache_path"] = str(calibration_cache)  # onnxruntime >= 1.32
    excluded = resolve_exclusions(pre, options.exclude)
    if options.fallback_precision == "float":
        excluded += list(options.fallback)
    else:
        extra = {**extra, "TensorQuantOverrides": sixteen_bit_overrides(pre, options.fallback)}
    quantize_static(
        str(pre), str(out_path), dataset.as_ort_reader(input_name),
        quant_format=QuantFormat.QDQ,
        per_channel=options.per_channel,
        activation_type=QuantType.QInt8 if options.symmetric else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=method,
        nodes_to_exclude=excluded,
        op_types_to_quantize=None,
        reduce_range=options.resolved_reduce_range(),
        extra_options=extra,
        **cache,
    )


def quantizable_nodes(model_path: str | Path) -> list[str]:
    onnx = require("onnx", "onnx")
    proto = onnx.load(str(model_path))
    return [n.name for n in proto.graph.node if n.op_type in QUANTIZABLE_OPS]


def quantize_weights_only(proto, op_types: tuple[str, ...] = ("DeformConv",)) -> int:
    """Store the float weights of ops the QDQ quantiser skips (ONNX ``DeformConv``) as int8
    per output channel behind a ``DequantizeLinear``: the op still computes in float, but
    the artifact shrinks (V1's deformable convs hold 39% of its parameters).
    Returns how many weights were converted."""
    import numpy as np
    from onnx import helper, numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    replaced: dict[str, list] = {}
    new_nodes = []
    for node in proto.graph.node:
        if node.op_type not in op_types or len(node.input) < 2:
            continue
        base = node.input[1]
        if base not in inits or base in replaced:
            continue
        w = inits[base].astype(np.float32)
        amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.round(w / scale.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127).astype(np.int8)
        replaced[base] = [
            numpy_helper.from_array(q, f"{base}_quantized"),
            numpy_helper.from_array(scale, f"{base}_scale"),
            numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{base}_zero_point"),
        ]
        new_nodes.append(helper.make_node(
            "DequantizeLinear", [f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"],
            [base], name=f"{base}_DequantizeLinear", axis=0))
    if not replaced:
        return 0
    keep = [i for i in proto.graph.initializer if i.name not in replaced]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    for tensors in replaced.values():
        proto.graph.initializer.extend(tensors)
    nodes = new_nodes + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    done = len(replaced)
    return done


def compact_qdq(proto) -> None:
    """Shrink a QDQ model without changing what it computes (in place): identical
    initializers (per-channel zero points, repeated scales) are stored once, the names the
    quantiser made up (``<tensor>_QuantizeLinear_Output``, ``..._quantized_scale``, ...)
    become short ids (keeping a ``_scale``/``_zero_point``/``_quantized`` suffix), and
    ``value_info`` (optional shape hints) is dropped. Names of the model's own ops and of
    their outputs are kept, so profiles stay readable. On nano_b these strings were half
    the INT8 file."""
    import hashlib

    g = proto.graph
    outer = {v.name for v in [*g.input, *g.output]}
    qdq = ("QuantizeLinear", "DequantizeLinear")
    rename: dict[str, str] = {}
    first: dict[tuple, str] = {}
    keep = []
    for init in g.initializer:
        bare = type(init)()
        bare.CopyFrom(init)
        bare.name = ""
        key = (init.data_type, tuple(init.dims),
               hashlib.sha1(bare.SerializeToString(deterministic=True)).hexdigest())
        if key in first and init.name not in outer:
            rename[init.name] = first[key]
            continue
        role = next((s for s in ("_zero_point", "_scale", "_quantized") if init.name.endswith(s)),
                    "")
        short = f"~i{len(keep)}{role}"  # the role suffix stays readable (and testable)
        first[key] = rename[init.name] = init.name if init.name in outer else short
        init.name = rename[init.name]
        keep.append(init)
    del g.initializer[:]
    g.initializer.extend(keep)
    for k, node in enumerate(g.node):
        if node.op_type in qdq:
            node.name = f"~{'q' if node.op_type == 'QuantizeLinear' else 'dq'}{k}"
            for j, out in enumerate(node.output):
                if out not in outer:
                    rename[out] = f"~t{k}.{j}"
    for node in g.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    del g.value_info[:]
