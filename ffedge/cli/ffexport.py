"""``ffexport``: PyTorch checkpoint -> verified deployment artifact."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ffedge.cli.common import dispatch

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "onnx": ("ffedge.cli.export_onnx", "FP32 ONNX: traced, simplified, verified against PyTorch"),
    "int8": ("ffedge.cli.export_int8", "INT8 QDQ ONNX (onnxruntime), calibrated, fidelity-gated"),
    "openvino": ("ffedge.cli.export_openvino", "OpenVINO IR for x86 CPUs: FP32/FP16 verified, INT8 gated"),
    "tflite": ("ffedge.cli.export_tflite", "TFLite for phones (litert-torch): FP32/FP16/INT8, NHWC, gated"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(
        "ffexport",
        "Export a FeatherFace model to a verified, self-describing deployment artifact.",
        SUBCOMMANDS,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
