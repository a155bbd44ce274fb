"""The ONNX target's own flags (``ffexport onnx`` / ``ffexport int8``)."""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ONNX graph")
    g.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (default 19 for native DeformConv, else 17)")
    g.add_argument("--dynamic-batch", action="store_true", help="dynamic batch axis")
    g.add_argument("--dynamic-size", action="store_true", help="dynamic height/width axes")
    g.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    g.add_argument("--dcn", choices=("native", "gridsample"), default="native",
                   help="V1 deformable convs: ONNX DeformConv (onnxruntime) or GridSample+MatMul "
                        "(OpenVINO, TFLite converters); ignored by models without DCN")
    q = p.add_argument_group("onnxruntime QDQ (int8)")
    q.add_argument("--symmetric", action="store_true",
                   help="int8 symmetric activations (TensorRT explicit quantisation, NPUs)")
    q.add_argument("--method", choices=("minmax", "entropy", "percentile", "auto"),
                   default="minmax", help="activation ranges; auto: per tensor, the range "
                   "with the least measured Q/DQ noise (docs/int8.md)")
    q.add_argument("--exclude", nargs="*", default=[], help="node names or op types kept in float")
    q.add_argument("--reduce-range", choices=("auto", "on", "off"), default="auto",
                   help="7-bit weights; auto: on for uint8 activations on x86 CPUs without VNNI")


def options(args: argparse.Namespace, precision: str) -> Any:
    from ffedge.export.int8_ort import QuantOptions
    from ffedge.export.onnx_export import OnnxOptions
    from ffedge.export.onnx_target import OnnxTargetOptions

    graph = OnnxOptions(opset=args.opset, dynamic_batch=args.dynamic_batch,
                        dynamic_size=args.dynamic_size, simplify=not args.no_simplify,
                        dcn=args.dcn)
    quant = QuantOptions(symmetric=args.symmetric, method=args.method,
                         exclude=tuple(args.exclude),
                         reduce_range={"auto": None, "on": True, "off": False}[args.reduce_range])
    return OnnxTargetOptions(graph=graph, quant=quant)
