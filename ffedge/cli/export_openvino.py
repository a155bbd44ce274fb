"""The OpenVINO target's own flags (``ffexport openvino``)."""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ffedge.export.openvino_target import DEFAULT_INT8_VIA, INT8_VIA, PRESETS

    g = p.add_argument_group("OpenVINO int8")
    g.add_argument("--int8-via", choices=INT8_VIA, default=DEFAULT_INT8_VIA,
                   help=f"nncf: NNCF post-training quantisation of the IR; qdq: ONNX Runtime QDQ "
                        f"converted to IR (default {DEFAULT_INT8_VIA})")
    g.add_argument("--preset", choices=PRESETS, default="mixed",
                   help="NNCF preset (mixed: asymmetric activations; performance may not compile)")
    g.add_argument("--exclude", nargs="*", default=[], help="node names kept in float (int8)")


def options(args: argparse.Namespace, precision: str) -> Any:
    from ffedge.export.openvino_target import Int8Options

    return Int8Options(via=args.int8_via, preset=args.preset, exclude=tuple(args.exclude))
