"""Graph passes on LiteRT: op count and XNNPACK latency at ``--optimize 0`` vs ``--optimize 1``.

    python scripts/bench_tflite_passes.py --models nano_b v1 v2_ca eca_cbam --imgsz 640 \\
        --threads 2 --work tflite_passes --out tflite_passes.md

Exports each (model, level) once through the ``ffexport tflite`` pipeline (verification off:
this measures speed; the passes are verified by their own tests and by every export), then
times all files in ai-edge-litert (XNNPACK) in alternating rounds, so a noisy machine slows
every artifact alike. Prints a Markdown table: ops before/after, p50/p90 ms, speed-up.
``--work DIR`` keeps the files, so a second run only times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def export_level(model: str, level: int, size: int, precision: str, folder: Path) -> Path:
    from ffedge.export.pipeline import ExportRequest, export
    from ffedge.export.tflite_target import TFLiteOptions

    path = folder / f"{model}_{precision}_{size}_O{level}.tflite"
    if not path.exists():
        export("tflite", ExportRequest(model, output=path, input_size=(size, size),
                                       precision=precision,
                                       options=TFLiteOptions(precision), verify=False,
                                       optimize=level))
    return path


def main(argv: list[str] | None = None) -> int:
    from mobile_bench import load_line, report, time_all

    from ffedge.export import tflite_flatbuffer as tfb

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["nano_b", "v1", "v2_ca", "eca_cbam"])
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--work", default="tflite_passes")
    ap.add_argument("--out", default=None, help="also write the table here")
    a = ap.parse_args(argv)
    folder = Path(a.work)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {(m, lv): export_level(m, lv, a.imgsz, a.precision, folder)
             for m in a.models for lv in (0, 1)}
    before = os.getloadavg()
    times = time_all(paths, a.threads, a.runs, a.rounds)
    after = os.getloadavg()
    lines = [f"| model ({a.precision}, {a.imgsz}×{a.imgsz}) | ops O0 | ops O1 | KiB O0 | KiB O1 "
             "| p50 ms O0 | p50 ms O1 | p90 ms O0 | p90 ms O1 | O0/O1 p50 |",
             "|---|" + "---:|" * 9]
    for m in a.models:
        ops = [sum(tfb.op_histogram(paths[(m, lv)].read_bytes()).values()) for lv in (0, 1)]
        kib = [paths[(m, lv)].stat().st_size / 1024 for lv in (0, 1)]
        t = [sorted(times[(m, lv)]) for lv in (0, 1)]
        p50 = [statistics.median(x) for x in t]
        p90 = [x[int(0.9 * (len(x) - 1))] for x in t]
        lines.append(f"| {m} | {ops[0]:,} | {ops[1]:,} | {kib[0]:,.0f} | {kib[1]:,.0f} | "
                     f"{p50[0]:.2f} | {p50[1]:.2f} | {p90[0]:.2f} | {p90[1]:.2f} | "
                     f"{p50[0] / p50[1]:.2f}× |")
    text = "\n".join(lines) + (
        f"\n\nXNNPACK, {a.threads} threads, {a.rounds} alternating rounds of "
        f"{max(1, a.runs // a.rounds)} runs after 3 warm-ups; " + load_line(before, after))
    return report(text, a.out)


if __name__ == "__main__":
    raise SystemExit(main())
