"""``ffexport openvino``: an OpenVINO IR (.xml + .bin) for x86 CPUs, FP32 / FP16 / INT8.

The IR comes from the ONNX export with deformable convs lowered to GridSample + MatMul
(OpenVINO cannot convert the ONNX ``DeformConv`` op). FP32 and FP16 are verified against
torch; INT8 (NNCF post-training quantisation, or ONNX Runtime QDQ converted to IR) must
pass the same fidelity gate as ``ffexport int8`` on held-out photos, with the same
auto-fallback search. The spec travels in ``rt_info`` and in a ``.xml.json`` sidecar;
the three files are written together or not at all.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffedge.errors import FFEdgeError
from ffedge.artifact.atomic import atomic_files
from ffedge.export.fidelity import FallbackSearch, FidelityReport, check_fidelity, expand
from ffedge.artifact.metadata import ArtifactMetadata, sidecar_json, sidecar_path
from ffedge.export.onnx_export import OnnxOptions, trace_to_onnx
from ffedge.export.onnx_target import ExportReport
from ffedge.export.quant_common import PROBE_CALIB, PROBE_IMAGES, log
from ffedge.export.verify import FP32_MIN_AGREEMENT, FP32_TOLERANCES, verification_batches
from ffedge.runtimes.openvino_runner import OpenVinoRunner, openvino, write_rt_metadata

PRECISIONS = ("fp32", "fp16", "int8")
INT8_VIA = ("nncf", "qdq")
DEFAULT_INT8_VIA = "nncf"
PRESETS = ("mixed", "performance")
# The CPU plugin fuses and orders float sums differently from onnxruntime: on V1 its
# FP32 landmarks differ from torch by up to 1.2e-4 (values up to ~17; ORT: 8.6e-5), so
# FP32 gets twice the ONNX export's tolerances and must still find every face.
OV_FP32_TOLERANCES = {k: 2 * v for k, v in FP32_TOLERANCES.items()}
# FP16 weights (computed in f32): relative weight error ~5e-4 gives ~1e-3 on the outputs.
FP16_TOLERANCES = {"boxes": 1e-2, "scores": 1e-2, "landmarks": 1e-2}
QUANTIZABLE_TYPES = ("Convolution", "GroupConvolution", "MatMul")


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


def quantizable_names(model: Any) -> list[str]:
    """Friendly names of the ops NNCF quantises (ignored-scope candidates)."""
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in QUANTIZABLE_TYPES]


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
            ignored_scope=nncf.IgnoredScope(names=list(excluded), validate=False),
        )
    finally:
        nncf_logger.setLevel(level)


def export_openvino(
    model: str,
    checkpoint: str | Path | None = None,
    output: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    precision: str = "fp32",
    verify_images: list[str | Path] | None = None,
    verify: bool = True,
    threads: int | None = None,
    calib: str | Path | None = None,
    int8: Int8Options | None = None,
    num_images: int = 300,
    seed: int = 0,
    eval_images: str | Path | None = None,
    num_eval: int = 50,
    min_f1: float = 0.95,
    auto_fallback: bool = False,
    cache_dir: str | Path | None = None,
) -> tuple[ExportReport, FidelityReport | None]:
    """Export ``model`` to an OpenVINO IR at ``precision``; verify (FP32/FP16) or gate
    (INT8) it against torch on the OpenVINO CPU plugin; write .xml, .bin and sidecar
    together only when it passes."""
    from ffedge.models import create_model
    from ffedge.models.checkpoint import file_sha256
    from ffedge.models.dcn import has_dcn
    from ffedge.runtimes.torch_runner import TorchRunner

    if precision not in PRECISIONS:
        raise FFEdgeError(f"unknown --precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "int8" and calib is None:
        raise FFEdgeError("--precision int8 needs --calib IMAGES (calibration photos)")
    openvino()
    t0 = time.perf_counter()
    out = Path(output) if output else Path(f"{model}{'' if precision == 'fp32' else '_' + precision}.xml")
    if out.suffix.lower() != ".xml":
        raise FFEdgeError(f"output {out} must end in .xml (the .bin is written beside it)")
    net = create_model(model, checkpoint=checkpoint, input_size=input_size)
    spec = net.spec
    sha = file_sha256(checkpoint) if isinstance(checkpoint, (str, Path)) else ""
    reference = TorchRunner(model, module=net, threads=threads)
    extra: dict[str, Any] = {"layout": "NCHW", "format": "openvino-ir"}
    if has_dcn(net):
        extra["dcn"] = "gridsample"
    notes: list[str] = []
    fidelity: FidelityReport | None = None

    with tempfile.TemporaryDirectory(prefix="ffedge-ov-") as tmpdir:
        tmp = Path(tmpdir)
        graph = trace_to_onnx(net, spec.input_size, OnnxOptions(dcn="gridsample"))
        extra["opset"] = graph.opset
        fp32_onnx = tmp / "fp32.onnx"
        fp32_onnx.write_bytes(graph.serialize())
        fp32_model = convert_onnx(fp32_onnx)
        parity = None
        if precision in ("fp32", "fp16"):
            final = fp32_model
            gated = tmp / "candidate.xml"
            save_ir(final, gated, fp16=precision == "fp16")
            if verify:
                parity = _verify_float(reference, gated, model, threads, spec,
                                       verify_images or [], precision, checkpoint is not None,
                                       min_f1, out)
                if checkpoint is None:
                    notes.append("random weights: detection agreement reported, not gated")
        else:
            final, fidelity, extra_q = _quantise(
                model, out, spec, reference, fp32_onnx, fp32_model, tmp, calib, int8 or Int8Options(),
                num_images, seed, eval_images, num_eval, min_f1, auto_fallback, threads, cache_dir)
            notes.extend(extra_q.pop("_notes"))
            extra.update(extra_q)
        meta = ArtifactMetadata(model=model, spec=spec, precision=precision,
                                checkpoint_sha256=sha, extra=extra)
        write_rt_metadata(final, meta)
        with atomic_files([out, out.with_suffix(".bin"), sidecar_path(out)]) as (x, _b, side):
            save_ir(final, x, fp16=precision == "fp16")
            side.write_text(sidecar_json(meta))
    report = ExportReport(out, model, net.num_parameters(), ir_size(out), graph.opset,
                          graph.simplifier, ir_histogram(final), parity=parity, notes=notes)
    report.seconds = time.perf_counter() - t0
    return report, fidelity


def _verify_float(reference, xml: Path, model: str, threads, spec, images, precision: str,
                  trained: bool, min_f1: float, out: Path):
    """FP32: 2x the ONNX export's tolerances and every face; FP16: 1e-2 and the F1 gate."""
    from ffedge.export.verify import verify_runner

    cand = OpenVinoRunner(xml, model_name=model, threads=threads)
    parity = verify_runner(reference, cand, verification_batches(spec, images))
    if precision == "fp32":
        tol, need = OV_FP32_TOLERANCES, FP32_MIN_AGREEMENT if trained else 0.0
    else:
        tol, need = FP16_TOLERANCES, min_f1 if trained else 0.0
    reasons = parity.failures(tol, need)
    if reasons:
        raise FFEdgeError(f"verification failed, nothing written to {out}: " + "; ".join(reasons))
    return parity


