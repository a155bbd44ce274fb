"""``ffexport tflite``: a ``.tflite`` an Android/iOS app can embed, FP32 / FP16 / INT8.

Why litert-torch and not onnx2tf: litert-torch converts the torch module directly (no
TensorFlow, numpy 2, the same venv as onnxruntime/OpenVINO), while onnx2tf pins
TensorFlow 2.19, numpy < 2, onnx 1.19 and downloads a calibration file from the internet
even for FP32 — it cannot share an environment with the rest of ffedge.

* Input is NHWC ``[1, H, W, 3]`` (the camera's layout; the transpose is in the graph), RGB
  by default (what phone cameras and MediaPipe deliver; the BGR->RGB flip is folded into the
  first conv's weights, :mod:`ffedge.export.channel_order`), BGR with ``channel_order="BGR"``.
* FP16: weights stored as float16 (ai-edge-quantizer float casting), computed in float32.
* INT8: PT2E static quantisation (per-channel int8 weights, int8 activations) calibrated on
  the shared :class:`~ffedge.calibration.CalibrationDataset`; I/O float, int8 or uint8.
* ``decode_in_graph``: priors as constants and RetinaFace decoding in the graph
  (:mod:`ffedge.export.tflite_decode`), so the app only thresholds and runs NMS.
* The metadata travels inside the flatbuffer (``Metadata`` entry ``"ffedge"``) and in a
  ``.tflite.json`` sidecar; both files are written together, and only after the artifact,
  run in ai-edge-litert, has passed the fidelity gate against torch FP32.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffedge.artifact.formats import embed_tflite
from ffedge.artifact.metadata import ArtifactMetadata
from ffedge.errors import FFEdgeError, require
from ffedge.export import tflite_flatbuffer as tfb
from ffedge.export.calibration_plan import Calibration
from ffedge.export.pipeline import ExportContext, ExportRequest, Target, export
from ffedge.export.report import ExportReport
from ffedge.progress import log

PRECISIONS = ("fp32", "fp16", "int8")
DCN_LOWERINGS = ("gather", "gridsample")
IO_TYPES = tfb.IO_TYPES
CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class TFLiteOptions:
    """What kind of ``.tflite`` to build."""

    precision: str = "fp32"
    io: str = "float"
    decode_in_graph: bool = False
    per_channel: bool = True
    keep_names: bool = False
    dcn: str = "gather"
    require_gpu_delegate: bool = False  # fail (nothing written) unless the GPU delegate takes all
    channel_order: str = "RGB"  # the .tflite's input pixels; the model's own order is folded in

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise FFEdgeError(f"unknown --precision {self.precision!r}; choose one of {PRECISIONS}")
        if self.io not in IO_TYPES:
            raise FFEdgeError(f"unknown --io {self.io!r}; choose one of {IO_TYPES}")
        if self.dcn not in DCN_LOWERINGS:
            raise FFEdgeError(f"unknown --dcn {self.dcn!r}; choose one of {DCN_LOWERINGS}")
        if self.channel_order.upper() not in CHANNEL_ORDERS:
            raise FFEdgeError(f"unknown --channel-order {self.channel_order!r}; choose rgb or bgr")
        object.__setattr__(self, "channel_order", self.channel_order.upper())
        if self.io != "float" and self.precision != "int8":
            raise FFEdgeError(f"--io {self.io} needs --precision int8 (a float model has float I/O)")

    def tag(self) -> str:
        parts = [] if self.precision == "fp32" else [self.precision]
        if self.io != "float":
            parts.append(f"{self.io}io")
        if self.decode_in_graph:
            parts.append("decoded")
        if self.channel_order != "RGB":
            parts.append(self.channel_order.lower())
        return "".join("_" + p for p in parts)


def litert() -> Any:
    return require("litert_torch", "tflite")


@contextlib.contextmanager
def _quiet() -> Any:
    """litert-torch prints a progress tree on stdout and absl logs on stderr, and its FP16
    recipe (ai-edge-quantizer) progress bars on stderr; keep our one-line CLI output
    readable (set FFEDGE_VERBOSE=1 to see them)."""
    if os.environ.get("FFEDGE_VERBOSE"):
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _float_only(quantizer_cls: type, float_modules: tuple[type, ...] = ()) -> type:
    """A PT2E quantizer that never observes integer tensors.

    V1's deformable convs compute sampling positions with integer index tensors; the stock
    annotator marks an integer ``add`` for quantisation and calibration then fails
    (``histc`` on Long). Dropping those annotations leaves integer math alone. Sigmoids stay
    float too: TFLite pins a quantised sigmoid's output to scale 1/256, and the converter
    then rejects the layout transposes around V1's BiFPN swish ("same scale constraint").
    """
    import torch
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    float_ops = {torch.ops.aten.sigmoid.default}
    # torch.export records module types as qualified-name strings, which the stock
    # set_module_type filter (it compares classes) never matches.
    float_names = {f"{t.__module__}.{t.__qualname__}" for t in float_modules}

    def in_float_module(n: Any) -> bool:
        stack = n.meta.get("nn_module_stack") or {}
        return any(t in float_modules or (isinstance(t, str) and t in float_names)
                   for _, t in stack.values())
    aten = torch.ops.aten
    movement = {aten.permute.default, aten.transpose.int, aten.view.default,
                aten.reshape.default, aten._unsafe_view.default, aten.clone.default,
                aten.squeeze.dim, aten.unsqueeze.default, aten.flatten.using_ints}

    def quantized_source(n: Any) -> Any:
        """The producer behind a chain of layout-only ops, when its output is quantised."""
        while getattr(n, "target", None) in movement:
            n = n.args[0]
        ann = getattr(n, "meta", {}).get("quantization_annotation")
        return n if ann is not None and ann.output_qspec is not None else None

    def is_float(n: Any) -> bool:
        val = getattr(n, "meta", {}).get("val")
        return isinstance(val, torch.Tensor) and val.is_floating_point()

    class FloatOnlyQuantizer(quantizer_cls):  # type: ignore[misc, valid-type]
        def annotate(self, model):  # noqa: D102
            model = super().annotate(model)
            _keep_float(model, lambda n: n.target in float_ops or in_float_module(n), is_float)
            _share_through_movement(model, movement, quantized_source, SharedQuantizationSpec)
            return model

    return FloatOnlyQuantizer


def _keep_float(model: Any, float_node: Any, is_float: Any) -> None:
    """Drop annotations of float-only nodes, and of integer inputs/outputs anywhere."""
    for node in model.graph.nodes:
        ann = node.meta.get("quantization_annotation")
        if ann is None:
            continue
        if float_node(node):
            del node.meta["quantization_annotation"]
            continue
        for inp in [i for i in ann.input_qspec_map if not is_float(i)]:
            del ann.input_qspec_map[inp]
        if ann.output_qspec is not None and not is_float(node):
            ann.output_qspec = None


def _share_through_movement(model: Any, movement: set, quantized_source: Any,
                            shared_spec: Any) -> None:
    """An input reached through transposes/reshapes shares its producer's scale: TFLite
    requires a quantised TRANSPOSE/RESHAPE to keep scale and zero point."""
    for node in model.graph.nodes:
        ann = node.meta.get("quantization_annotation")
        if ann is None:
            continue
        for inp in list(ann.input_qspec_map):
            if getattr(inp, "target", None) in movement:
                src = quantized_source(inp)
                if src is not None:
                    ann.input_qspec_map[inp] = shared_spec(src)


def quantize_pt2e(wrapper: Any, example: Any, dataset: Any, per_channel: bool = True,
                  float_modules: tuple[type, ...] = ()) -> tuple[Any, Any]:
    """PT2E static INT8 of the NHWC deployment wrapper, calibrated on ``dataset``.

    ``float_modules``: module types left in float (V1's DCN masks, see
    :class:`~ffedge.export.tflite_dcn.Modulator`; with the grid_sample lowering the whole
    DCN, though litert-torch's grid_sampler decomposition fails on the quantised graph anyway).

    Returns (quantised graph module, quantizer); the quantizer goes into litert-torch's
    ``QuantConfig`` so the converter lowers the Q/DQ pairs to integer kernels.
    """
    import torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = torch.export.export(wrapper, (example,)).module()
    quantizer = _float_only(PT2EQuantizer, float_modules)().set_global(
        get_symmetric_quantization_config(is_per_channel=per_channel))
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for (nhwc,) in dataset.representative_dataset(nhwc=True):
            prepared(torch.from_numpy(nhwc))
    quantized = convert_pt2e(prepared, fold_quantize=False)
    allow_exported_model_train_eval(quantized)  # the converter wrapper calls .eval()
    return quantized, quantizer


def convert(module: Any, example: Any, quant_config: Any = None) -> bytes:
    """torch module -> ``.tflite`` bytes; the input is named ``images``."""
    lt = litert()
    try:
        with _quiet():
            edge = lt.convert(module.eval(), (), {"images": example}, quant_config=quant_config)
            return bytes(edge.model_content())
    except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise FFEdgeError(f"litert-torch could not convert the model: {first[:300]}") from None


def sidecar_text(meta: ArtifactMetadata) -> str:
    d = meta.to_sidecar()
    if meta.extra.get("decode_in_graph"):
        d["outputs"] = meta.extra["decoded_outputs"]
    return json.dumps(d, indent=2, sort_keys=True) + "\n"


def _graph_passes(ctx: ExportContext, module: Any) -> Any:
    """The pipeline's ``--optimize`` torch passes (after the DCN lowering: its gather form is
    not the DCN the grid pass rewrites); level 0 returns ``module`` itself."""
    from ffedge.export.passes import current_level, optimize_module

    level = current_level()
    out = optimize_module(module, level)
    if level:
        ctx.details["optimize"] = level
        ctx.notes.extend(f"graph pass {n}" for n in getattr(out, "graph_passes", []))
    return out


class TFLiteTarget(Target):
    """NHWC ``.tflite`` through litert-torch; INT8 by PT2E (no per-node fallback search:
    PT2E annotates modules, not ONNX node names)."""

    sidecar = True

    def check(self, request: ExportRequest) -> None:
        opts = request.options or TFLiteOptions(precision=request.precision)
        if opts.precision != request.precision:
            raise FFEdgeError("TFLiteOptions.precision and the request's precision differ")
        litert()

    def default_output(self, request: ExportRequest, suffix: str) -> Path:
        opts = request.options or TFLiteOptions(precision=request.precision)
        return Path(f"{request.model}{opts.tag()}{suffix}")

    def prepare(self, ctx: ExportContext) -> None:
        import torch

        from ffedge.export.fold import fold_dcn_batchnorm
        from ffedge.export.wrapper import DeployWrapper
        from ffedge.models.dcn import has_dcn

        opts: TFLiteOptions = ctx.options or TFLiteOptions(precision=ctx.request.precision)
        folded, _ = fold_dcn_batchnorm(ctx.net)
        if has_dcn(ctx.net):
            ctx.extra["dcn"] = opts.dcn
            if opts.dcn == "gather":
                from ffedge.export.tflite_dcn import use_gather_dcn

                use_gather_dcn(folded)
            else:
                ctx.notes.append("deformable convs lowered through grid_sample: large "
                                 "constants, slow in TFLite and no INT8 (see docs/mobile.md)")
        folded = _graph_passes(ctx, folded)
        if opts.precision == "int8" and ctx.extra.get("dcn") == "gather":
            from ffedge.export.tflite_equalize import equalise_backbone

            ctx.notes.append(f"backbone equalised for int8 ({equalise_backbone(folded)} conv "
                             "pairs)")
        folded = _serve_channel_order(ctx, folded, opts.channel_order)
        h, w = ctx.spec.input_size
        ctx.spec = ctx.spec.with_layout("NHWC")
        ctx.state.update(opts=opts, wrapper=DeployWrapper(folded, nhwc=True).eval(),
                         example=torch.zeros(1, h, w, 3))
        ctx.extra.update(format="tflite", layout="NHWC", io_type=opts.io,
                         converter=f"litert-torch {getattr(litert(), '__version__', '?')}",
                         decode_in_graph=opts.decode_in_graph)
        if opts.decode_in_graph:
            from ffedge.export.tflite_decode import DECODED_SEMANTICS

            ctx.extra["decoded_outputs"] = DECODED_SEMANTICS

    def convert(self, ctx: ExportContext) -> Path:
        quant_config = None
        if ctx.request.precision == "fp16":
            from litert_torch.generative.quantize.quant_recipes import full_fp16_recipe

            quant_config = full_fp16_recipe()
            ctx.extra["quantization"] = {"backend": "ai-edge-quantizer", "weights": "float16",
                                         "compute": "float32"}
        return self._finish(ctx, ctx.state["wrapper"], quant_config)

    def quantise(self, ctx: ExportContext, dataset: Any, keep_float: list[str]) -> Path:
        from litert_torch.quantize.quant_config import QuantConfig

        from ffedge.export.tflite_dcn import Sampler
        from ffedge.models.dcn import DeformableConv2d

        opts: TFLiteOptions = ctx.state["opts"]
        if ctx.extra.get("dcn") == "gather":  # PT2E never converts the DCN models: see tflite_quant
            return self._quantise_converted(ctx, dataset, keep_float)
        float_modules = (DeformableConv2d,) if opts.dcn == "gridsample" else (Sampler,)
        inner, quantizer = quantize_pt2e(ctx.state["wrapper"], ctx.state["example"], dataset,
                                         opts.per_channel, float_modules)
        ctx.extra["quantization"] = {
            "backend": "litert-torch PT2E static",
            "weights": "int8 symmetric " + ("per-channel" if opts.per_channel else "per-tensor"),
            "activations": "int8 asymmetric per-tensor (histogram observer)"}
        return self._finish(ctx, inner, QuantConfig(pt2e_quantizer=quantizer))

    def _quantise_converted(self, ctx: ExportContext, dataset: Any, keep_float: list[str]
                            ) -> Path:
        """INT8 by ai-edge-quantizer on the FP32 ``.tflite`` (converted once, names kept,
        reused by every fallback trial); the DCN sampling stays float."""
        from ffedge.export.tflite_quant import (
            DECODE_SCOPE,
            FUSE_ISLANDS,
            fuse_float_islands,
            quantize_float_tflite,
        )

        opts: TFLiteOptions = ctx.state["opts"]
        if "float_tflite" not in ctx.state:
            ctx.state["float_tflite"] = self._convert(ctx, ctx.state["wrapper"], None, "fp32")
        log(f"quantising the converted {ctx.model} with ai-edge-quantizer ...")
        scopes = [*keep_float, DECODE_SCOPE] if opts.decode_in_graph else list(keep_float)
        samples = (x for (x,) in dataset.representative_dataset(nhwc=True))
        data = quantize_float_tflite(ctx.state["float_tflite"], samples, opts.per_channel,
                                     scopes, ctx.request.threads)
        ctx.state["float_scopes"] = True
        if FUSE_ISLANDS:  # int8 LEAKY_RELU instead of float round trips (off: docs/mobile.md)
            data = fuse_float_islands(data)
        ctx.extra["quantization"] = {
            "backend": "ai-edge-quantizer static (after litert-torch FP32 conversion)",
            "weights": "int8 symmetric " + ("per-channel" if opts.per_channel else "per-tensor"),
            "activations": "int8 asymmetric per-tensor (min/max)",
            "float": "DCN sampling (positions, bilinear weights, masks, gathers), "
                     "backbone stage1"
                     + (", decoding" if opts.decode_in_graph else "")}
        return self._postprocess(ctx, data)

    def _convert(self, ctx: ExportContext, inner: Any, quant_config: Any, label: str) -> bytes:
        from ffedge.export.tflite_decode import DecodeInGraph, NamedOutputs

        opts: TFLiteOptions = ctx.state["opts"]
        module = DecodeInGraph(inner, ctx.spec) if opts.decode_in_graph else NamedOutputs(inner)
        log(f"converting {ctx.model} ({label}) with litert-torch ...")
        return convert(module, ctx.state["example"], quant_config)

    def _finish(self, ctx: ExportContext, inner: Any, quant_config: Any) -> Path:
        opts: TFLiteOptions = ctx.state["opts"]
        return self._postprocess(ctx, self._convert(ctx, inner, quant_config, opts.precision))

    def _postprocess(self, ctx: ExportContext, data: bytes) -> Path:
        opts: TFLiteOptions = ctx.state["opts"]
        if not opts.keep_names:
            data = tfb.strip_names(data)
        if opts.precision == "int8":
            data = tfb.retype_io(data, opts.io, keep_float_outputs=opts.decode_in_graph)
            if not ctx.state.get("float_scopes"):  # convs PT2E left in float: int8 weights
                data = tfb.int8_float_weights(data)  # (not those kept float on purpose)
        _delegate_check(ctx, opts, data)
        ctx.extra["io"] = tfb.io_contract(data)
        ctx.details["ops"] = sum(tfb.op_histogram(data).values())
        path = ctx.tmp / "candidate.tflite"
        meta = ArtifactMetadata(model=ctx.model, spec=ctx.spec, precision=opts.precision,
                                checkpoint_sha256=ctx.checkpoint_sha, extra=dict(ctx.extra))
        path.write_bytes(embed_tflite(data, meta.to_props()))
        return path

    def write(self, ctx: ExportContext, candidate: Path, meta: ArtifactMetadata,
              paths: list[Path]) -> None:
        from ffedge.artifact.tflite_metadata import standard_metadata, with_standard_metadata

        data = embed_tflite(candidate.read_bytes(), meta.to_props())
        paths[0].write_bytes(with_standard_metadata(data, standard_metadata(meta)))

    def sidecar_text(self, meta: ArtifactMetadata) -> str:
        return sidecar_text(meta)

    def histogram(self, ctx: ExportContext, candidate: Path) -> dict[str, int]:
        return tfb.op_histogram(candidate.read_bytes())


def _serve_channel_order(ctx: ExportContext, folded: Any, order: str) -> Any:
    """``folded`` taking ``order`` pixels; ``ctx.spec`` follows (channel order, mean/std),
    and the torch reference becomes "flip, then the original model", so the gate checks
    the fold against the untouched network on the same (``order``) input."""
    from ffedge.export.channel_order import ChannelFlip, serve_in_order
    from ffedge.runtimes.torch_runner import TorchRunner

    module, spec, how = serve_in_order(folded, ctx.spec, order)
    if spec is not ctx.spec:
        ctx._reference = TorchRunner(ctx.model, module=ChannelFlip(ctx.net, spec),
                                     threads=ctx.request.threads)
        ctx.notes.append(f"input {order} ({ctx.model} was trained on {ctx.spec.channel_order}; "
                         f"channel flip {how}; mean/std reordered to {list(spec.mean)}/"
                         f"{list(spec.std)})")
    ctx.spec = spec
    return module


def _delegate_check(ctx: ExportContext, opts: TFLiteOptions, data: bytes) -> None:
    """GPU / Core ML delegate coverage into the report and metadata; with
    ``require_gpu_delegate``, fail naming every op the GPU delegate refuses."""
    from ffedge.artifact.tflite_delegates import coreml_delegate_report, gpu_delegate_report

    gpu, coreml = gpu_delegate_report(data), coreml_delegate_report(data)
    if opts.require_gpu_delegate and not gpu.ok:
        ops = "; ".join(f"{op} {why}" for op, why in gpu.offending().items())
        raise FFEdgeError(f"--require-gpu-delegate: the GPU delegate refuses {ops} "
                          "(nothing written; see docs/mobile.md, delegates)")
    ctx.extra["delegates"] = {"gpu": gpu.to_dict(), "coreml": coreml.to_dict()}
    ctx.notes.extend([gpu.summary(), coreml.summary()])


def export_tflite(model: str, checkpoint: str | Path | None = None,
                  output: str | Path | None = None, input_size: tuple[int, int] | None = None,
                  options: TFLiteOptions | None = None, calib: str | Path | None = None,
                  verify_images: list[str | Path] | None = None, verify: bool = True,
                  min_f1: float | None = None, threads: int | None = None,
                  **calibration: Any) -> ExportReport:
    """``model`` as ``.tflite`` (+ ``.tflite.json``), checked in ai-edge-litert against torch."""
    options = options or TFLiteOptions()
    return export("tflite", ExportRequest(
        model, checkpoint, output, input_size, options.precision, options, verify,
        verify_images or (),
        calibration=Calibration(calib, **calibration) if calib is not None else None,
        min_f1=min_f1, threads=threads))
