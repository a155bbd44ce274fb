"""The ONNX target: FP32 ONNX (``ffexport onnx``) and INT8 QDQ ONNX (``ffexport int8``),
run by onnxruntime. The pipeline (:mod:`ffedge.export.pipeline`) does the rest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffedge.artifact.formats import stamp_onnx
from ffedge.artifact.metadata import ArtifactMetadata
from ffedge.export.calibration_plan import Calibration
from ffedge.export.int8_ort import (
    QuantOptions,
    compact_qdq,
    quantize_qdq,
    quantize_weights_only,
)
from ffedge.export.onnx_export import OnnxOptions, node_histogram, trace_to_onnx
from ffedge.export.pipeline import FALLBACK, ExportContext, ExportRequest, Target, export
from ffedge.export.report import ExportReport
from ffedge.models.dcn import has_dcn

SKIP_FALLBACK_OPS = ("Constant", "Identity")
INT8_FALLBACK = "sensitivity"  # measured ranking + bisection (docs/int8.md)


def _sensitivity_strategy(build, names, reference, probe_batches, min_f1):
    from ffedge.export.sensitivity import sensitivity_fallback
    from ffedge.progress import log

    return sensitivity_fallback(build, names, reference, probe_batches, min_f1, log=log)


FALLBACK.setdefault(INT8_FALLBACK, _sensitivity_strategy)


@dataclass(frozen=True)
class OnnxTargetOptions:
    graph: OnnxOptions = field(default_factory=OnnxOptions)
    quant: QuantOptions = field(default_factory=QuantOptions)


class OnnxTarget(Target):
    def prepare(self, ctx: ExportContext) -> None:
        opts = ctx.options or OnnxTargetOptions()
        graph_opts = opts.graph
        if ctx.request.precision == "int8" and graph_opts.dcn != "native":
            graph_opts = OnnxOptions(dcn="native")  # the quantiser needs the compact graph
        graph = trace_to_onnx(ctx.net, ctx.spec.input_size, graph_opts)
        path = ctx.tmp / "fp32.onnx"
        path.write_bytes(graph.serialize())
        ctx.state["fp32"], ctx.state["counter"] = path, 0
        ctx.state.setdefault("fallback_strategy", INT8_FALLBACK)
        ctx.details.update(opset=graph.opset, simplifier=graph.simplifier)
        ctx.extra.update(opset=graph.opset, layout="NCHW", dynamic_batch=graph_opts.dynamic_batch,
                         dynamic_size=graph_opts.dynamic_size)
        if has_dcn(ctx.net):
            ctx.extra["dcn"] = graph_opts.dcn
        elif graph_opts.dcn != OnnxOptions().dcn:
            ctx.notes.append(f"model {ctx.model} has no deformable convs: --dcn ignored")

    def convert(self, ctx: ExportContext) -> Path:
        return ctx.state["fp32"]

    def quantise(self, ctx: ExportContext, dataset: Any, keep_float: list[str]) -> Path:
        import onnx

        quant = (ctx.options or OnnxTargetOptions()).quant
        ctx.state["counter"] += 1
        path = ctx.tmp / f"q{ctx.state['counter']}.onnx"
        key = _dataset_key(dataset, quant)
        quantize_qdq(ctx.state["fp32"], path, dataset, quant.with_fallback(keep_float),
                     calibration_cache=ctx.tmp / f"ranges-{key}.json",
                     prep_dir=ctx.tmp / f"prep-{key}")
        proto = onnx.load(str(path))
        if quantize_weights_only(proto):
            onnx.save(proto, str(path))
        ctx.extra["quantization"] = {"backend": "onnxruntime QDQ", **quant.describe(),
                                     "fallback_nodes": len(keep_float)}
        return path

    def fallback_names(self, ctx: ExportContext) -> list[str]:
        import onnx

        proto = onnx.load(str(ctx.state["fp32"]))
        return [n.name for n in proto.graph.node if n.op_type not in SKIP_FALLBACK_OPS]

    def write(self, ctx: ExportContext, candidate: Path, meta: ArtifactMetadata,
              paths: list[Path]) -> None:
        import onnx

        proto = onnx.load(str(candidate))
        if ctx.request.precision == "int8":
            compact_qdq(proto)  # same function, about half the bytes (short Q/DQ names)
        stamp_onnx(proto, meta)
        paths[0].write_bytes(proto.SerializeToString(deterministic=True))

    def histogram(self, ctx: ExportContext, candidate: Path) -> dict[str, int]:
        import onnx

        return node_histogram(onnx.load(str(candidate), load_external_data=False))

    def int8_coverage(self, ctx: ExportContext, candidate: Path) -> tuple[int, int] | None:
        """Convs whose data and weight inputs both come from DequantizeLinear (what
        onnxruntime fuses into QLinearConv), of all Conv nodes."""
        import onnx

        graph = onnx.load(str(candidate), load_external_data=False).graph
        producer = {o: n.op_type for n in graph.node for o in n.output}
        convs = [n for n in graph.node if n.op_type == "Conv"]
        int8 = sum(all(producer.get(i) == "DequantizeLinear" for i in n.input[:2]) for n in convs)
        return int8, len(convs)


def _dataset_key(dataset: Any, quant: QuantOptions) -> str:
    """Same calibration files and method -> same cached ranges and equalised graph."""
    import hashlib

    files = "\n".join(str(f) for f in getattr(dataset, "files", []))
    text = f"{files}|{quant.method}|{quant.percentile}|{quant.equalize}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- Python API (the names the README documents) ------------------------------------------

def export_onnx(model: str, checkpoint: str | Path | None = None, output: str | Path | None = None,
                input_size: tuple[int, int] | None = None, options: OnnxOptions | None = None,
                verify_images: list[str | Path] | None = None, verify: bool = True,
                threads: int | None = None) -> ExportReport:
    """Export ``model`` to FP32 ONNX, verify it in onnxruntime against torch, then write it.
    Nothing is left at ``output`` when tracing, checking or verification fails."""
    opts = OnnxTargetOptions(graph=options or OnnxOptions())
    return export("onnx", ExportRequest(model, checkpoint, output, input_size, "fp32", opts,
                                        verify, verify_images or (), threads=threads))


def export_int8(model: str, calib: str | Path, checkpoint: str | Path | None = None,
                output: str | Path | None = None, input_size: tuple[int, int] | None = None,
                options: QuantOptions | None = None, min_f1: float | None = None,
                fallback: bool = True, threads: int | None = None, **calibration: Any
                ) -> ExportReport:
    """INT8 QDQ ONNX calibrated on ``calib``, gated against torch FP32 on held-out photos
    (``calibration``: num_images, seed, eval_images, num_eval, cache_dir)."""
    opts = OnnxTargetOptions(quant=options or QuantOptions())
    return export("onnx", ExportRequest(model, checkpoint, output, input_size, "int8", opts,
                                        calibration=Calibration(calib, **calibration),
                                        min_f1=min_f1, fallback=fallback, threads=threads))
