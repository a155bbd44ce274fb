"""``ffdetect IMAGE... (--model NAME | --artifact PATH)``: faces in photos, drawn or as JSON.

Thin on purpose: reading, the runner, detection (:func:`ffedge.decoder.detect_image`) and
drawing (:func:`ffedge.decoder.draw.draw_detections`) are library calls a Python user makes
the same way. An unreadable image costs one line on stderr and a non-zero exit at the
end, never the other images' results.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ffedge.cli.common import Parser, guarded
from ffedge.errors import FFEdgeError
from ffedge.spec import DECODE, SIZE_DIVISOR

EXIT_SOME_FAILED = 1
SLOW_PIXELS = 4_000_000  # V1 on 2 CPU threads: ~1-2 s per 4 MP; larger ones get a line first


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="ffdetect",
        description="Detect faces (boxes, scores, five landmarks) with a FeatherFace model or "
                    "an exported artifact.",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="photos to process")
    p.add_argument("--model", default=None, help="model name (v1, v2_ultra, nano_b)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="weights for --model (default: the bundled weights when it has them)")
    p.add_argument("--artifact", type=Path, default=None, help="exported model to run instead")
    p.add_argument("--runtime", default=None,
                   help="runtime for --artifact (default: from its file type)")
    p.add_argument("--threshold", type=float, default=0.5, help="face score threshold (0.5)")
    p.add_argument("--nms", type=float, default=DECODE.nms_threshold,
                   help=f"NMS IoU threshold ({DECODE.nms_threshold})")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, default=None, metavar="N",
                      help="run at NxN, letterboxed (default: the model's input size)")
    size.add_argument("--original-size", action="store_true",
                      help="run at each image's own size, padded to a multiple of 32")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="OUT_DIR",
                   help="write <stem>_faces.jpg per image here (and detections.json with --json)")
    p.add_argument("--json", action="store_true",
                   help="print detections as JSON (to OUT_DIR/detections.json with -o)")
    p.add_argument("--threads", type=int, default=None, help="inference threads")
    p.add_argument("--verbose", action="store_true",
                   help="show third-party runtime output")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ffedge.cli.verbosity import quiet_unless_verbose

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))

    def quiet_run() -> int:
        with quiet_unless_verbose(args.verbose):
            return run(args)

    return guarded(quiet_run)


def _check_args(args: argparse.Namespace) -> tuple[int, int] | None:
    if args.model is None and args.artifact is None:
        raise FFEdgeError("give --model NAME or --artifact PATH")
    if args.checkpoint is not None and args.artifact is not None:
        raise FFEdgeError("--checkpoint goes with --model, not with --artifact")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise FFEdgeError(f"checkpoint not found: {args.checkpoint}")
    if not 0.0 <= args.threshold <= 1.0:
        raise FFEdgeError(f"--threshold {args.threshold}: a score between 0 and 1 is needed")
    if not 0.0 <= args.nms <= 1.0:
        raise FFEdgeError(f"--nms {args.nms}: an IoU between 0 and 1 is needed")
    if args.output is not None and args.output.exists() and not args.output.is_dir():
        raise FFEdgeError(f"-o {args.output} is an existing file; -o takes a folder "
                          "(OUT_DIR, created if missing): pass another path")
    if args.size is None:
        return None
    if args.size <= 0 or args.size % SIZE_DIVISOR:
        raise FFEdgeError(f"--size {args.size}: a positive multiple of {SIZE_DIVISOR} is needed")
    from ffedge.cli.args import check_input_memory

    check_input_memory(args.size, args.size, "--size", what=f"--size {args.size}")
    return args.size, args.size


def _check_original_size(path: Path, image, index: int, total: int) -> None:
    """--original-size: refuse a photo too large for memory; say so before a slow one."""
    from ffedge.cli.args import check_input_memory
    from ffedge.progress import log

    h, w = image.shape[:2]
    ph, pw = -(-h // SIZE_DIVISOR) * SIZE_DIVISOR, -(-w // SIZE_DIVISOR) * SIZE_DIVISOR
    check_input_memory(ph, pw, "--original-size",
                       what=f"{path.name} at its original size ({pw}x{ph}, --original-size)",
                       fix="use --size {side} or less (letterboxed) instead of --original-size")
    if ph * pw >= SLOW_PIXELS:
        counter = f"[{index}/{total}] " if total > 1 else ""
        log(f"{counter}{path.name}: running at {pw}x{ph} ({ph * pw / 1e6:.1f} MP) ...")


def _load(args: argparse.Namespace, size: tuple[int, int] | None):
    from ffedge.cli.args import resolve_checkpoint, warn_if_random_artifact
    from ffedge.runtimes import load_runner

    checkpoint = None
    if args.artifact is None:
        checkpoint = resolve_checkpoint(args, quiet=False)
    runner = load_runner(runtime=args.runtime, artifact=args.artifact, model=args.model,
                         checkpoint=checkpoint, input_size=size, threads=args.threads)
    if args.artifact is not None:
        warn_if_random_artifact(runner)
    return runner.activate()  # a bad checkpoint fails here, once, before any image


def _output_path(out_dir: Path, image: Path, used: set[Path], inputs: set[Path]) -> Path:
    """``<stem>_faces.jpg``, unique in this run and never one of the input images (say
    ``ffdetect out/a_faces.jpg a.jpg -o out``)."""
    stem, k = image.stem, 1
    while True:
        name = f"{stem}_faces.jpg" if k == 1 else f"{stem}_{k}_faces.jpg"
        path = out_dir / name
        if path not in used and path.resolve() not in inputs:
            used.add(path)
            return path
        k += 1


def run(args: argparse.Namespace) -> int:
    import cv2

    from ffedge.decoder.draw import draw_detections
    from ffedge.decoder.pipeline import detect_image
    from ffedge.imageio import read_image

    size = _check_args(args)
    runner = _load(args, size)
    out_dir: Path | None = args.output  # created at the first write: a refusal leaves nothing
    lines_to_stdout = not (args.json and out_dir is None)
    mode = "original" if args.original_size else None

    results: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    used: set[Path] = set()
    inputs = {p.resolve() for p in args.images}
    for index, path in enumerate(args.images, 1):
        try:
            image = read_image(path)
        except FFEdgeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            errors.append({"image": str(path), "error": str(exc)})
            continue
        if args.original_size:
            _check_original_size(path, image, index, len(args.images))
        dets = detect_image(runner, image, score_threshold=args.threshold,
                            nms_threshold=args.nms, size=size, mode=mode)
        entry: dict[str, Any] = {"image": str(path), **dets.to_dict()}
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            target = _output_path(out_dir, path, used, inputs)
            if not cv2.imwrite(str(target), draw_detections(image, dets)):
                msg = f"cannot write {target}"
                print(f"error: {msg}", file=sys.stderr)
                errors.append({"image": str(path), "error": msg})
            else:
                entry["output"] = str(target)
        results.append(entry)
        if lines_to_stdout:
            n = len(dets)
            print(f"{path}: {n} face{'' if n == 1 else 's'}")

    if args.json:
        doc = {
            "model": runner.info.model,
            "runtime": runner.runtime,
            "artifact": str(args.artifact) if args.artifact else None,
            "score_threshold": args.threshold,
            "nms_threshold": args.nms,
            "input": "original" if args.original_size else list(size or runner.spec.input_size),
            "images": results,
            "errors": errors,
        }
        text = json.dumps(doc, indent=1)
        if out_dir is not None:
            from ffedge.artifact.atomic import write_bytes_atomic

            out_dir.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(out_dir / "detections.json", (text + "\n").encode())
        else:
            print(text)
    return EXIT_SOME_FAILED if errors else 0
