"""Latency and size of a model's ``.tflite`` at the phone input presets, FP16 vs INT8.

    python scripts/mobile_bench.py --model nano_b --calib PHOTOS --threads 1 \\
        --sizes 128 160 192 256 320 256x320 --out mobile_bench.md

Exports each (precision, size) once with ``ffexport tflite``'s code (fidelity gate off: this
measures speed), then times them in ai-edge-litert (XNNPACK) in alternating rounds, so a
noisy machine slows every artifact alike; prints a Markdown table (file size, median and
p90 ms, INT8/FP16 ratio) and the GPU-delegate verdict of each file.

320x240 (a 4:3 camera frame) is not a valid input: every model has stride 32 and 240/32 is
7.5, so the preset is ``256x320`` (H x W), into which a 4:3 frame letterboxes with 16 rows of
padding (``320x256`` for portrait).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


def export_all(model: str, sizes: list[tuple[int, int]], precisions: list[str], calib: str,
               folder: Path) -> dict[tuple[str, tuple[int, int]], Path]:
    from ffedge.export.tflite_target import TFLiteOptions, export_tflite

    out = {}
    for size in sizes:
        for prec in precisions:
            path = folder / f"{model}_{prec}_{size[0]}x{size[1]}.tflite"
            if not path.exists():
                export_tflite(model, output=path, input_size=size,
                              options=TFLiteOptions(prec),
                              calib=calib if prec == "int8" else None, verify=False,
                              min_f1=0.0 if prec == "int8" else None)  # speed only
            out[(prec, size)] = path
    return out


def time_all(paths: dict, threads: int, runs: int, rounds: int) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    runners = {}
    for key, path in paths.items():
        it = Interpreter(model_path=str(path), num_threads=threads)
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        x = np.random.default_rng(0).uniform(-120, 130, inp["shape"]).astype(np.float32)
        runners[key] = (it, inp["index"], x)
        for _ in range(3):
            it.set_tensor(inp["index"], x)
            it.invoke()
    times: dict = {k: [] for k in runners}
    for _ in range(rounds):  # alternate: every artifact sees the same machine load
        for key, (it, idx, x) in runners.items():
            for _ in range(max(1, runs // rounds)):
                it.set_tensor(idx, x)
                t0 = time.perf_counter()
                it.invoke()
                times[key].append((time.perf_counter() - t0) * 1000)
    return times


def table(paths: dict, times: dict, sizes: list, precisions: list[str]) -> str:
    from ffedge.artifact.tflite_delegates import gpu_delegate_report

    head = "| input H×W | " + " | ".join(f"{p} KiB | {p} p50 ms | {p} p90 ms" for p in precisions)
    lines = [head + " | INT8/FP16 | GPU delegate |",
             "|---|" + "---:|" * (3 * len(precisions) + 1) + "---|"]
    for size in sizes:
        cells, p50 = [], {}
        for p in precisions:
            t = sorted(times[(p, size)])
            p50[p] = statistics.median(t)
            cells.append(f"{paths[(p, size)].stat().st_size / 1024:.1f} | {p50[p]:.2f} | "
                         f"{t[int(0.9 * (len(t) - 1))]:.2f}")
        ratio = (f"{p50['int8'] / p50['fp16']:.2f}" if {"int8", "fp16"} <= set(p50) else "–")
        gpu = " / ".join(f"{p} {gpu_delegate_report(paths[(p, size)].read_bytes()).label}"
                         for p in precisions)
        lines.append(f"| {size[0]}×{size[1]} | " + " | ".join(cells) + f" | {ratio} | {gpu} |")
    return "\n".join(lines)


def load_line(before: tuple, after: tuple) -> str:
    """The load averages around a timing run: the noise a reader should weigh."""
    return ("load average (1, 5, 15 min) before timing "
            f"{before[0]:.2f} {before[1]:.2f} {before[2]:.2f}, after "
            f"{after[0]:.2f} {after[1]:.2f} {after[2]:.2f} on {os.cpu_count()} CPUs")


def report(text: str, out: str | None) -> int:
    """Print the report and, with ``--out``, write it there too."""
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="nano_b")
    ap.add_argument("--calib", required=True, help="calibration photos for INT8")
    ap.add_argument("--sizes", nargs="+", default=["128", "160", "192", "256", "320",
                                                   "256x320"])
    ap.add_argument("--precisions", nargs="+", default=["fp16", "int8"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--work", default="mobile_bench_artifacts")
    ap.add_argument("--out", default=None, help="also write the table here")
    a = ap.parse_args(argv)
    sizes = [parse_size(s) for s in a.sizes]
    folder = Path(a.work)
    folder.mkdir(parents=True, exist_ok=True)
    paths = export_all(a.model, sizes, a.precisions, a.calib, folder)
    before = os.getloadavg()
    times = time_all(paths, a.threads, a.runs, a.rounds)
    after = os.getloadavg()
    text = table(paths, times, sizes, a.precisions)
    text += "\n\n" + load_line(before, after)
    return report(text, a.out)


if __name__ == "__main__":
    raise SystemExit(main())
