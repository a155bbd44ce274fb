"""``ffbench sweep``: export every candidate artifact of a model, measure each here, print
the Pareto table (latency vs F1 against FP32) and what to ship."""

from __future__ import annotations

import argparse
from pathlib import Path

from ffedge.cli.args import add_model_args, resolve_checkpoint
from ffedge.errors import FFEdgeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--images", type=Path, required=True,
                   help="photos: INT8 candidates calibrate on part, every candidate is judged "
                        "on the held-out rest")
    p.add_argument("--runtimes", nargs="+", default=["onnx", "openvino"],
                   help="targets to sweep: onnx, openvino, tflite (default: onnx openvino)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "int8"],
                   help="fp32, fp16, int8 (default: fp32 int8; skipped where a target lacks one)")
    p.add_argument("--dcn", nargs="+", default=None, choices=("native", "gridsample"),
                   help="DCN lowerings to try for models with deformable convs (default: both "
                        "where the target allows)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, metavar="N",
                   help="square input sizes (default: --imgsz, else 640)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--min-f1", type=float, default=0.98,
                   help="F1 vs FP32 a candidate needs to be recommended (default 0.98)")
    p.add_argument("--json", type=Path, default=None,
                   help="results file (default sweep_MODEL.json); an existing one is resumed")
    p.add_argument("--keep", type=Path, default=None, help="keep the exported artifacts here")


def run(args: argparse.Namespace) -> int:
    from ffedge.benchmarks.sweep import SweepConfig, candidates, render, run_sweep, write_reports
    from ffedge.models import get_spec

    if not args.images.is_dir():
        raise FFEdgeError(f"--images {args.images} is not a folder of photos")
    spec = get_spec(args.model)
    if args.sizes:
        sizes = [(s, s) for s in args.sizes]
    elif args.imgsz:
        sizes = [tuple(args.imgsz * 2)[:2] if len(args.imgsz) == 1 else tuple(args.imgsz[:2])]
    else:
        sizes = [tuple(spec.input_size)]
    for h, w in sizes:
        if h % 32 or w % 32:
            raise FFEdgeError(f"input size {h}x{w} is not a multiple of 32; fix --sizes/--imgsz")
    from ffedge.models import create_model
    from ffedge.models.dcn import has_dcn as model_has_dcn

    has_dcn = model_has_dcn(create_model(args.model, pretrained=False))  # architecture only
    cands = candidates(args.runtimes, args.precisions, sizes, has_dcn, args.dcn)
    out = args.json or Path(f"sweep_{args.model}.json")
    cfg = SweepConfig(args.model, args.images, out, resolve_checkpoint(args), cands,
                      args.threads, args.warmup, args.iterations, args.min_f1, args.keep)
    doc = run_sweep(cfg)
    print(render(doc, args.min_f1))
    for path in [out, *write_reports(doc, out, args.min_f1)]:
        print(f"wrote {path}")
    return 0
