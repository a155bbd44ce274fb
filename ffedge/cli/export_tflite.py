"""``ffexport tflite``: a ``.tflite`` (+ ``.tflite.json``) for Android/iOS apps, gated."""

from __future__ import annotations

import argparse

from ffedge.cli.args import add_model_args, imgsz, resolve_checkpoint
from ffedge.cli.export_int8 import add_quant_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ffedge.export.tflite_target import DCN_LOWERINGS, IO_TYPES, PRECISIONS

    add_model_args(p)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 / fp16 (float16 weights) / int8 (full-integer, calibrated)")
    p.add_argument("--io", choices=IO_TYPES, default="float",
                   help="int8 only: input/output tensor type; integer I/O carries scale and "
                        "zero point in the tensors and the metadata (default float)")
    p.add_argument("--decode-in-graph", action="store_true",
                   help="bake priors in and decode in the graph: outputs normalised x1y1x2y2 "
                        "boxes, face scores and landmarks; the app thresholds and runs NMS")
    p.add_argument("--per-tensor", action="store_true",
                   help="int8: per-tensor weight scales (smaller file, usually less accurate)")
    p.add_argument("--dcn", choices=DCN_LOWERINGS, default="gather",
                   help="V1 deformable convs: gather (row gathers + one matmul: small, fast, "
                        "quantisable) or gridsample (litert-torch's grid_sample lowering)")
    p.add_argument("--keep-names", action="store_true",
                   help="keep litert-torch's module-path tensor names (debugging; larger file)")
    add_quant_args(p)
    for action in p._actions:  # --calib is shared with `ffexport int8`, needed for int8 only
        if action.dest == "calib":
            action.required = False
            action.help = "calibration images (int8 only): " + (action.help or "")
        if action.dest == "eval_images":
            action.help = ("photos for the fidelity gate of every precision (default: a "
                           "held-out sample of --calib, else two noise images)")
    p.add_argument("--no-verify", action="store_true", help="skip the fidelity gate")


def run(args: argparse.Namespace) -> int:
    from ffedge.errors import FFEdgeError
    from ffedge.export.tflite_target import TFLiteOptions, export_tflite

    if args.auto_fallback:
        raise FFEdgeError("--auto-fallback searches ONNX/OpenVINO node names; for tflite, "
                          "lower --min-f1 or use --precision fp16")
    opts = TFLiteOptions(precision=args.precision, io=args.io,
                         decode_in_graph=args.decode_in_graph, per_channel=not args.per_tensor,
                         keep_names=args.keep_names, dcn=args.dcn)
    report = export_tflite(
        args.model, resolve_checkpoint(args), args.output, imgsz(args), opts, calib=args.calib,
        num_images=args.num_images, seed=args.seed, eval_images=args.eval_images,
        num_eval=args.num_eval, min_f1=args.min_f1, threads=args.threads,
        cache_dir=args.cache_dir, verify=not args.no_verify)
    print(report.summary())
    return 0
