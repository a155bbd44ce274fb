"""Per-tensor calibration choice (issue 13 item 1): for every activation tensor, the range
(MinMax, or a percentile cut) whose uint8 Q/DQ adds the least noise on the calibration
images, written as ORT's calibration cache so the quantiser uses it unchanged.

The measurement is the one the sensitivity ranking uses (local Q/DQ noise), taken from a
histogram per tensor: rounding noise ``step^2 / 12`` for values inside the range, squared
clipping distance for values outside. A tensor's noise reaches the outputs through the
same gain whatever its range, so the least local noise is also the least output noise to
first order. ORT's own entropy calibrator is not a candidate: with its default 128 bins it
returns the MinMax range (measured: identical models on V1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ffedge.export.ort_probe import session_with_outputs

BINS = 2048
PERCENTILES = (99.999, 99.99, 99.9)  # ORT's two-sided definition: (100 - p) / 2 % cut per side
LEVELS = 255  # uint8 asymmetric activations


def histograms(proto, ranges: dict[str, tuple[float, float]], feeds: Sequence[dict]
               ) -> dict[str, np.ndarray]:
    """A ``BINS``-bin histogram of each tensor over its MinMax range."""
    produced = {o for n in proto.graph.node for o in n.output} | {i.name for i in proto.graph.input}
    names = [n for n, (lo, hi) in ranges.items() if n in produced and hi > lo]
    hist = {n: np.zeros(BINS, np.int64) for n in names}
    if not names:
        return hist
    sess = session_with_outputs(proto, names)
    for feed in feeds:
        for name, v in zip(names, sess.run(names, feed)):
            lo, hi = ranges[name]
            idx = ((v.ravel().astype(np.float32) - lo) * (BINS / (hi - lo))).astype(np.int64)
            np.clip(idx, 0, BINS - 1, out=idx)
            hist[name] += np.bincount(idx, minlength=BINS)
    return hist


def qdq_noise(hist: np.ndarray, lo: float, hi: float, a: float, b: float) -> float:
    """Mean squared Q/DQ error of a tensor with histogram ``hist`` over ``[lo, hi]``
    quantised to uint8 over ``[a, b]`` (widened to hold 0, as ORT does)."""
    a, b = min(a, 0.0), max(b, 0.0)
    step = (b - a) / LEVELS
    if step <= 0:
        return float("inf")
    c = lo + (np.arange(BINS) + 0.5) * (hi - lo) / BINS
    inside = (c >= a) & (c <= b)
    err = hist[inside].sum() * step * step / 12.0
    err += (hist[c > b] * (c[c > b] - b) ** 2).sum() + (hist[c < a] * (a - c[c < a]) ** 2).sum()
    return float(err / max(hist.sum(), 1))


def percentile_range(hist: np.ndarray, lo: float, hi: float, p: float) -> tuple[float, float]:
    cdf = np.cumsum(hist) / max(hist.sum(), 1)
    cut = (100.0 - p) / 200.0
    edges = lo + np.arange(BINS + 1) * (hi - lo) / BINS
    left, right = np.searchsorted(cdf, cut), np.searchsorted(cdf, 1.0 - cut)
    return max(float(edges[left]), lo), min(float(edges[min(right + 1, BINS)]), hi)


def choose(hist: np.ndarray, lo: float, hi: float) -> tuple[str, float, float]:
    """(method, low, high) with the least :func:`qdq_noise`; MinMax unless a cut is 5 % better."""
    best = ("minmax", lo, hi, qdq_noise(hist, lo, hi, lo, hi))
    for p in PERCENTILES:
        a, b = percentile_range(hist, lo, hi, p)
        e = qdq_noise(hist, lo, hi, a, b)
        if e < 0.95 * best[3]:  # leave MinMax only for a clear gain
            best = (f"percentile {p}", a, b, e)
    return best[:3]


def write_chosen_ranges(model_path: str | Path, reader, feeds: Sequence[dict],
                        cache_path: str | Path, symmetric: bool = False) -> dict[str, int]:
    """Calibrate ``model_path`` with ORT's MinMax calibrator (the tensors ORT will
    quantise), choose each tensor's range by :func:`choose`, and save ORT's calibration
    cache at ``cache_path`` (method MinMax, so ``quantize_static`` reads it as is).
    Returns how many tensors each method won. Symmetric activations keep MinMax."""
    import tempfile

    import onnx
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorData,
        TensorsData,
        create_calibrator,
        save_tensors_data,
    )

    with tempfile.TemporaryDirectory(prefix="ffedge-cal-") as tmp:
        cal = create_calibrator(Path(model_path), None, str(Path(tmp) / "aug.onnx"),
                                CalibrationMethod.MinMax, extra_options={"symmetric": symmetric})
        cal.collect_data(reader)
        minmax = cal.compute_data()
        del cal
    ranges = {k: (float(np.ravel(v.range_value[0])[0]), float(np.ravel(v.range_value[1])[0]))
              for k, v in minmax.items()}
    won: dict[str, int] = {}
    chosen = dict(ranges)
    if not symmetric:
        for name, h in histograms(onnx.load(str(model_path)), ranges, feeds).items():
            method, a, b = choose(h, *ranges[name])
            chosen[name] = (a, b)
            won[method] = won.get(method, 0) + 1
    data = {k: TensorData(lowest=np.array([a], np.float32), highest=np.array([b], np.float32))
            for k, (a, b) in chosen.items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), cache_path)
    return won
