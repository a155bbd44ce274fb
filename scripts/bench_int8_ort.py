"""FP32 vs INT8 on onnxruntime, timed alternately (docs/int8.md, issue 13 item 2).

    python scripts/bench_int8_ort.py nb_fp32.onnx nb_int8.onnx --threads 2 --runs 3

Each run: both models warmed up, then ``--rounds`` rounds of ``--block`` inferences per
model in turn (so machine load hits both alike); prints p50 per model, the first/second
ratio and the load average. A benchmark, not a test: read ratios over several runs.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import onnxruntime as ort


def session(path: str, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def one_run(paths: list[str], threads: int, rounds: int, block: int, size: int) -> dict:
    sessions = [session(p, threads) for p in paths]
    x = np.random.default_rng(0).uniform(-120, 120, (1, 3, size, size)).astype(np.float32)
    name = sessions[0].get_inputs()[0].name
    for s in sessions:
        for _ in range(3):
            s.run(None, {name: x})
    times: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(rounds):
        for p, s in zip(paths, sessions):
            for _ in range(block):
                t0 = time.perf_counter()
                s.run(None, {name: x})
                times[p].append((time.perf_counter() - t0) * 1e3)
    return {p: float(np.median(v)) for p, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fp32")
    ap.add_argument("int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--imgsz", type=int, default=640)
    args = ap.parse_args()
    paths = [args.fp32, args.int8]
    for r in range(args.runs):
        p50 = one_run(paths, args.threads, args.rounds, args.block, args.imgsz)
        load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
        print(f"run {r + 1}: load {load}  FP32 p50 {p50[paths[0]]:.1f} ms  INT8 p50 "
              f"{p50[paths[1]]:.1f} ms  FP32/INT8 {p50[paths[0]] / p50[paths[1]]:.2f}")


if __name__ == "__main__":
    main()
