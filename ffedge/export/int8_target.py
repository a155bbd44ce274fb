"""``ffexport int8``: an INT8 QDQ ONNX artifact that provably still finds the same faces."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ffedge.errors import FFEdgeError
from ffedge.artifact.atomic import atomic_path
from ffedge.export.fidelity import FallbackSearch, FidelityReport, check_fidelity, expand
from ffedge.export.int8_ort import QuantOptions, quantize_qdq, quantize_weights_only
from ffedge.artifact.metadata import ArtifactMetadata
from ffedge.export.onnx_export import OnnxOptions, node_histogram, stamp, trace_to_onnx
from ffedge.export.onnx_target import ExportReport
from ffedge.export.quant_common import PROBE_CALIB, PROBE_IMAGES, CalibrationPlan, log
from ffedge.export.verify import verification_batches


def export_int8(
    model: str,
    calib: str | Path,
    checkpoint: str | Path | None = None,
    output: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    options: QuantOptions | None = None,
    num_images: int = 300,
    seed: int = 0,
    eval_images: str | Path | None = None,
    num_eval: int = 50,
    min_f1: float = 0.95,
    auto_fallback: bool = False,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[ExportReport, FidelityReport]:
    """Quantise ``model`` with ONNX Runtime (QDQ), gate it against torch FP32 on held-out
    images, optionally search the fewest float fallbacks; write only when the gate passes."""
    import onnx

    from ffedge.calibration import CalibrationDataset
    from ffedge.export.quant_common import plan_calibration
    from ffedge.models import create_model
    from ffedge.models.checkpoint import file_sha256
    from ffedge.runtimes.onnxruntime_runner import OnnxRuntimeRunner
    from ffedge.runtimes.torch_runner import TorchRunner

    options = options or QuantOptions()
    t0 = time.perf_counter()
    out = Path(output) if output else Path(f"{model}_int8.onnx")
    net = create_model(model, checkpoint=checkpoint, input_size=input_size)
    spec = net.spec
    plan: CalibrationPlan = plan_calibration(calib, num_images, seed, eval_images, num_eval)
    dataset = CalibrationDataset(plan.calib_files, spec, cache_dir=cache_dir)
    reference = TorchRunner(model, module=net, threads=threads)
    gate_batches = verification_batches(spec, plan.eval_files, n_random=0)
    sha = file_sha256(checkpoint) if isinstance(checkpoint, (str, Path)) else ""

    with tempfile.TemporaryDirectory(prefix="ffedge-int8-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        graph = trace_to_onnx(net, spec.input_size, OnnxOptions(dcn="native"))
        fp32.write_bytes(graph.serialize())
        counter = iter(range(10**6))

        def build(excluded: list[str], ds=dataset) -> OnnxRuntimeRunner:
            path = Path(tmp) / f"q{next(counter)}.onnx"
            quantize_qdq(fp32, path, ds, options.with_fallback(excluded))
            proto = onnx.load(str(path))
            if quantize_weights_only(proto):
                onnx.save(proto, str(path))
            return OnnxRuntimeRunner(path, model_name=model, threads=threads)

        final_opts = options
        log(f"quantising {model}: {len(dataset)} calibration images, {len(plan.eval_files)} "
            f"held-out images, {options.describe()}")
        cand = build([])
        fidelity = check_fidelity(reference, cand, gate_batches, min_f1)
        if not fidelity.passed and auto_fallback:
            log(f"  gate failed (F1 {fidelity.parity.detections.f1:.4f}); searching float fallbacks")
            probe_ds = CalibrationDataset(plan.calib_files[:PROBE_CALIB], spec, cache_dir=cache_dir,
                                          progress=False)
            names = [n.name for n in onnx.load(str(fp32)).graph.node
                     if n.op_type not in ("Constant", "Identity")]
            search = FallbackSearch(lambda ex: build(ex, probe_ds), names, reference,
                                    gate_batches[:PROBE_IMAGES], min_f1)
            scopes = search.run()
            if scopes:
                nodes = expand(scopes, names)
                final_opts = options.with_fallback(nodes)
                cand = build(nodes)
                fidelity = check_fidelity(reference, cand, gate_batches, min_f1)
                fidelity.excluded, fidelity.trials = scopes, search.trials
        if not fidelity.passed:
            raise FFEdgeError(
                f"fidelity gate failed, nothing written to {out}: F1 "
                f"{fidelity.parity.detections.f1:.4f} < {min_f1} on {fidelity.parity.images} "
                "held-out images" + ("" if auto_fallback else " (try --auto-fallback)")
            )
        proto = onnx.load(str(cand.info.path))
        meta = ArtifactMetadata(model=model, spec=spec, precision="int8", checkpoint_sha256=sha,
                                extra={"quantization": {"backend": "onnxruntime QDQ",
                                                        **final_opts.describe()},
                                       "calibration": plan.describe(),
                                       "fidelity": fidelity.to_dict()["detections"],
                                       "layout": "NCHW", "opset": graph.opset})
        stamp(proto, meta)
        data = proto.SerializeToString(deterministic=True)
        with atomic_path(out) as tmp_out:
            tmp_out.write_bytes(data)
    report = ExportReport(out, model, net.num_parameters(), len(data), graph.opset,
                          graph.simplifier, node_histogram(proto), notes=list(plan.notes))
    report.seconds = time.perf_counter() - t0
    return report, fidelity
