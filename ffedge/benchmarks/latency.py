"""Latency statistics measured the same way for every runtime."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ffedge.progress import Progress


@dataclass
class LatencyStats:
    iterations: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float

    @property
    def fps(self) -> float:
        return 1000.0 / self.mean_ms if self.mean_ms > 0 else 0.0

    def to_dict(self) -> dict[str, float]:
        d = asdict(self)
        d["fps"] = round(self.fps, 2)
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}

    @classmethod
    def from_samples(cls, samples_s: list[float]) -> LatencyStats:
        ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
        return cls(
            iterations=len(ms),
            mean_ms=float(ms.mean()),
            p50_ms=float(np.percentile(ms, 50)),
            p90_ms=float(np.percentile(ms, 90)),
            p99_ms=float(np.percentile(ms, 99)),
            min_ms=float(ms.min()),
        )


def time_calls(fn: Callable[[int], object], warmup: int, iterations: int,
               label: str = "", progress: bool | None = None) -> LatencyStats:
    """Call ``fn(i)`` ``warmup`` times untimed, then ``iterations`` times timed."""
    for i in range(warmup):
        fn(i)
    bar = Progress(iterations, label or "timing", progress)
    samples = []
    for i in range(iterations):
        t0 = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - t0)
        bar.update()
    bar.close()
    return LatencyStats.from_samples(samples)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / (1024.0 * 1024.0)
    except OSError:
        return peak_rss_mb()
