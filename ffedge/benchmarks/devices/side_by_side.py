"""Reports from several devices (ffbench JSON files) in one table, one column per result."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ffedge.benchmarks.bench import BenchResult
from ffedge.benchmarks.latency import LatencyStats
from ffedge.errors import FFEdgeError
from ffedge.runtimes.compare import DetectionAgreement, OutputDiff, ParityReport


def latency_from_dict(d: dict) -> LatencyStats:
    return LatencyStats(**{k: d[k] for k in ("iterations", "mean_ms", "p50_ms", "p90_ms",
                                             "p99_ms", "min_ms")})


def parity_from_dict(d: dict | None) -> ParityReport | None:
    if not d:
        return None
    det = d["detections"]
    agreement = DetectionAgreement(det["reference"], det["candidate"], det["matched"],
                                   det["mean_abs_dscore"] * det["matched"])
    outputs = {k: OutputDiff(**v) for k, v in d["outputs"].items()}
    return ParityReport(d["reference"], d["candidate"], d["images"], outputs, agreement)


def result_from_dict(d: dict) -> BenchResult:
    """A result of ``BenchResult.to_dict()`` (a JSON from another machine) back as an object."""
    return BenchResult(
        runtime=d["runtime"], artifact=d["artifact"], model=d["model"], precision=d["precision"],
        size_bytes=d["size_bytes"], input_size=tuple(d["input_size"]), threads=d["threads"],
        load_s=d["load_s"], model_latency=latency_from_dict(d["latency_ms"]),
        e2e_latency=latency_from_dict(d["end_to_end_ms"]), rss_mb=d["rss_mb"],
        peak_rss_mb=d["peak_rss_mb"], faces_per_image=d.get("faces_per_image", []),
        parity=parity_from_dict(d.get("parity")),
    )


def load_reports(paths: list[Path]) -> list[tuple[str, dict]]:
    out = []
    for p in paths:
        try:
            doc = json.loads(Path(p).read_text())
        except FileNotFoundError:
            raise FFEdgeError(f"{p}: no such file") from None
        except ValueError:
            raise FFEdgeError(f"{p}: not JSON (give files written by ffbench --json)") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
            raise FFEdgeError(f"{p}: no 'results' list; give files written by ffbench --json")
        out.append((Path(p).name, doc))
    return out


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _num(fmt: str) -> Callable[[Any], str]:
    return lambda v: "-" if v is None else format(v, fmt)


def _device_label(dev: dict | None, fallback: str) -> str:
    if not dev:
        return fallback
    return dev.get("board") or dev.get("hostname") or fallback


def _thermal(dev: dict | None) -> str:
    t = _get(dev, "thermal_c") or {}
    before, after = (max(v.values()) if v else None for v in (t.get("before"), t.get("after")))
    if before is None and after is None:
        return "-"
    return f"{'-' if before is None else before:} -> {'-' if after is None else after}"


def _locked(dev: dict | None) -> str:
    c = _get(dev, "clocks") or {}
    if c.get("locked") is None:
        return "-"
    return ("locked" if c["locked"] else "dynamic") + (" (by ffbench)" if c.get("locked_by_ffbench") else "")


ROWS: list[tuple[str, Callable[[dict, dict | None], str]]] = [
    ("board", lambda r, d: _device_label(d, "-")),
    ("os", lambda r, d: _get(d, "os") or "-"),
    ("cpu", lambda r, d: _get(d, "cpu_model") or "-"),
    ("jetpack", lambda r, d: _get(d, "jetson", "jetpack") or "-"),
    ("power mode", lambda r, d: _get(d, "power_mode") or "-"),
    ("clocks", lambda r, d: _locked(d)),
    ("runtime", lambda r, d: f"{r['runtime']} {_get(d, 'runtimes', r['runtime']) or ''}".strip()),
    ("artifact", lambda r, d: r.get("artifact") or "-"),
    ("precision", lambda r, d: r.get("precision") or "-"),
    ("input", lambda r, d: "x".join(map(str, r["input_size"])) if r.get("input_size") else "-"),
    ("threads", lambda r, d: str(r.get("threads") or "-")),
    ("p50 ms", lambda r, d: _num(".2f")(_get(r, "latency_ms", "p50_ms"))),
    ("p90 ms", lambda r, d: _num(".2f")(_get(r, "latency_ms", "p90_ms"))),
    ("mean ms", lambda r, d: _num(".2f")(_get(r, "latency_ms", "mean_ms"))),
    ("FPS", lambda r, d: _num(".1f")(_get(r, "latency_ms", "fps"))),
    ("e2e p50 ms", lambda r, d: _num(".2f")(_get(r, "end_to_end_ms", "p50_ms"))),
    ("peak RSS MB", lambda r, d: _num(".0f")(r.get("peak_rss_mb") or _get(r, "memory_mb", "peak"))),
    ("power mW", lambda r, d: _num(".0f")(_get(d, "power", "mean_mw"))),
    ("energy mJ/frame", lambda r, d: _num(".2f")(_get(d, "power", "energy_mj_per_frame"))),
    ("temp °C before -> after", lambda r, d: _thermal(d)),
    ("delegate", lambda r, d: _delegate(r)),
    ("F1 vs torch", lambda r, d: _num(".4f")(_get(r, "parity", "detections", "f1"))),
]


def _delegate(r: dict) -> str:
    ds = r.get("delegates")
    if not ds:
        return "-"
    parts = [f"{x['delegate']} {x['replaced']}/{x['of'] or '?'}" for x in ds]
    return ", ".join(parts) + (" PARTIAL" if r.get("partially_delegated") else "")


def render_side_by_side(reports: list[tuple[str, dict]]) -> str:
    """One column per result of every report (labelled with the device and the file)."""
    columns = []
    for name, doc in reports:
        dev = doc.get("device")
        for r in doc["results"]:
            columns.append((f"{_device_label(dev, 'unknown device')} ({name})", r, dev))
    if not columns:
        raise FFEdgeError("the reports hold no results")
    head = ["", *(c[0] for c in columns)]
    rows = [[label, *(fn(r, d) for _, r, d in columns)] for label, fn in ROWS]
    rows = [row for row in rows if any(cell != "-" for cell in row[1:])]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    lines = [fmt.format(*head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)
