"""``ffexport onnx``: the FP32 ONNX artifact, verified against PyTorch before it is written."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ffedge.errors import FFEdgeError
from ffedge.artifact.atomic import atomic_path
from ffedge.artifact.metadata import ArtifactMetadata
from ffedge.export.onnx_export import OnnxOptions, stamp, trace_to_onnx
from ffedge.export.verify import (
    FP32_MIN_AGREEMENT,
    FP32_TOLERANCES,
    verification_batches,
    verify_runner,
)
from ffedge.models.dcn import has_dcn
from ffedge.runtimes.compare import ParityReport


@dataclass
class ExportReport:
    """What an export produced and how it was verified (printed, and returned to callers)."""

    path: Path
    model: str
    parameters: int
    size_bytes: int
    opset: int
    simplifier: str
    node_histogram: dict[str, int]
    parity: ParityReport | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        nodes = sum(self.node_histogram.values())
        top = ", ".join(f"{k} {v}" for k, v in list(self.node_histogram.items())[:8])
        lines = [
            f"exported {self.model} -> {self.path}",
            f"  parameters {self.parameters:,} | file {self.size_bytes / 1024:.1f} KiB | opset "
            f"{self.opset} | {nodes} nodes ({top}) | simplified by {self.simplifier}",
        ]
        if self.parity is not None:
            o, d = self.parity.outputs, self.parity.detections
            lines.append(
                f"  verified vs torch on {self.parity.images} images: max abs err boxes "
                f"{o['boxes'].max_abs:.2e}, scores {o['scores'].max_abs:.2e}, landmarks "
                f"{o['landmarks'].max_abs:.2e}; faces {d.matched}/{d.reference} agree "
                f"(F1 {d.f1:.4f})"
            )
        lines.extend(f"  note: {n}" for n in self.notes)
        lines.append(f"  done in {self.seconds:.1f} s")
        return "\n".join(lines)


def default_output(model: str, suffix: str, tag: str = "") -> Path:
    return Path(f"{model}{tag}{suffix}")


def export_onnx(
    model: str,
    checkpoint: str | Path | None = None,
    output: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    options: OnnxOptions | None = None,
    verify_images: list[str | Path] | None = None,
    verify: bool = True,
    threads: int | None = None,
) -> ExportReport:
    """Export ``model`` to ONNX, verify it in onnxruntime against torch, then write it.

    Nothing is left at ``output`` when tracing, checking or verification fails.
    """
    from ffedge.models import create_model
    from ffedge.models.checkpoint import file_sha256
    from ffedge.runtimes.onnxruntime_runner import OnnxRuntimeRunner
    from ffedge.runtimes.torch_runner import TorchRunner

    options = options or OnnxOptions()
    t0 = time.perf_counter()
    net = create_model(model, checkpoint=checkpoint, input_size=input_size)
    spec = net.spec
    out = Path(output) if output else default_output(model, ".onnx")
    graph = trace_to_onnx(net, spec.input_size, options)
    extra = {"opset": graph.opset, "dynamic_batch": options.dynamic_batch,
             "dynamic_size": options.dynamic_size, "layout": "NCHW"}
    notes = []
    if has_dcn(net):
        extra["dcn"] = options.dcn
    elif options.dcn != OnnxOptions().dcn:
        notes.append(f"model {model} has no deformable convs: --dcn ignored")
    meta = ArtifactMetadata(
        model=model, spec=spec, precision="fp32",
        checkpoint_sha256=file_sha256(checkpoint) if isinstance(checkpoint, (str, Path)) else "",
        extra=extra,
    )
    stamp(graph.proto, meta)
    data = graph.serialize()
    report = ExportReport(out, model, net.num_parameters(), len(data), graph.opset,
                          graph.simplifier, graph.node_histogram, notes=notes)
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
        if verify:
            ref = TorchRunner(model, module=net, threads=threads)
            cand = OnnxRuntimeRunner(tmp, threads=threads)
            batches = verification_batches(spec, verify_images or [])
            report.parity = verify_runner(ref, cand, batches)
            # Random weights put most scores near 0.5, where float rounding flips NMS
            # near-ties: there only the raw-output tolerances gate, agreement is reported.
            min_f1 = FP32_MIN_AGREEMENT if checkpoint is not None else 0.0
            if checkpoint is None:
                report.notes.append("random weights: detection agreement reported, not gated")
            reasons = report.parity.failures(FP32_TOLERANCES, min_f1)
            if reasons:
                raise FFEdgeError(
                    f"verification failed, nothing written to {out}: " + "; ".join(reasons)
                )
    report.seconds = time.perf_counter() - t0
    return report
