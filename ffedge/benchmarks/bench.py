"""``ffbench``'s measurement: latency of the model and end to end, memory, size, parity."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ffedge.benchmarks.latency import LatencyStats, current_rss_mb, peak_rss_mb, time_calls
from ffedge.decoder.transform import preprocess
from ffedge.runtimes.base import Outputs, Runner
from ffedge.runtimes.compare import Comparator, ParityReport

DEMO_THRESHOLD = 0.5


@dataclass
class BenchResult:
    runtime: str
    artifact: str
    model: str
    precision: str
    size_bytes: int
    input_size: tuple[int, int]
    threads: int | None
    load_s: float
    model_latency: LatencyStats
    e2e_latency: LatencyStats
    rss_mb: float
    peak_rss_mb: float
    faces_per_image: list[int] = field(default_factory=list)
    parity: ParityReport | None = None
    delegates: list[str] = field(default_factory=list)  # .tflite: GPU / Core ML coverage

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "artifact": self.artifact,
            "model": self.model,
            "precision": self.precision,
            "size_bytes": self.size_bytes,
            "input_size": list(self.input_size),
            "threads": self.threads,
            "load_s": round(self.load_s, 4),
            "latency_ms": self.model_latency.to_dict(),
            "end_to_end_ms": self.e2e_latency.to_dict(),
            "rss_mb": round(self.rss_mb, 1),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "faces_per_image": self.faces_per_image,
            "parity": self.parity.to_dict() if self.parity else None,
            "delegates": self.delegates,
        }


def benchmark(runner: Runner, images: list[np.ndarray], warmup: int = 3, iterations: int = 20,
              reference: Runner | None = None, ref_outputs: list[Outputs] | None = None,
              progress: bool | None = None) -> BenchResult:
    """Measure ``runner`` on ``images`` (BGR uint8); compare with ``reference`` if given."""
    from ffedge.decoder import Decoder
    from ffedge.export.verify import parity_decoder

    runner.activate()
    spec = runner.spec
    decoder = Decoder(spec, score_threshold=DEMO_THRESHOLD)
    batches = []
    for img in images:
        x, t = preprocess(img, spec)
        batches.append((x[None], [t]))
    x0 = batches[0][0]
    model_lat = time_calls(lambda i: runner.infer(x0), warmup, iterations,
                           f"{runner.runtime} model", progress)

    def end_to_end(i: int) -> None:
        img = images[i % len(images)]
        x, t = preprocess(img, spec)
        decoder(*runner.infer(x[None]), transforms=[t], scores_are="probabilities")

    e2e_lat = time_calls(end_to_end, min(warmup, 2), iterations, f"{runner.runtime} end-to-end", progress)
    faces = [len(decoder(*runner.infer(x), transforms=t, scores_are="probabilities")[0])
             for x, t in batches]
    parity = None
    if reference is not None and ref_outputs is None and \
            reference.spec.channel_order != spec.channel_order:
        # e.g. an RGB .tflite against the BGR torch model: each gets its own channel order
        ref_outputs = [reference.infer(preprocess(img, reference.spec, spec.input_size)[0][None])
                       for img in images]
    if reference is not None:
        parity = Comparator(reference, parity_decoder(spec)).run([runner], batches, ref_outputs)[0]
    return BenchResult(
        runtime=runner.runtime,
        artifact=runner.info.path.name if runner.info.path else runner.info.model,
        model=runner.info.model,
        precision=runner.info.precision,
        size_bytes=runner.info.size_bytes,
        input_size=spec.input_size,
        threads=runner.threads,
        load_s=runner.load_seconds,
        model_latency=model_lat,
        e2e_latency=e2e_lat,
        rss_mb=current_rss_mb(),
        peak_rss_mb=peak_rss_mb(),
        faces_per_image=faces,
        parity=parity,
        delegates=_delegates(runner),
    )


def _delegates(runner: Runner) -> list[str]:
    """For a ``.tflite``: which mobile delegates take its ops (from the file)."""
    path = runner.info.path
    if path is None or path.suffix.lower() != ".tflite":
        return []
    from ffedge.artifact.tflite_delegates import delegate_summary

    return [f"{path.name}: {line}" for line in delegate_summary(path.read_bytes())]


def render_table(results: list[BenchResult]) -> str:
    """One row per runner, aligned for a terminal (also valid Markdown)."""
    head = ["runtime", "artifact", "prec", "size KiB", "p50 ms", "p90 ms", "p99 ms", "mean ms",
            "FPS", "e2e p50 ms", "RSS MB", "max|Δscore|", "F1 vs torch"]
    rows = []
    for r in results:
        m, e = r.model_latency, r.e2e_latency
        par = r.parity
        rows.append([
            r.runtime, r.artifact, r.precision, f"{r.size_bytes / 1024:.0f}" if r.size_bytes else "-",
            f"{m.p50_ms:.2f}", f"{m.p90_ms:.2f}", f"{m.p99_ms:.2f}", f"{m.mean_ms:.2f}",
            f"{m.fps:.1f}", f"{e.p50_ms:.2f}", f"{r.rss_mb:.0f}",
            f"{par.outputs['scores'].max_abs:.1e}" if par else "ref",
            f"{par.detections.f1:.4f}" if par else "ref",
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    fmt = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    lines = [fmt.format(*head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt.format(*row) for row in rows]
    lines += [line for r in results for line in r.delegates]
    return "\n".join(lines)
