"""``ffexport openvino``: an OpenVINO IR (.xml + .bin) for x86 CPUs, FP32 / FP16 / INT8.

The IR comes from the ONNX export with deformable convs lowered to GridSample + MatMul
(OpenVINO cannot convert the ONNX ``DeformConv`` op). INT8 is NNCF post-training
quantisation of the IR, or ONNX Runtime QDQ converted to IR. Verification, the gate and
the fallback search are the pipeline's (:mod:`ffedge.export.pipeline`). The spec travels
in ``rt_info`` and in a ``.xml.json`` sidecar; the three files are written together or
not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffedge.artifact.formats import write_rt_info
from ffedge.artifact.metadata import ArtifactMetadata
from ffedge.errors import FFEdgeError
from ffedge.export.calibration_plan import Calibration
from ffedge.export.onnx_export import OnnxOptions, trace_to_onnx
from ffedge.export.pipeline import ExportContext, ExportRequest, Target, export
from ffedge.export.report import ExportReport
from ffedge.models.dcn import has_dcn
from ffedge.runtimes.openvino_runner import openvino

PRECISIONS = ("fp32", "fp16", "int8")
INT8_VIA = ("nncf", "qdq")
DEFAULT_INT8_VIA = "nncf"
PRESETS = ("mixed", "performance")
QUANTIZABLE_TYPES = ("Convolution", "GroupConvolution", "MatMul")
#: op types NNCF never quantises: the DCN sampling path, float as TensorRT's rules keep it
#: (GridSample reads float grids; quantising the level-2 tap sums' inputs alone gave eca_cbam
#: F1 0.964 and cost v2_ca every int8 conv)
FLOAT_TYPES = ("GridSample", "ReduceSum")
# ops NNCF (mixed preset) also puts FakeQuantize on the inputs of: with every conv kept
# float, eca_cbam's 117 such sites alone cost F1 0.977 at --optimize 1 (gates, BiFPN adds,
# DCN reshapes), so the fallback search must be able to keep them float too
ELEMENTWISE_TYPES = ("Add", "Subtract", "Multiply", "Divide", "Maximum", "Minimum",
                     "Concat", "Reshape", "ReduceMean", "ReduceMax", "ReduceSum",
                     "Interpolate", "Pad", "MaxPool", "AvgPool")


@dataclass(frozen=True)
class Int8Options:
    """How the INT8 IR is made: NNCF on the FP32 IR, or ORT QDQ converted to IR."""

    via: str = DEFAULT_INT8_VIA
    preset: str = "mixed"  # NNCF: mixed = asymmetric activations (PERFORMANCE may not compile)
    exclude: tuple[str, ...] = ()  # node names kept in float (OpenVINO names for nncf, ONNX for qdq)

    def __post_init__(self) -> None:
        if self.via not in INT8_VIA:
            raise FFEdgeError(f"unknown --int8-via {self.via!r}; choose one of {INT8_VIA}")
        if self.preset not in PRESETS:
            raise FFEdgeError(f"unknown --preset {self.preset!r}; choose one of {PRESETS}")

    def describe(self) -> dict:
        backend = "nncf" if self.via == "nncf" else "onnxruntime QDQ -> openvino"
        d: dict[str, Any] = {"backend": backend, "excluded": list(self.exclude)}
        if self.via == "nncf":
            d["preset"] = self.preset
        return d


def convert_onnx(path: str | Path) -> Any:
    """ONNX file -> ``ov.Model`` with the transformations ``ov.convert_model`` applies.

    ``Core.read_model`` plus the MOC pipeline gives the same graph (same op count, ONNX
    node names kept as friendly names) without the model converter's telemetry; when
    the offline-transformation module is missing, ``ov.convert_model`` is used.
    """
    ov = openvino()
    try:
        from openvino._offline_transformations import (
            apply_fused_names_cleanup,
            apply_moc_transformations,
            compress_quantize_weights_transformation,
        )
    except ImportError:
        return ov.convert_model(str(path))
    try:
        model = ov.Core().read_model(str(path))
    except RuntimeError as exc:
        raise FFEdgeError(f"OpenVINO cannot convert {Path(path).name}: "
                          f"{str(exc).splitlines()[0][:200]}") from None
    apply_moc_transformations(model, cf=False, smart_reshape=True)
    compress_quantize_weights_transformation(model)
    apply_fused_names_cleanup(model)
    return model


def quantizable_names(model: Any, types: tuple[str, ...] = QUANTIZABLE_TYPES) -> list[str]:
    """Friendly names of the ops NNCF quantises (ignored-scope candidates)."""
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in types]


def save_ir(model: Any, xml: Path, fp16: bool) -> None:
    openvino().save_model(model, str(xml), compress_to_fp16=fp16)


def ir_size(xml: Path) -> int:
    return sum(p.stat().st_size for p in (xml, xml.with_suffix(".bin")) if p.exists())


def ir_histogram(model: Any) -> dict[str, int]:
    from collections import Counter

    skip = {"Constant", "Parameter", "Result", "Convert"}
    counts = Counter(op.get_type_name() for op in model.get_ordered_ops()
                     if op.get_type_name() not in skip)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def share_constants(model: Any) -> int:
    """Merge Constant nodes with the same type, shape and bytes into one (in place).

    NNCF gives every FakeQuantize its own four range constants (``input_low`` equals
    ``output_low`` and many ranges repeat); each is a ``<layer>`` in the IR XML. On small
    models that XML outweighed the int8 savings in the .bin (nano_b: INT8 IR 964 KiB >
    FP32 871 KiB). Sharing them removes ~2/3 of the constants; the function is unchanged.
    Returns how many nodes were merged."""
    import hashlib

    seen: dict[tuple, Any] = {}
    merged = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant":
            continue
        data = op.get_data()
        key = (str(op.get_element_type()), tuple(op.get_output_shape(0)),
               hashlib.sha1(data.tobytes()).hexdigest())
        if key in seen:
            op.output(0).replace(seen[key].output(0))
            merged += 1
        else:
            seen[key] = op
    return merged


def nncf_quantize(fp32: Any, dataset, preset: str, excluded: list[str]) -> Any:
    """NNCF post-training quantisation of an ``ov.Model`` on a CalibrationDataset."""
    import logging

    openvino()  # telemetry switch before nncf is imported
    import nncf

    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)  # progress bars and per-layer info
    try:
        return nncf.quantize(
            fp32, dataset.as_nncf_dataset(),
            preset=nncf.QuantizationPreset.MIXED if preset == "mixed"
            else nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(dataset),
            ignored_scope=nncf.IgnoredScope(names=list(excluded), types=list(FLOAT_TYPES),
                                            validate=False),
        )
    finally:
        nncf_logger.setLevel(level)


class OpenVinoTarget(Target):
    sidecar = True
    default_optimize = 2  # the tap-major DCN: V1 measured faster on OpenVINO (graph-passes.md)

    def check(self, request: ExportRequest) -> None:
        openvino()

    def companion_files(self, output: Path) -> list[Path]:
        return [output.with_suffix(".bin")]

    def prepare(self, ctx: ExportContext) -> None:
        graph = trace_to_onnx(ctx.net, ctx.spec.input_size, OnnxOptions(dcn="gridsample"))
        onnx_path = ctx.tmp / "fp32.onnx"
        onnx_path.write_bytes(graph.serialize())
        ctx.state.update(onnx=onnx_path, fp32=convert_onnx(onnx_path), models={}, counter=0)
        ctx.extra.update(layout="NCHW", format="openvino-ir", opset=graph.opset)
        ctx.details["opset"] = graph.opset
        if has_dcn(ctx.net):
            ctx.extra["dcn"] = "gridsample"

    def _save(self, ctx: ExportContext, model: Any, fp16: bool) -> Path:
        ctx.state["counter"] += 1
        xml = ctx.tmp / f"candidate{ctx.state['counter']}.xml"
        save_ir(model, xml, fp16=fp16)
        ctx.state["models"][xml] = model
        return xml

    def convert(self, ctx: ExportContext) -> Path:
        return self._save(ctx, ctx.state["fp32"], ctx.request.precision == "fp16")

    def quantise(self, ctx: ExportContext, dataset: Any, keep_float: list[str]) -> Path:
        opts: Int8Options = ctx.options or Int8Options()
        ctx.state.setdefault("calibration", dataset)  # the first (full) set ranks fallbacks
        if opts.via == "nncf":
            model = nncf_quantize(ctx.state["fp32"], dataset, opts.preset,
                                  list(opts.exclude) + keep_float)
        else:
            from ffedge.export.int8_ort import QuantOptions, quantize_qdq

            ctx.state["counter"] += 1
            q = ctx.tmp / f"q{ctx.state['counter']}.onnx"
            quantize_qdq(ctx.state["onnx"], q, dataset,
                         QuantOptions(exclude=opts.exclude).with_fallback(keep_float))
            model = convert_onnx(q)
        share_constants(model)
        ctx.extra["quantization"] = {**opts.describe(), "fallback_nodes": len(keep_float)}
        return self._save(ctx, model, fp16=False)

    def fallback_names(self, ctx: ExportContext) -> list[str]:
        opts: Int8Options = ctx.options or Int8Options()
        if opts.via == "nncf":
            if "ranked" not in ctx.state:
                ctx.state["ranked"] = _ranked_ir_names(ctx)
                ctx.state["fallback_strategy"] = "ranked"
            return ctx.state["ranked"]
        import onnx

        return [n.name for n in onnx.load(str(ctx.state["onnx"])).graph.node
                if n.op_type not in ("Constant", "Identity")]

    def write(self, ctx: ExportContext, candidate: Path, meta: ArtifactMetadata,
              paths: list[Path]) -> None:
        model = ctx.state["models"][candidate]
        write_rt_info(model, meta)
        save_ir(model, paths[0], fp16=ctx.request.precision == "fp16")
        produced = paths[0].with_suffix(".bin")
        if produced != paths[1]:
            produced.replace(paths[1])

    def histogram(self, ctx: ExportContext, candidate: Path) -> dict[str, int]:
        return ir_histogram(ctx.state["models"][candidate])

    def int8_coverage(self, ctx: ExportContext, candidate: Path) -> tuple[int, int] | None:
        """(Group)Convolutions whose data input NNCF quantised (a FakeQuantize feeds it), of
        all of them."""
        convs = [op for op in ctx.state["models"][candidate].get_ops()
                 if op.get_type_name() in ("Convolution", "GroupConvolution")]
        int8 = sum(op.input_value(0).get_node().get_type_name() == "FakeQuantize"
                   for op in convs)
        return int8, len(convs)


def _ranked_ir_names(ctx: ExportContext) -> list[str]:
    """NNCF ignored-scope candidates, worst first: the IR's quantisable ops ranked by the
    measured sensitivity of the same nodes in an ORT QDQ build of the same ONNX graph
    (IR friendly names = ONNX node names, convs + ``/WithoutBiases``); unranked convs
    follow in graph order, then the elementwise quantisation sites (last: only a model
    that no set of float convs recovers reaches them)."""
    from ffedge.export.int8_ort import QuantOptions, _feeds, quantize_qdq
    from ffedge.export.pipeline import FALLBACK
    from ffedge.export.sensitivity import rank_qdq, ranked_fallback

    FALLBACK.setdefault("ranked", ranked_fallback)
    ir_names = quantizable_names(ctx.state["fp32"])
    elementwise = quantizable_names(ctx.state["fp32"], ELEMENTWISE_TYPES)
    dataset = ctx.state.get("calibration")
    if dataset is None:
        return ir_names + elementwise
    qdq = ctx.tmp / "rank_qdq.onnx"
    quantize_qdq(ctx.state["onnx"], qdq, dataset, QuantOptions(equalize=False))
    import onnx

    onnx_names = [n.name for n in onnx.load(str(ctx.state["onnx"])).graph.node]
    ranked = rank_qdq(qdq, ctx.reference, _feeds(dataset, "images")[:4], onnx_names)
    known = set(ir_names)
    out = [m for n in ranked for m in (n, f"{n}/WithoutBiases") if m in known]
    out = list(dict.fromkeys(out))
    return out + [n for n in ir_names if n not in set(out)] + elementwise


def export_openvino(model: str, checkpoint: str | Path | None = None,
                    output: str | Path | None = None, input_size: tuple[int, int] | None = None,
                    precision: str = "fp32", verify_images: list[str | Path] | None = None,
                    verify: bool = True, threads: int | None = None,
                    calib: str | Path | None = None, int8: Int8Options | None = None,
                    min_f1: float | None = None, fallback: bool = True, **calibration: Any
                    ) -> ExportReport:
    """OpenVINO IR at ``precision``, verified (FP32/FP16) or gated (INT8) on the CPU plugin."""
    return export("openvino", ExportRequest(
        model, checkpoint, output, input_size, precision, int8, verify, verify_images or (),
        calibration=Calibration(calib, **calibration) if calib is not None else None,
        min_f1=min_f1, fallback=fallback, threads=threads))
