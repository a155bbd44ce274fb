"""Torch eager latency of the trained family, alternating (issue 12: "ECA-CBAM no slower than
V1 in torch on this machine"), with ECA-CBAM's denormal weights flushed (what every load does)
and, for contrast, kept.

    python scripts/bench_family_torch.py --rounds 15 --threads 2 --size 640 [--image PHOTO]

Prints per variant the median wall time, its min and the median CPU time of one forward
pass, and the ratio to V1. Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def build(name: str, keep_denormals: bool = False) -> torch.nn.Module:
    from ffedge.models import create_model
    from ffedge.models.checkpoint import read_state_dict
    from ffedge.weights import bundled_checkpoint

    net = create_model(name).eval()  # bundled trained weights, denormals flushed
    if keep_denormals:  # put the file's raw tensors back (load_strict flushed them)
        raw = read_state_dict(bundled_checkpoint(name))
        own = net.state_dict()
        with torch.no_grad():
            for key, value in raw.items():
                key = key.removeprefix("module.")
                if key in own and own[key].shape == value.shape:
                    own[key].copy_(value)
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--image", default=None, help="a photo (default: seeded noise)")
    ap.add_argument("--no-kept", action="store_true", help="skip the denormals-kept variant")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.image:
        from ffedge.decoder.transform import preprocess
        from ffedge.imageio import read_image
        from ffedge.specs import spec_for

        chw, _ = preprocess(read_image(args.image), spec_for("v1"), (args.size, args.size),
                            "letterbox")
        x = torch.from_numpy(np.ascontiguousarray(chw[None]))
    else:
        x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        x = x * 255 - 110
    variants = {"v1": build("v1"), "eca_cbam": build("eca_cbam"), "v2_ca": build("v2_ca")}
    if not args.no_kept:
        variants["eca_cbam (denormals kept)"] = build("eca_cbam", keep_denormals=True)
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    with torch.no_grad():
        for net in variants.values():
            net(x)
        for _ in range(args.rounds):
            for name, net in variants.items():
                t, c = time.perf_counter(), time.process_time()
                net(x)
                wall[name].append(1e3 * (time.perf_counter() - t))
                cpu[name].append(1e3 * (time.process_time() - c))
    base = float(np.median(wall["v1"]))
    print(f"torch {torch.__version__}, {args.threads} threads, {args.size}x{args.size}, "
          f"{args.rounds} alternating rounds, load average {os.getloadavg()[0]:.1f}")
    print("| model | median ms | min ms | CPU ms (median) | vs V1 |")
    print("|---|---:|---:|---:|---:|")
    for name in variants:
        med = float(np.median(wall[name]))
        print(f"| {name} | {med:.1f} | {min(wall[name]):.1f} | {np.median(cpu[name]):.1f} "
              f"| {med / base:.2f}x |")


if __name__ == "__main__":
    main()
