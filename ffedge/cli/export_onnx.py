"""``ffexport onnx``: FP32 ONNX, simplified, checked, verified against torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from ffedge.cli.args import add_model_args, imgsz, resolve_checkpoint


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (default 19 for native DeformConv, else 17)")
    p.add_argument("--dynamic-batch", action="store_true", help="dynamic batch axis")
    p.add_argument("--dynamic-size", action="store_true", help="dynamic height/width axes")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    p.add_argument("--dcn", choices=("native", "gridsample"), default="native",
                   help="V1 deformable convs: ONNX DeformConv (onnxruntime) or GridSample+MatMul "
                        "(OpenVINO, TFLite converters); ignored by models without DCN")
    p.add_argument("--verify-images", type=Path, nargs="*", default=[],
                   help="photos (files or folders) to verify on, besides random inputs")
    p.add_argument("--no-verify", action="store_true", help="skip verification against torch")
    p.add_argument("--threads", type=int, default=None, help="threads for verification")
    p.add_argument("-o", "--output", type=Path, default=None, help="output .onnx (default MODEL.onnx)")


def run(args: argparse.Namespace) -> int:
    from ffedge.export.onnx_export import OnnxOptions
    from ffedge.export.onnx_target import export_onnx

    opts = OnnxOptions(opset=args.opset, dynamic_batch=args.dynamic_batch,
                       dynamic_size=args.dynamic_size, simplify=not args.no_simplify, dcn=args.dcn)
    report = export_onnx(args.model, resolve_checkpoint(args), args.output, imgsz(args), opts,
                         verify_images=args.verify_images, verify=not args.no_verify,
                         threads=args.threads)
    print(report.summary())
    return 0
