"""The TFLite target's own flags (``ffexport tflite``)."""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ffedge.export.tflite_target import DCN_LOWERINGS, IO_TYPES

    g = p.add_argument_group("TFLite")
    g.add_argument("--io", choices=IO_TYPES, default="float",
                   help="int8 only: input/output tensor type; integer I/O carries scale and "
                        "zero point in the tensors and the metadata (default float)")
    g.add_argument("--decode-in-graph", action="store_true",
                   help="bake priors in and decode in the graph: outputs normalised x1y1x2y2 "
                        "boxes, face scores and landmarks; the app thresholds and runs NMS")
    g.add_argument("--per-tensor", action="store_true",
                   help="int8: per-tensor weight scales (smaller file, usually less accurate)")
    g.add_argument("--dcn", choices=DCN_LOWERINGS, default="gather",
                   help="V1 deformable convs: gather (row gathers + one matmul: small, fast, "
                        "quantisable) or gridsample (litert-torch's grid_sample lowering)")
    g.add_argument("--keep-names", action="store_true",
                   help="keep litert-torch's module-path tensor names (debugging; larger file)")
    g.add_argument("--channel-order", choices=("rgb", "bgr"), default="rgb",
                   help="input pixel order of the .tflite (default rgb: what phone cameras and "
                        "MediaPipe deliver; the model's BGR is folded into its first conv, "
                        "mean/std reordered, metadata says RGB); bgr keeps the trained order")
    g.add_argument("--bgr", dest="channel_order", action="store_const", const="bgr",
                   help="same as --channel-order bgr")
    g.add_argument("--require-gpu-delegate", action="store_true",
                   help="fail (write nothing) unless the mobile GPU delegate takes every op; "
                        "the report always lists GPU / Core ML delegate coverage")


def options(args: argparse.Namespace, precision: str) -> Any:
    from ffedge.export.tflite_target import TFLiteOptions

    return TFLiteOptions(precision=precision, io=args.io, decode_in_graph=args.decode_in_graph,
                         per_channel=not args.per_tensor, keep_names=args.keep_names,
                         dcn=args.dcn,
                         require_gpu_delegate=getattr(args, "require_gpu_delegate", False),
                         channel_order=getattr(args, "channel_order", "rgb"))
