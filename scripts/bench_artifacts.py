"""Any artifacts, any runtimes, timed alternately with the product's runners (issue 13's
INT8/FP32 ratios on OpenVINO, issue 17's "today vs now").

    python scripts/bench_artifacts.py v1.xml v1_int8.xml --rounds 40 --threads 2
    python scripts/bench_artifacts.py old/v1.xml v1.xml            # e.g. an older release's IR

Every artifact is loaded with ``ffedge.runtimes.load_runner`` (OpenVINO with the f32
inference hint, as ``ffbench`` runs it), warmed up, then run once per round in turn on the
same preprocessed input, so load drifts hit all alike. Prints p50/p90 per artifact, the
ratio of the first artifact's p50 to each, and the load average. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    from ffedge.runtimes.loader import load_runner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    runners = [load_runner(artifact=a, threads=args.threads).activate() for a in args.artifacts]
    size = runners[0].info.fixed_size or (640, 640)
    batch = np.random.default_rng(0).uniform(-120, 120, (1, 3, *size)).astype(np.float32)
    for r in runners:
        r.infer(batch), r.infer(batch)
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(args.rounds):
        for i, r in enumerate(runners):
            t = time.perf_counter()
            r.infer(batch)
            times[i].append(1e3 * (time.perf_counter() - t))
    base = float(np.median(times[0]))
    print(f"{args.rounds} alternating rounds, {args.threads} threads, {size[0]}x{size[1]}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| artifact | p50 ms | p90 ms | speed-up vs first |\n|---|---:|---:|---:|")
    for path, t in zip(args.artifacts, times, strict=True):
        print(f"| {path} | {np.median(t):.2f} | {np.percentile(t, 90):.2f} "
              f"| {base / float(np.median(t)):.2f}x |")


if __name__ == "__main__":
    main()
