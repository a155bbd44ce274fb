"""The argument table every command shares (model, checkpoint, size, output, threads)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ffedge.cli.common import parse_imgsz


def add_model_args(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument("--model", required=model_required, help="model name: v1, v2_ultra, nano_b")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="weights (.pth); default: the bundled weights when the model has them")
    p.add_argument("--random-init", action="store_true",
                   help="use random weights even when bundled weights exist")
    p.add_argument("--imgsz", type=int, nargs="+", metavar="N",
                   help="input size: one value (square) or H W; multiples of 32 (default 640)")


def resolve_checkpoint(args: argparse.Namespace, quiet: bool = False) -> Path | None:
    """--checkpoint, else the bundled weights of --model (said on stderr), else None."""
    if getattr(args, "checkpoint", None) is not None:
        return args.checkpoint
    if getattr(args, "random_init", False) or not getattr(args, "model", None):
        return None
    from ffedge.models.registry import get_entry
    from ffedge.weights import bundled_checkpoint

    get_entry(args.model)  # an unknown name fails here, before any note

    ckpt = bundled_checkpoint(args.model)
    if not quiet:
        if ckpt is not None:
            print(f"using the bundled {args.model} weights ({ckpt.name})", file=sys.stderr)
        else:
            print(f"note: no trained weights for {args.model}; using random weights "
                  "(pass --checkpoint PATH)", file=sys.stderr)
    return ckpt


def imgsz(args: argparse.Namespace) -> tuple[int, int] | None:
    return parse_imgsz(getattr(args, "imgsz", None))
