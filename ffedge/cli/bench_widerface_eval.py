"""``ffbench widerface-eval``: score a WIDER FACE predictions folder with the official protocol.

The folder is what any WIDER FACE detector writes for the val set
(``<event>/<image>.txt``, see ``ffedge.benchmarks.widerface``); the ground truth is the
kit's folder of four .mat files. Prints AP easy/medium/hard; ``--json`` keeps the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ffedge.benchmarks.widerface import (
    SETTINGS,
    WiderFaceError,
    WiderFaceResult,
    evaluate,
    load_ground_truth,
)

_EXAMPLES = 3  # how many missing/invalid image names a warning quotes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "pred_dir", metavar="PRED_DIR", help="predictions: PRED_DIR/<event>/<image>.txt"
    )
    parser.add_argument(
        "--gt",
        required=True,
        metavar="EVAL_DIR",
        help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat",
    )
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    parser.add_argument(
        "--curves", action="store_true", help="include the PR curves (1,000 points) in --json"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail when an image has no prediction file or a file is malformed "
        "(the kit counts such images as 'no detections')",
    )
    parser.add_argument(
        "--iou", type=float, default=0.5, help="match IoU threshold (the protocol's is 0.5)"
    )


def run(args: argparse.Namespace) -> int:
    if not 0.0 < args.iou <= 1.0:
        raise WiderFaceError(f"--iou {args.iou}: must be in (0, 1]")
    gt = load_ground_truth(args.gt)
    result = evaluate(args.pred_dir, gt, iou_thresh=args.iou)
    _check_coverage(result, Path(args.pred_dir), args.strict)
    _warn(result)
    print(format_table(result))
    if args.json:
        payload = {
            "pred_dir": str(args.pred_dir),
            "gt_dir": str(args.gt),
            **result.to_dict(args.curves),
        }
        _write_json(Path(args.json), payload)
    return 0


def _check_coverage(result: WiderFaceResult, pred_dir: Path, strict: bool) -> None:
    """No file for any val image almost always means the wrong folder, not a blind detector."""
    if len(result.missing) == result.num_images:
        raise WiderFaceError(
            f"no prediction file for any of the {result.num_images} val images under {pred_dir} "
            f"(expected {pred_dir}/<event>/<image>.txt, e.g. {pred_dir}/{result.missing[0]}.txt)"
        )
    if strict and (result.missing or result.invalid):
        raise WiderFaceError(
            f"--strict: {len(result.missing)} images without a prediction file, "
            f"{len(result.invalid)} malformed files ({_examples(result)})"
        )


def _examples(result: WiderFaceResult) -> str:
    names = list(result.missing[:_EXAMPLES]) + list(result.invalid)[:_EXAMPLES]
    return "e.g. " + ", ".join(names)


def _warn(result: WiderFaceResult) -> None:
    if result.missing:
        print(
            f"warning: {len(result.missing)} images have no prediction file; scored as no "
            f"detections, like the official kit (e.g. {', '.join(result.missing[:_EXAMPLES])})",
            file=sys.stderr,
        )
    for reason in list(result.invalid.values())[:_EXAMPLES]:
        print(f"warning: malformed prediction file read as empty: {reason}", file=sys.stderr)
    if len(result.invalid) > _EXAMPLES:
        print(f"warning: ... {len(result.invalid)} malformed files in all", file=sys.stderr)


def format_table(result: WiderFaceResult) -> str:
    """A small fixed-width table: one row per setting."""
    lines = [
        f"WIDER FACE val, official protocol (IoU {result.iou_thresh:g}): "
        f"{result.num_images} images, {result.num_predictions} predictions",
        f"{'setting':<8} {'AP':>7} {'faces':>7}",
    ]
    for setting in SETTINGS:
        lines.append(f"{setting:<8} {result.ap[setting]:>7.4f} {result.num_faces[setting]:>7d}")
    return "\n".join(lines)


def _write_json(path: Path, payload: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise WiderFaceError(f"cannot write {path}: {exc.strerror}") from None
