"""``ffexport tflite``: a ``.tflite`` an Android/iOS app can embed, FP32 / FP16 / INT8.

Why litert-torch and not onnx2tf: litert-torch converts the torch module directly (no
TensorFlow, numpy 2, the same venv as onnxruntime/OpenVINO), while onnx2tf pins
TensorFlow 2.19, numpy < 2, onnx 1.19 and downloads a calibration file from the internet
even for FP32 — it cannot share an environment with the rest of ffedge.

* Input is NHWC ``[1, H, W, 3]`` (the camera's layout; the transpose is in the graph).
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
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffedge.errors import FFEdgeError, require
from ffedge.export import tflite_flatbuffer as tfb
from ffedge.artifact.atomic import atomic_files
from ffedge.export.fidelity import FidelityReport, check_fidelity
from ffedge.artifact.metadata import ArtifactMetadata, sidecar_path
from ffedge.export.quant_common import log
from ffedge.export.verify import verification_batches
from ffedge.runtimes.tflite_runner import TFLiteRunner, embed_metadata

PRECISIONS = ("fp32", "fp16", "int8")
DCN_LOWERINGS = ("gather", "gridsample")
IO_TYPES = tfb.IO_TYPES
# TFLite/XNNPACK reorders float sums differently from torch: loose raw bounds for FP32.
FP32_TOLERANCES = {"boxes": 1e-3, "scores": 1e-3, "landmarks": 1e-3}


@dataclass(frozen=True)
class TFLiteOptions:
    """What kind of ``.tflite`` to build."""

    precision: str = "fp32"
    io: str = "float"
    decode_in_graph: bool = False
    per_channel: bool = True
    keep_names: bool = False
    dcn: str = "gather"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise FFEdgeError(f"unknown --precision {self.precision!r}; choose one of {PRECISIONS}")
        if self.io not in IO_TYPES:
            raise FFEdgeError(f"unknown --io {self.io!r}; choose one of {IO_TYPES}")
        if self.dcn not in DCN_LOWERINGS:
            raise FFEdgeError(f"unknown --dcn {self.dcn!r}; choose one of {DCN_LOWERINGS}")
        if self.io != "float" and self.precision != "int8":
            raise FFEdgeError(f"--io {self.io} needs --precision int8 (a float model has float I/O)")

    def tag(self) -> str:
        parts = [] if self.precision == "fp32" else [self.precision]
        if self.io != "float":
            parts.append(f"{self.io}io")
        if self.decode_in_graph:
            parts.append("decoded")
        return "".join("_" + p for p in parts)


@dataclass
class TFLiteReport:
    """What the export produced and how it was judged."""

    path: Path
    model: str
    options: TFLiteOptions
    parameters: int
    size_bytes: int
    op_histogram: dict[str, int]
    io: dict[str, Any]
    fidelity: FidelityReport | None = None
    tolerances: dict[str, float] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        o = self.options
        ops = sum(self.op_histogram.values())
        top = ", ".join(f"{k} {v}" for k, v in list(self.op_histogram.items())[:8])
        inp = self.io["input"]
        q = f" (scale {inp['scale']:.6g}, zero point {inp['zero_point']})" if "scale" in inp else ""
        lines = [
            f"exported {self.model} -> {self.path}",
            f"  {o.precision} | io {o.io} | decode in graph {'yes' if o.decode_in_graph else 'no'}"
            f" | parameters {self.parameters:,} | file {self.size_bytes / 1024:.1f} KiB",
            f"  input {inp['name']} {inp['shape']} {inp['dtype']}{q}; outputs "
            + ", ".join(f"{d['name']} {d['shape']} {d['dtype']}" for d in self.io["outputs"]),
            f"  {ops} ops ({top})",
        ]
        if self.fidelity is not None:
            lines.append(self.fidelity.summary())
        lines.extend(f"  note: {n}" for n in self.notes)
        lines.append(f"  done in {self.seconds:.1f} s")
        return "\n".join(lines)


def litert() -> Any:
    return require("litert_torch", "tflite")


@contextlib.contextmanager
def _quiet() -> Any:
    """litert-torch prints a progress tree on stdout and absl logs on stderr; keep our
    one-line CLI output readable (set FFEDGE_VERBOSE=1 to see them)."""
    if os.environ.get("FFEDGE_VERBOSE"):
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
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
            for node in model.graph.nodes:
                ann = node.meta.get("quantization_annotation")
                if ann is None:
                    continue
                if node.target in float_ops or in_float_module(node):
                    del node.meta["quantization_annotation"]
                    continue
                for inp in [i for i in ann.input_qspec_map if not is_float(i)]:
                    del ann.input_qspec_map[inp]
                if ann.output_qspec is not None and not is_float(node):
                    ann.output_qspec = None
            # An input reached through transposes/reshapes shares its producer's scale:
            # TFLite requires a quantised TRANSPOSE/RESHAPE to keep scale and zero point.
            for node in model.graph.nodes:
                ann = node.meta.get("quantization_annotation")
                if ann is None:
                    continue
                for inp in list(ann.input_qspec_map):
                    if getattr(inp, "target", None) in movement:
                        src = quantized_source(inp)
                        if src is not None:
                            ann.input_qspec_map[inp] = SharedQuantizationSpec(src)
            return model

    return FloatOnlyQuantizer


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


def build_metadata(model: str, spec: Any, options: TFLiteOptions, checkpoint_sha: str,
                   contract: dict[str, Any], extra: dict[str, Any]) -> ArtifactMetadata:
    from ffedge.export.tflite_decode import DECODED_SEMANTICS

    ext: dict[str, Any] = {"format": "tflite", "layout": "NHWC",
                           "converter": f"litert-torch {getattr(litert(), '__version__', '?')}",
                           "io_type": options.io, "io": contract,
                           "decode_in_graph": options.decode_in_graph, **extra}
    if options.decode_in_graph:
        ext["decoded_outputs"] = DECODED_SEMANTICS
    return ArtifactMetadata(model=model, spec=spec, precision=options.precision,
                            checkpoint_sha256=checkpoint_sha, extra=ext)


def sidecar_text(meta: ArtifactMetadata) -> str:
    d = meta.to_sidecar()
    if meta.extra.get("decode_in_graph"):
        d["outputs"] = meta.extra["decoded_outputs"]
    return json.dumps(d, indent=2, sort_keys=True) + "\n"


def export_tflite(
    model: str,
    checkpoint: str | Path | None = None,
    output: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    options: TFLiteOptions | None = None,
    calib: str | Path | None = None,
    num_images: int = 300,
    seed: int = 0,
    eval_images: str | Path | list | None = None,
    num_eval: int = 50,
    min_f1: float = 0.95,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    verify: bool = True,
) -> TFLiteReport:
    """Convert ``model`` to ``.tflite``; gate it in ai-edge-litert against torch FP32; write
    the ``.tflite`` and its ``.tflite.json`` sidecar only when it passes.

    Gate images: ``eval_images``, else a held-out sample of ``calib`` (never calibration
    images), else two structured-noise images. FP32 must also stay within
    :data:`FP32_TOLERANCES` on the raw outputs. With random weights (no checkpoint) F1 is
    reported, not gated: such models saturate into hundreds of exactly tied boxes per image
    near score 0.5, and which of a tie survives NMS is decided by the last float bit (FP32
    TFLite vs torch, 1e-7 apart, already scores F1 ~0.8 there).
    """
    import torch

    from ffedge.export.fold import fold_dcn_batchnorm
    from ffedge.export.tflite_decode import DecodeInGraph, NamedOutputs
    from ffedge.export.wrapper import DeployWrapper
    from ffedge.models import create_model
    from ffedge.models.checkpoint import file_sha256
    from ffedge.models.dcn import has_dcn
    from ffedge.runtimes.torch_runner import TorchRunner

    options = options or TFLiteOptions()
    if options.precision == "int8" and calib is None:
        raise FFEdgeError("--precision int8 needs --calib IMAGES (calibration photos)")
    litert()
    t0 = time.perf_counter()
    out = Path(output) if output else Path(f"{model}{options.tag()}.tflite")
    if out.suffix.lower() != ".tflite":
        raise FFEdgeError(f"output {out} must end in .tflite")
    net = create_model(model, checkpoint=checkpoint, input_size=input_size)
    spec = net.spec
    sha = file_sha256(checkpoint) if isinstance(checkpoint, (str, Path)) else ""
    reference = TorchRunner(model, module=net, threads=threads)
    folded, _ = fold_dcn_batchnorm(net)
    wrapper = DeployWrapper(folded, nhwc=True).eval()
    h, w = spec.input_size
    example = torch.zeros(1, h, w, 3)
    notes: list[str] = []
    extra: dict[str, Any] = {}
    if has_dcn(net):
        extra["dcn"] = options.dcn
        if options.dcn == "gather":
            from ffedge.export.tflite_dcn import use_gather_dcn

            use_gather_dcn(folded)
        else:
            notes.append("deformable convs lowered through grid_sample: large constants, slow "
                         "in TFLite and no INT8 (see docs/mobile.md)")

    plan = None
    if calib is not None:
        from ffedge.export.quant_common import plan_calibration

        plan = plan_calibration(calib, num_images, seed, eval_images, num_eval)
        notes.extend(plan.notes)
    quant_config = None
    inner: Any = wrapper
    if options.precision == "fp16":
        from litert_torch.generative.quantize.quant_recipes import full_fp16_recipe

        quant_config = full_fp16_recipe()
        extra["quantization"] = {"backend": "ai-edge-quantizer", "weights": "float16",
                                 "compute": "float32"}
    elif options.precision == "int8":
        from litert_torch.quantize.quant_config import QuantConfig

        from ffedge.calibration import CalibrationDataset

        dataset = CalibrationDataset(plan.calib_files, spec, cache_dir=cache_dir)
        log(f"quantising {model}: {len(dataset)} calibration images, "
            f"{len(plan.eval_files)} held-out images (PT2E static int8)")
        from ffedge.export.tflite_dcn import Sampler
        from ffedge.models.dcn import DeformableConv2d

        float_modules = ((DeformableConv2d,) if options.dcn == "gridsample"
                         else (Sampler,))
        inner, quantizer = quantize_pt2e(wrapper, example, dataset, options.per_channel,
                                         float_modules)
        quant_config = QuantConfig(pt2e_quantizer=quantizer)
        extra["quantization"] = {
            "backend": "litert-torch PT2E static",
            "weights": "int8 symmetric " + ("per-channel" if options.per_channel else "per-tensor"),
            "activations": "int8 asymmetric per-tensor (histogram observer)"}
        extra["calibration"] = plan.describe()
    module = DecodeInGraph(inner, spec) if options.decode_in_graph else NamedOutputs(inner)
    log(f"converting {model} ({options.precision}) with litert-torch ...")
    data = convert(module, example, quant_config)
    if not options.keep_names:
        data = tfb.strip_names(data)
    if options.precision == "int8":
        data = tfb.retype_io(data, options.io, keep_float_outputs=options.decode_in_graph)
    contract = tfb.io_contract(data)
    meta = build_metadata(model, spec, options, sha, contract, extra)

    report = TFLiteReport(out, model, options, net.num_parameters(), 0, tfb.op_histogram(data),
                          contract, notes=notes)
    with tempfile.TemporaryDirectory(prefix="ffedge-tflite-") as tmpdir:
        cand_path = Path(tmpdir) / "candidate.tflite"
        cand_path.write_bytes(embed_metadata(data, meta.to_props()))
        if verify:
            report.fidelity, report.tolerances = _gate(
                reference, TFLiteRunner(cand_path, threads=threads), spec, plan, eval_images,
                options, checkpoint is not None, min_f1, out)
            meta.extra["fidelity"] = report.fidelity.to_dict()["detections"]
            if checkpoint is None:
                notes.append("random weights: detection agreement reported, not gated "
                             "(tied scores; see docs/mobile.md)")
    final = embed_metadata(data, meta.to_props())
    with atomic_files([out, sidecar_path(out)]) as (tmp_model, tmp_sidecar):
        tmp_model.write_bytes(final)
        tmp_sidecar.write_text(sidecar_text(meta))
    report.size_bytes = len(final)
    report.seconds = time.perf_counter() - t0
    return report


def _gate(reference: Any, candidate: TFLiteRunner, spec: Any, plan: Any, eval_images: Any,
          options: TFLiteOptions, trained: bool, min_f1: float, out: Path
          ) -> tuple[FidelityReport, dict[str, float] | None]:
    """Run the fidelity gate; raise (nothing written) when it fails."""
    if plan is not None:
        images = plan.eval_files
    elif eval_images is not None:
        images = eval_images if isinstance(eval_images, list) else [eval_images]
    else:
        images = []
    batches = verification_batches(spec, images, n_random=0 if images else 2)
    gated_f1 = min_f1 if trained else 0.0
    fidelity = check_fidelity(reference, candidate, batches, gated_f1)
    tolerances = FP32_TOLERANCES if options.precision == "fp32" else None
    reasons = fidelity.parity.failures(tolerances, gated_f1)
    if reasons:
        raise FFEdgeError(f"fidelity gate failed, nothing written to {out}: "
                          + "; ".join(reasons) + f" ({fidelity.parity.images} images)")
    return fidelity, tolerances

