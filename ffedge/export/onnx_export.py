"""PyTorch -> ONNX: trace, simplify, check, stamp metadata, verify, then write atomically."""

from __future__ import annotations

import io
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from ffedge.artifact.metadata import INPUT_NAME, OUTPUT_NAMES
from ffedge.errors import FFEdgeError, require
from ffedge.export.wrapper import DeployWrapper
from ffedge.models.dcn import has_dcn, set_dcn_lowering

NATIVE_DCN_MIN_OPSET = 19
GRIDSAMPLE_DCN_MIN_OPSET = 16  # ONNX GridSample
# Measured with torch 2.13's TorchScript exporter: opsets 7-8 cannot export the FPN's
# nearest upsampling to a computed size; opset 24+ is refused ("Unsupported onnx_opset_version").
MIN_OPSET = 9
DEFAULT_OPSET = 17


def max_opset() -> int:
    """The highest opset both torch's exporter and the installed onnx know."""
    try:
        from torch.onnx import _constants

        top = int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):
        top = 20
    try:
        import onnx

        top = min(top, int(onnx.defs.onnx_opset_version()))
    except ImportError:
        pass
    return top


def check_opset(opset: int, model_has_dcn: bool, dcn: str) -> None:
    """Refuse an opset the exporter or the model's ops cannot use, before any tracing."""
    top = max_opset()
    if not MIN_OPSET <= opset <= top:
        raise FFEdgeError(f"--opset {opset}: torch's ONNX exporter here writes opsets "
                          f"{MIN_OPSET}-{top}; use one of those (default {DEFAULT_OPSET}, "
                          f"{NATIVE_DCN_MIN_OPSET} with native DeformConv)")
    if model_has_dcn and dcn == "native" and opset < NATIVE_DCN_MIN_OPSET:
        raise FFEdgeError(
            f"--opset {opset} is too low for --dcn native (ONNX DeformConv needs "
            f"opset >= {NATIVE_DCN_MIN_OPSET}); raise it or use --dcn gridsample"
        )
    if model_has_dcn and dcn == "gridsample" and opset < GRIDSAMPLE_DCN_MIN_OPSET:
        raise FFEdgeError(f"--opset {opset} is too low for --dcn gridsample (ONNX GridSample "
                          f"needs opset >= {GRIDSAMPLE_DCN_MIN_OPSET}); use --opset "
                          f"{GRIDSAMPLE_DCN_MIN_OPSET} or higher")


@dataclass(frozen=True)
class OnnxOptions:
    """What shapes the traced graph: one argument table shared by every target."""

    opset: int | None = None  # None: 19 with native DCN, else 17
    dynamic_batch: bool = False
    dynamic_size: bool = False
    simplify: bool = True
    dcn: str = "native"  # "native" (ONNX DeformConv) or "gridsample"
    optimize: int | None = None  # graph passes (ffedge.export.passes); None: the pipeline's level

    def __post_init__(self) -> None:
        if self.opset is not None:  # the range is model-independent: refuse it up front
            check_opset(self.opset, False, self.dcn)

    def resolved_opset(self, model_has_dcn: bool) -> int:
        if self.opset is not None:
            check_opset(self.opset, model_has_dcn, self.dcn)
            return self.opset
        if model_has_dcn and self.dcn == "native":
            return NATIVE_DCN_MIN_OPSET
        return DEFAULT_OPSET


@dataclass
class OnnxGraph:
    """An exported, simplified and checked ONNX model (in memory, not yet written)."""

    proto: Any  # onnx.ModelProto
    opset: int
    simplifier: str
    node_histogram: dict[str, int] = field(default_factory=dict)

    def serialize(self) -> bytes:
        return self.proto.SerializeToString(deterministic=True)


def trace_to_onnx(model: torch.nn.Module, input_size: tuple[int, int], options: OnnxOptions,
                  nhwc: bool = False) -> OnnxGraph:
    """Trace ``model`` (eval mode) with the TorchScript exporter into a simplified graph."""
    onnx = require("onnx", "onnx")
    from ffedge.export.fold import fold_dcn_batchnorm
    from ffedge.export.passes import current_level, optimize_module, optimize_onnx

    level = current_level() if options.optimize is None else options.optimize
    model = optimize_module(model.eval(), level)  # level 0: the model itself
    model, _ = fold_dcn_batchnorm(model.eval())
    dcn = has_dcn(model)
    opset = options.resolved_opset(dcn)
    if dcn:
        set_dcn_lowering(model, options.dcn)
    h, w = input_size
    shape = (1, h, w, 3) if nhwc else (1, 3, h, w)
    dummy = torch.zeros(shape, dtype=torch.float32)
    dyn: dict[str, dict[int, str]] = {}
    if options.dynamic_batch or options.dynamic_size:
        in_axes: dict[int, str] = {}
        if options.dynamic_batch:
            in_axes[0] = "batch"
        if options.dynamic_size:
            in_axes.update({1: "height", 2: "width"} if nhwc else {2: "height", 3: "width"})
        dyn[INPUT_NAME] = in_axes
        out_axes: dict[int, str] = {}
        if options.dynamic_batch:
            out_axes[0] = "batch"
        if options.dynamic_size:
            out_axes[1] = "priors"
        for name in OUTPUT_NAMES:
            dyn[name] = dict(out_axes)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            DeployWrapper(model, nhwc=nhwc).eval(),
            (dummy,),
            buf,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=opset,
            dynamic_axes=dyn or None,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    simplifier = "none"
    if options.simplify:
        proto, simplifier = simplify(proto)
    proto = optimize_onnx(proto, level)  # level 0: unchanged
    check(proto)
    return OnnxGraph(proto, opset, simplifier, node_histogram(proto))


def simplify(proto):
    """onnxsim first (constant folding + shape-aware fusion); onnxslim when onnxsim is absent
    or fails. Returns (model, name of the tool that ran)."""
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(proto)
        if ok:
            return simplified, f"onnxsim {getattr(onnxsim, '__version__', '')}".strip()
    except ImportError:
        pass
    except Exception as exc:  # onnxsim raises bare RuntimeErrors from C++
        warnings.warn(f"onnxsim failed ({str(exc)[:120]}); trying onnxslim", stacklevel=2)
    try:
        import onnxslim

        return onnxslim.slim(proto), f"onnxslim {getattr(onnxslim, '__version__', '')}".strip()
    except ImportError:
        return proto, "none (install onnxsim)"


def check(proto) -> None:
    """onnx.checker with full (strict) shape inference."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise FFEdgeError(f"exported graph is not valid ONNX: {str(exc).splitlines()[0]}") from None


def node_histogram(proto) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in proto.graph.node).items(),
                       key=lambda kv: (-kv[1], kv[0])))
