"""``ffbench decoder``: time the shared decoder (decode + NMS) against the classic loop."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ffedge.benchmarks.decoder_bench import (
    CROWDS,
    THRESHOLDS,
    Case,
    Timing,
    default_shared,
    model_cases,
    resample_anchors,
    synthetic_case,
    three_anchor_spec,
    time_case,
    v1_cases,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shared", type=Path, default=None,
                        help="folder with images/ and checkpoints/ (default: ../shared)")
    parser.add_argument("--images", nargs="*", default=list(CROWDS),
                        help="photo names in shared/images (default: the three crowds)")
    parser.add_argument("--nano-checkpoint", type=Path, default=None,
                        help="a trained nano_b checkpoint: use its real outputs")
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    parser.add_argument("--repeats", type=int, default=200, help="timed calls of our decoder")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the model")
    parser.add_argument("--original-size", action="store_true",
                        help="also time v1 at each photo's own size (the WIDER FACE setting)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def build_cases(args: argparse.Namespace) -> list[Case]:
    shared = args.shared or default_shared()
    ckpt = shared / "checkpoints" / "featherface_v1_widerface.pth"
    images = [shared / "images" / f"{n}.jpg" for n in args.images]
    nano_spec = three_anchor_spec()
    if ckpt.is_file() and all(p.is_file() for p in images):
        v1 = v1_cases(images, ckpt, threads=args.threads)
        if args.nano_checkpoint is not None:
            nano = model_cases("nano_b", args.nano_checkpoint, images, threads=args.threads)
        else:
            nano = [resample_anchors(c, nano_spec, seed=k) for k, c in enumerate(v1)]
        extra = v1_cases(images, ckpt, None, args.threads) if args.original_size else []
        return v1 + nano + extra
    from ffedge.models import get_spec

    return [synthetic_case(get_spec("v1"), seed=1, name="v1/synthetic"),
            synthetic_case(nano_spec, seed=2, name="nano_b/synthetic")]


def format_table(rows: list[Timing]) -> str:
    head = ("| case | priors | threshold | candidates | kept (ours = ref, continuous IoU) "
            "| kept (ref, +1 px) | ours ms | reference ms | speed-up |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r.case} | {r.priors:,} | {r.threshold:g} | {r.candidates:,} | {r.kept:,}"
            f"{'' if r.identical_to_reference else ' (DIFFERS)'} | {r.kept_reference_plus_one:,} "
            f"| {r.ours_ms:.3f} | {r.reference_ms:.2f} | {r.speedup:.1f}x |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    cases = build_cases(args)
    rows = [time_case(c, thr, args.repeats) for c in cases for thr in args.thresholds]
    if args.json:
        print(json.dumps({"sources": {c.name: c.source for c in cases},
                          "results": [r.to_dict() for r in rows]}, indent=2))
    else:
        print(format_table(rows))
        for c in cases:
            print(f"  {c.name}: {c.source}")
    return 0 if all(r.identical_to_reference for r in rows) else 1
