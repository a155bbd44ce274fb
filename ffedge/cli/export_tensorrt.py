"""The TensorRT target's own flags (``ffexport tensorrt`` / ``ffexport trt``)."""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ffedge.export.trt_versions import DCN_MODES, DEFAULT_JETPACK, JETPACK_TRT

    g = p.add_argument_group("TensorRT (Jetson bundle)")
    v = g.add_mutually_exclusive_group()
    v.add_argument("--jetpack", choices=list(JETPACK_TRT), default=None,
                   help=f"target JetPack (default {DEFAULT_JETPACK}): "
                        + ", ".join(f"{k} -> TensorRT {'.'.join(map(str, t))}"
                                    for k, t in JETPACK_TRT.items()))
    v.add_argument("--trt-version", default=None, help="target TensorRT X.Y[.Z] instead")
    g.add_argument("--dcn", choices=DCN_MODES, default=None,
                   help="V1 deformable convs: native DeformConv (>= 10.1), ModulatedDeformConv2d "
                        "plugin node (8.6), GridSample (>= 8.5); default: by version")
    g.add_argument("--dla", action="store_true",
                   help="Orin DLA: eligibility report, and for int8 the calibration cache")
    g.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax",
                   help="int8 calibration method")
    g.add_argument("--exclude", nargs="*", default=[], help="node names kept in float (int8)")


def options(args: argparse.Namespace, precision: str) -> Any:
    from ffedge.export.tensorrt_target import TrtOptions

    return TrtOptions(jetpack=args.jetpack, trt_version=args.trt_version, dcn=args.dcn,
                      dla=args.dla, method=args.method, exclude=tuple(args.exclude))