def _quantise(model, out: Path, spec, reference, fp32_onnx: Path, fp32_model, tmp: Path, calib,
              opts: Int8Options, num_images, seed, eval_images, num_eval, min_f1,
              auto_fallback, threads, cache_dir):
    """Quantise, gate, optionally search fallbacks; returns (ov.Model, fidelity, extra)."""
    from ffedge.calibration import CalibrationDataset
    from ffedge.export.int8_ort import QuantOptions, quantize_qdq
    from ffedge.export.quant_common import plan_calibration

    plan = plan_calibration(calib, num_images, seed, eval_images, num_eval)
    dataset = CalibrationDataset(plan.calib_files, spec, cache_dir=cache_dir)
    gate_batches = verification_batches(spec, plan.eval_files, n_random=0)
    counter = iter(range(10**6))
    models: dict[Path, Any] = {}

    if opts.via == "nncf":
        names = quantizable_names(fp32_model)

        def make(excluded: list[str], ds) -> Any:
            return nncf_quantize(fp32_model, ds, opts.preset, list(opts.exclude) + excluded)
    else:
        import onnx

        names = [n.name for n in onnx.load(str(fp32_onnx)).graph.node
                 if n.op_type not in ("Constant", "Identity")]
        qopts = QuantOptions(exclude=opts.exclude)

        def make(excluded: list[str], ds) -> Any:
            q = tmp / f"q{next(counter)}.onnx"
            quantize_qdq(fp32_onnx, q, ds, qopts.with_fallback(excluded))
            return convert_onnx(q)

    def build(excluded: list[str], ds=dataset) -> OpenVinoRunner:
        m = make(excluded, ds)
        xml = tmp / f"int8_{next(counter)}.xml"
        save_ir(m, xml, fp16=False)
        models[xml] = m
        return OpenVinoRunner(xml, model_name=model, threads=threads)

    log(f"quantising {model} for OpenVINO ({opts.via}): {len(dataset)} calibration images, "
        f"{len(plan.eval_files)} held-out images")
    cand = build([])
    fidelity = check_fidelity(reference, cand, gate_batches, min_f1)
    fallback: list[str] = []
    if not fidelity.passed and auto_fallback:
        log(f"  gate failed (F1 {fidelity.parity.detections.f1:.4f}); searching float fallbacks")
        probe = CalibrationDataset(plan.calib_files[:PROBE_CALIB], spec, cache_dir=cache_dir,
                                   progress=False)
        build_probe: Callable[[list[str]], OpenVinoRunner] = lambda ex: build(ex, probe)  # noqa: E731
        search = FallbackSearch(build_probe, names, reference, gate_batches[:PROBE_IMAGES], min_f1)
        scopes = search.run()
        if scopes:
            fallback = expand(scopes, names)
            cand = build(fallback)
            fidelity = check_fidelity(reference, cand, gate_batches, min_f1)
            fidelity.excluded, fidelity.trials = scopes, search.trials
    if not fidelity.passed:
        raise FFEdgeError(
            f"fidelity gate failed, nothing written to {out}: F1 {fidelity.parity.detections.f1:.4f} < "
            f"{min_f1} on {fidelity.parity.images} held-out images"
            + ("" if auto_fallback else " (try --auto-fallback)"))
    extra = {"quantization": {**opts.describe(), "fallback_nodes": len(fallback)},
             "calibration": plan.describe(),
             "fidelity": fidelity.to_dict()["detections"],
             "_notes": list(plan.notes)}
    return models[cand.info.path], fidelity, extra
