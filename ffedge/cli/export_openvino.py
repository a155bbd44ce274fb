"""``ffexport openvino``: OpenVINO IR (.xml + .bin + .xml.json) for x86 CPUs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ffedge.cli.args import add_model_args, imgsz, resolve_checkpoint
from ffedge.cli.export_int8 import add_quant_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ffedge.export.openvino_target import DEFAULT_INT8_VIA, INT8_VIA, PRECISIONS, PRESETS

    add_model_args(p)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 / fp16 (verified against torch) or int8 (calibrated, gated)")
    add_quant_args(p)
    for action in p._actions:  # --calib is shared with `ffexport int8`, needed here for int8 only
        if action.dest == "calib":
            action.required = False
            action.help = "calibration images (int8 only): " + (action.help or "")
    p.add_argument("--int8-via", choices=INT8_VIA, default=DEFAULT_INT8_VIA,
                   help=f"nncf: NNCF post-training quantisation of the IR; qdq: ONNX Runtime QDQ "
                        f"converted to IR (default {DEFAULT_INT8_VIA})")
    p.add_argument("--preset", choices=PRESETS, default="mixed",
                   help="NNCF preset (mixed: asymmetric activations; performance may not compile)")
    p.add_argument("--exclude", nargs="*", default=[], help="node names kept in float (int8)")
    p.add_argument("--verify-images", type=Path, nargs="*", default=[],
                   help="photos to verify FP32/FP16 on, besides random inputs")
    p.add_argument("--no-verify", action="store_true", help="skip FP32/FP16 verification")


def run(args: argparse.Namespace) -> int:
    from ffedge.export.openvino_target import Int8Options, export_openvino

    report, fidelity = export_openvino(
        args.model, resolve_checkpoint(args), args.output, imgsz(args), args.precision,
        verify_images=args.verify_images, verify=not args.no_verify, threads=args.threads,
        calib=args.calib,
        int8=Int8Options(via=args.int8_via, preset=args.preset, exclude=tuple(args.exclude)),
        num_images=args.num_images, seed=args.seed, eval_images=args.eval_images,
        num_eval=args.num_eval, min_f1=args.min_f1, auto_fallback=args.auto_fallback,
        cache_dir=args.cache_dir)
    print(report.summary())
    if fidelity is not None:
        print(fidelity.summary())
    return 0
