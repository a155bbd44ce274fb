"""``trtexec``'s performance summary: throughput and the latency statistics (ms)."""

from __future__ import annotations

import re

_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*([\d.eE+-]+)\s*ms")
_KEYS = {"min": "min_ms", "max": "max_ms", "mean": "mean_ms", "median": "p50_ms"}


def _stats(rest: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, pct, value in _STAT.findall(rest):
        key = _KEYS.get(name) or f"p{pct.rstrip('0').rstrip('.') if '.' in pct else pct}_ms"
        out[key] = float(value)
    return out


def parse_trtexec(text: str) -> dict:
    """``=== Performance summary ===`` -> ``{"throughput_qps", "latency_ms", "gpu_compute_ms",
    "enqueue_ms", "h2d_ms", "d2h_ms", "trt_version"}`` (absent parts are left out).

    ``latency_ms`` is trtexec's host latency (H2D + compute + D2H) per query.
    """
    out: dict = {}
    sections = {"Latency": "latency_ms", "End-to-End Host Latency": "end_to_end_ms",
                "Enqueue Time": "enqueue_ms", "H2D Latency": "h2d_ms",
                "GPU Compute Time": "gpu_compute_ms", "D2H Latency": "d2h_ms"}
    for line in text.splitlines():
        body = re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip())
        m = re.match(r"Throughput:\s*([\d.eE+-]+)\s*qps", body)
        if m:
            out["throughput_qps"] = float(m.group(1))
            continue
        head, sep, rest = body.partition(":")
        if sep and head in sections and "min =" in rest:
            out[sections[head]] = _stats(rest)
    m = re.search(r"TensorRT v(\d+)", text)
    if m:
        v = m.group(1)  # 8601 -> 8.6.1, 100300 -> 10.3.0
        out["trt_version"] = (f"{v[:-4]}.{int(v[-4:-2])}.{int(v[-2:])}" if len(v) >= 6
                              else f"{v[0]}.{v[1]}.{int(v[2:])}")
    if "latency_ms" not in out:
        raise ValueError("no 'Latency: min = ...' line: not a trtexec performance summary")
    return out
