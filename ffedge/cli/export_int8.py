"""``ffexport int8``: INT8 QDQ ONNX (ONNX Runtime), calibrated, gated against torch FP32."""

from __future__ import annotations

import argparse
from pathlib import Path

from ffedge.cli.args import add_model_args, imgsz, resolve_checkpoint


def add_quant_args(p: argparse.ArgumentParser) -> None:
    """Calibration and fidelity-gate options shared by every quantised target."""
    p.add_argument("--calib", type=Path, required=True,
                   help="calibration images: WIDER_train, a label.txt, any folder, or a .txt of paths")
    p.add_argument("--num-images", type=int, default=300, help="calibration images (default 300)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--eval-images", type=Path, default=None,
                   help="held-out photos for the fidelity gate (default: a disjoint sample of --calib)")
    p.add_argument("--num-eval", type=int, default=50, help="held-out images when sampled (default 50)")
    p.add_argument("--min-f1", type=float, default=0.95,
                   help="fail (and write nothing) below this detection F1 vs torch FP32")
    p.add_argument("--auto-fallback", action="store_true",
                   help="keep the fewest, measured layers in float until the gate passes")
    p.add_argument("--cache-dir", type=Path, default=None, help="calibration tensor cache")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("-o", "--output", type=Path, default=None)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_quant_args(p)
    p.add_argument("--symmetric", action="store_true",
                   help="int8 symmetric activations (TensorRT explicit quantisation, NPUs)")
    p.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax")
    p.add_argument("--exclude", nargs="*", default=[], help="node names or op types kept in float")
    p.add_argument("--reduce-range", choices=("auto", "on", "off"), default="auto",
                   help="7-bit weights; auto: on for uint8 activations on x86 CPUs without VNNI")


def run(args: argparse.Namespace) -> int:
    from ffedge.export.int8_ort import QuantOptions
    from ffedge.export.int8_target import export_int8

    opts = QuantOptions(symmetric=args.symmetric, method=args.method, exclude=tuple(args.exclude),
                        reduce_range={"auto": None, "on": True, "off": False}[args.reduce_range])
    report, fidelity = export_int8(
        args.model, args.calib, resolve_checkpoint(args), args.output, imgsz(args), opts,
        num_images=args.num_images, seed=args.seed, eval_images=args.eval_images,
        num_eval=args.num_eval, min_f1=args.min_f1, auto_fallback=args.auto_fallback,
        threads=args.threads, cache_dir=args.cache_dir)
    print(report.summary())
    print(fidelity.summary())
    return 0
