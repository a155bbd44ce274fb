"""``ffbench widerface``: run a model or artifact over WIDER FACE val, then score it.

Detection (:mod:`ffedge.benchmarks.widerface_run`) writes the official submission folder;
scoring is ``ffbench widerface-eval``'s (:func:`ffedge.benchmarks.widerface.evaluate`), so
the folder can also be sent to anyone else's kit. Exit 0 when every image was read, 1 when
some were unreadable (scored as "no detections", like the kit; the AP is then a lower
bound and is still printed and written), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from ffedge.benchmarks.reports import ReportRow, ap_columns, write_reports
from ffedge.benchmarks.widerface import (
    WiderFaceError,
    WiderFaceResult,
    evaluate,
    first_per_event,
    load_ground_truth,
    select_images,
)
from ffedge.benchmarks.widerface_run import (
    ORIGINAL,
    DetectSettings,
    RunSummary,
    Size,
    check_size,
    find_images_root,
    run_detector,
)
from ffedge.cli.bench_widerface_eval import format_table
from ffedge.runtimes.base import Runner
from ffedge.spec import DECODE, SIZE_DIVISOR

EXIT_UNREADABLE = 1
_EXAMPLES = 5


def parse_size(text: str) -> int | str:
    """``original`` or a positive multiple of 32 (the priors' largest stride)."""
    if text == ORIGINAL:
        return ORIGINAL
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: 'original' or a multiple of {SIZE_DIVISOR}") from None
    if n <= 0 or n % SIZE_DIVISOR:
        raise argparse.ArgumentTypeError(
            f"{n}: the size must be a positive multiple of {SIZE_DIVISOR}")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ffedge.cli.args import add_runner_args

    p.add_argument("--root", required=True, type=Path,
                   help="WIDER FACE images: the folder holding WIDER_val, WIDER_val, or its images/")
    p.add_argument("--gt", required=True, type=Path, metavar="EVAL_DIR",
                   help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat")
    p.add_argument("--model", help="model name (v1, v2_ultra, nano_b): torch, or export on the fly")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="weights (.pth); default: the bundled weights when the model has them")
    p.add_argument("--random-init", action="store_true", help=argparse.SUPPRESS)
    add_runner_args(p)
    p.add_argument("--size", type=parse_size, default=None,
                   help="'original' (each image at its own size; models/artifacts of any size "
                        "only) or N (letterbox to NxN); default: the spec's size and resize mode")
    p.add_argument("--threshold", type=float, default=0.02, help="score threshold (default 0.02)")
    p.add_argument("--nms", type=float, default=DECODE.nms_threshold,
                   help=f"NMS IoU threshold (default {DECODE.nms_threshold})")
    p.add_argument("--top-k", type=int, default=DECODE.top_k,
                   help=f"candidates into NMS (default {DECODE.top_k})")
    p.add_argument("--max-detections", type=int, default=DECODE.max_detections,
                   help=f"faces kept (default {DECODE.max_detections})")
    p.add_argument("--subset", type=int, default=None, metavar="N",
                   help="only the first N images of every event (scored against those only)")
    p.add_argument("--out", type=Path, default=None, metavar="PRED_DIR",
                   help="predictions folder; rerunning with the same one resumes "
                        "(default: runs/widerface/<artifact>-<runtime>-<size>)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT",
                   help="write the results as JSON, plus OUT.md, OUT.csv and plots next to it")
    p.add_argument("--curves", action="store_true", help="include the PR curves in --json")
    p.add_argument("--threads", type=int, default=None, help="runtime threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.artifact is None and not args.model:
        raise WiderFaceError("give --model NAME or --artifact PATH")
    if not 0.0 <= args.threshold < 1.0:
        raise WiderFaceError(f"--threshold {args.threshold}: must be in [0, 1)")
    gt = load_ground_truth(args.gt)
    if args.subset is not None:
        gt = select_images(gt, first_per_event(gt, args.subset))
    images_root = find_images_root(args.root)
    settings = DetectSettings(args.threshold, args.nms, args.top_k, args.max_detections,
                              args.size)
    with tempfile.TemporaryDirectory(prefix="ffbench-widerface-") as tmp:
        runner = make_runner(args, args.size, Path(tmp))
        check_size(runner, args.size)  # before any output: a refusal is one line
        out = args.out or default_out(runner, settings)
        print(f"running {runner.describe()} on {gt.num_images} images -> {out}", file=sys.stderr)
        summary = run_detector(runner, gt, images_root, out, settings,
                               progress=False if args.no_progress else None)
    result = evaluate(out, gt)
    print(format_table(result))
    print(format_summary(summary))
    if args.json:
        write_outputs(args, runner, settings, summary, result, out, images_root)
    return EXIT_UNREADABLE if summary.unreadable else 0


def make_runner(args: argparse.Namespace, size: Size, workdir: Path) -> Runner:
    """--artifact as is; --model in torch, or exported on the fly for another runtime."""
    from ffedge.cli.args import runner_from_args

    input_size = (size, size) if isinstance(size, int) else None
    return runner_from_args(args, workdir, input_size=input_size)


def default_out(runner: Runner, settings: DetectSettings) -> Path:
    name = runner.info.path.stem if runner.info.path else runner.info.model
    size = re.sub(r"[^A-Za-z0-9]+", "", settings.describe_size(runner))
    return Path("runs") / "widerface" / f"{name}-{runner.runtime}-{size}"


def format_summary(summary: RunSummary) -> str:
    """The end-of-run lines: what was inferred, resumed, unreadable (named)."""
    lat = summary.latency
    speed = f", model p50 {lat.p50_ms:.1f} ms ({lat.fps:.1f} FPS)" if lat else ""
    lines = [f"images: {summary.images} ({summary.inferred} inferred, {summary.resumed} resumed "
             f"from earlier runs, {len(summary.unreadable)} unreadable) in "
             f"{summary.seconds:.1f} s{speed}"]
    if summary.unreadable:
        lines.append("unreadable images, scored as no detections like the official kit "
                     "(rerun to retry them):")
        items = list(summary.unreadable.items())
        lines += [f"  {rel}: {why}" for rel, why in items[:_EXAMPLES]]
        if len(items) > _EXAMPLES:
            lines.append(f"  ... {len(items) - _EXAMPLES} more (see --json)")
    return "\n".join(lines)


def write_outputs(args: argparse.Namespace, runner: Runner, settings: DetectSettings,
                  summary: RunSummary, result: WiderFaceResult, out: Path,
                  images_root: Path) -> None:
    """The JSON, then the Markdown/CSV/plots next to it."""
    info = runner.info
    size = settings.describe_size(runner)
    payload: dict[str, Any] = {
        "pred_dir": str(out),
        "gt_dir": str(args.gt),
        "images_root": str(images_root),
        "runner": {"runtime": runner.runtime, "model": info.model, "precision": info.precision,
                   "artifact": str(info.path) if info.path else None, "size": size},
        "settings": {"score_threshold": settings.score_threshold,
                     "nms_threshold": settings.nms_threshold, "top_k": settings.top_k,
                     "max_detections": settings.max_detections,
                     "size": settings.size, "subset_per_event": args.subset},
        "run": summary.to_dict(),
        **result.to_dict(args.curves),
    }
    try:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n",
                             encoding="utf-8")
    except OSError as exc:
        raise WiderFaceError(f"cannot write {args.json}: {exc.strerror}") from None
    print(f"wrote {args.json}")
    lat = summary.latency
    row = ReportRow(
        artifact=info.path.name if info.path else info.model, runtime=runner.runtime,
        precision=info.precision, size=size,
        latency_p50_ms=lat.p50_ms if lat else None, latency_p90_ms=lat.p90_ms if lat else None,
        fps=lat.fps if lat else None, **ap_columns(result.ap),
    )
    files = write_reports(args.json, [row], curves={row.label: result.curves},
                          ap={row.label: result.ap}, title="WIDER FACE val")
    for path in files.written:
        print(f"wrote {path}")
    if files.note:
        print(files.note, file=sys.stderr)
