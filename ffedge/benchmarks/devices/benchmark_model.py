"""LiteRT / TensorFlow Lite ``benchmark_model``'s report.

Lines read (an optional ``INFO:`` / logcat prefix is ignored):

- ``count=84 first=.. curr=.. min=.. max=.. avg=.. std=.. p5=.. median=.. p95=..`` (µs): the
  first full line is the warmup, the last the measured runs;
- ``Inference timings in us: Init: .., First inference: .., Warmup (avg): .., Inference (avg): ..``;
- ``Memory footprint delta ...: init=.. overall=..`` / ``Peak memory footprint (MB): ...`` and
  ``Overall peak memory footprint (MB) via periodic monitoring: ..``;
- ``Replacing N out of M node(s) with delegate (NAME) node, yielding K partitions``: a model
  the delegate took only part of is flagged ``partially_delegated``.
"""

from __future__ import annotations

import re

_NUM = r"([\d.]+(?:e[+-]?\d+)?)"
_COUNT = re.compile(r"count=(\d+)((?:[ \t]+\w+=" + _NUM + r")+)")
_KV = re.compile(r"(\w+)=" + _NUM)
_TIMINGS = re.compile(
    r"Inference timings in us: Init: " + _NUM + r", First inference: " + _NUM
    + r", Warmup \(avg\): " + _NUM + r", Inference \(avg\): " + _NUM)
_MEM_DELTA = re.compile(r"(?:Memory footprint delta from the start of the tool|Peak memory footprint)"
                        r" \(MB\): init=" + _NUM + r" overall=" + _NUM)
_MEM_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUM)
_DELEGATE = re.compile(r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \((\w+)\) node,"
                       r" yielding (\d+) partitions")
_PARTIAL_NOTE = re.compile(r"will be partially executed by the delegate|will not be executed by the delegate")


def _us_to_ms(v: float | None) -> float | None:
    return None if v is None else round(v / 1000.0, 4)


def parse_benchmark_model(text: str) -> dict:
    """The report as milliseconds and MB; raises ValueError when it holds no timings."""
    runs = []
    for m in _COUNT.finditer(text):
        stats = {k: float(v) for k, v in _KV.findall(m.group(2))}
        stats["count"] = int(m.group(1))
        runs.append(stats)
    timings = _TIMINGS.search(text)
    if not timings and not runs:
        raise ValueError("no 'Inference timings in us' or 'count=...' line: not a benchmark_model report")
    measured = runs[-1] if runs else {}
    init_us, first_us, warm_us, infer_us = (float(g) for g in timings.groups()) if timings else (None,) * 4
    mem = _MEM_DELTA.search(text)
    peak = _MEM_PEAK.search(text)
    delegates = [
        {"delegate": d[2], "replaced": int(d[0]), "of": int(d[1]) if d[1] else None,
         "partitions": int(d[3])}
        for d in _DELEGATE.findall(text)
    ]
    partial = any(d["of"] is not None and d["replaced"] < d["of"] for d in delegates)
    partial = partial or any(d["partitions"] > 1 for d in delegates) or bool(_PARTIAL_NOTE.search(text))
    mean_ms = _us_to_ms(infer_us if infer_us is not None else measured.get("avg"))
    return {
        "latency_ms": {
            "iterations": measured.get("count"),
            "mean_ms": mean_ms,
            "p50_ms": _us_to_ms(measured.get("median")),
            "p5_ms": _us_to_ms(measured.get("p5")),
            "p95_ms": _us_to_ms(measured.get("p95")),
            "min_ms": _us_to_ms(measured.get("min")),
            "max_ms": _us_to_ms(measured.get("max")),
            "std_ms": _us_to_ms(measured.get("std")),
            "fps": round(1000.0 / mean_ms, 2) if mean_ms else None,
        },
        "init_ms": _us_to_ms(init_us),
        "first_inference_ms": _us_to_ms(first_us),
        "warmup_avg_ms": _us_to_ms(warm_us),
        "memory_mb": {
            "init_delta": float(mem.group(1)) if mem else None,
            "overall_delta": float(mem.group(2)) if mem else None,
            "peak": float(peak.group(1)) if peak else None,
        },
        "delegates": delegates,
        "partially_delegated": partial,
    }
