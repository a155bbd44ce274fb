"""The argument groups every command shares (model, size, output, runner, calibration),
and ``runner_from_args``: one way from parsed flags to a runner."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ffedge.cli.common import parse_imgsz
from ffedge.errors import FFEdgeError

# Peak memory of float inference per input pixel: peak RSS growth over the loaded model
# (resource.getrusage, one 1-thread inference at 640/1280/1920 px square), measured here:
#   torch V1 238/138/128 B/px, torch nano_b 154/67/59, onnxruntime V1 72/71/68, nano_b 38/37/35.
# 200 covers the worst (torch V1; the 640 figure includes first-call allocator overhead) plus
# ffdetect's decoded image and float tensor (~15 B/px). `ffexport onnx` (trace + verify) grew
# 190 B/px (V1) and 139 B/px (nano_b) from 640 to 1920 (/usr/bin/time -v), so the exporters'
# EXPORT_MEMORY_FACTOR of 3 is a conservative margin, not a measurement.
BYTES_PER_PIXEL = 200
MEMORY_SHARE = 0.6  # refuse a size needing more than this share of available memory


def model_help() -> str:
    from ffedge.specs import MODEL_SPECS

    return "model name: " + ", ".join(MODEL_SPECS) + " (or --model-def FILE.py:FACTORY)"


def add_model_args(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument("--model", required=model_required, help=model_help())
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="weights (.pth); default: the bundled weights when the model has them")
    p.add_argument("--random-init", action="store_true",
                   help="use random weights even when bundled weights exist")
    p.add_argument("--imgsz", type=int, nargs="+", metavar="N",
                   help="input size: one value (square) or H W; multiples of 32 (default 640)")
    p.add_argument("--verbose", action="store_true",
                   help="show third-party converter/runtime output")


def add_model_def_args(p: argparse.ArgumentParser) -> None:
    """Bring your own model (``ffexport``): a detector defined in any Python file."""
    g = p.add_argument_group("bring your own model (instead of --model; docs/models.md)")
    g.add_argument("--model-def", default=None, metavar="FILE.py:FACTORY",
                   help="a RetinaFace-style nn.Module built by FACTORY() (or "
                        "FACTORY(state_dict=...)) in FILE.py; --checkpoint is loaded strictly")
    g.add_argument("--model-name", default=None,
                   help="name in the artifact's metadata (default: the factory's name)")
    g.add_argument("--spec", default=None, metavar="JSON|ZOO_MODEL",
                   help="deployment spec: a JSON file of fields, or a zoo model whose spec "
                        "to use (default: the module's .spec, else RetinaFace's)")
    g.add_argument("--scores", choices=("logits", "probabilities"), default=None,
                   help="what the model's class output is (default logits: ffedge appends "
                        "the softmax)")


def user_model(args: argparse.Namespace):
    """The model ``--model-def`` names, built and loaded (None without the flag)."""
    if getattr(args, "model_def", None) is None:
        for flag in ("model_name", "spec", "scores"):
            if getattr(args, flag, None) is not None:
                raise FFEdgeError(f"--{flag.replace('_', '-')} goes with --model-def")
        if not getattr(args, "model", None):
            raise FFEdgeError("give --model NAME or --model-def FILE.py:FACTORY")
        return None
    if getattr(args, "model", None):
        raise FFEdgeError("give --model NAME or --model-def FILE.py:FACTORY, not both")
    from ffedge.models.user import load_model_def

    return load_model_def(args.model_def, args.checkpoint, args.spec, args.model_name,
                          args.scores)


def add_runner_args(p: argparse.ArgumentParser) -> None:
    """``--runtime`` / ``--artifact`` with the choices read from the target registry."""
    from ffedge.artifact.targets import help_line

    p.add_argument("--runtime", default=None,
                   help=f"runtime: {help_line()} (default: torch for --model, from the file "
                        "type for --artifact)")
    p.add_argument("--artifact", type=Path, default=None, help="exported model to run")


def add_quant_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """Calibration and fidelity-gate options, the same for every quantised target."""
    g = p.add_argument_group("int8 calibration and fidelity gate")
    g.add_argument("--calib", type=Path, required=required,
                   help="calibration images: WIDER_train, a label.txt, any folder, or a .txt of "
                        "paths" + ("" if required else " (int8 only)"))
    g.add_argument("--num-images", type=int, default=300, help="calibration images (default 300)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    g.add_argument("--eval-images", type=Path, default=None,
                   help="held-out photos for the fidelity gate (default: a disjoint sample of --calib)")
    g.add_argument("--num-eval", type=int, default=50, help="held-out images when sampled (default 50)")
    g.add_argument("--min-f1", type=float, default=None,
                   help="fail (and write nothing) below this detection F1 vs torch FP32 "
                        "(default 0.98 with trained weights; reported only with random weights)")
    g.add_argument("--no-fallback", action="store_true",
                   help="do not search for layers to keep in float when the gate fails")
    g.add_argument("--auto-fallback", action="store_true",
                   help=argparse.SUPPRESS)  # the default since 0.2; accepted for old scripts
    g.add_argument("--cache-dir", type=Path, default=None, help="calibration tensor cache")


def calibration(args: argparse.Namespace):
    """The :class:`~ffedge.export.calibration_plan.Calibration` the flags ask for, or None."""
    from ffedge.export.calibration_plan import Calibration

    if getattr(args, "calib", None) is None:
        return None
    if args.num_images < 1 or args.num_eval < 1:
        raise FFEdgeError("--num-images and --num-eval must be at least 1")
    return Calibration(args.calib, args.num_images, args.seed, args.eval_images, args.num_eval,
                       args.cache_dir)


_WARNED_RANDOM: set[str] = set()


def warn_random(what: str, why: str) -> None:
    """The random-weights warning, once per model (or artifact) per process."""
    if what in _WARNED_RANDOM:
        return
    _WARNED_RANDOM.add(what)
    print(f"warning: {what} runs with RANDOM weights ({why}): its detections mean nothing",
          file=sys.stderr)


def resolve_checkpoint(args: argparse.Namespace, quiet: bool = False) -> Path | None:
    """--checkpoint, else the bundled weights of --model, else None (random weights).

    ``quiet`` hides the "using the bundled weights" note; the random-weights warning is
    always shown (once per model)."""
    if getattr(args, "checkpoint", None) is not None:
        return args.checkpoint
    if getattr(args, "random_init", False) or not getattr(args, "model", None):
        if getattr(args, "model", None):
            warn_random(args.model, "--random-init")
        return None
    from ffedge.models.registry import get_entry
    from ffedge.weights import bundled_checkpoint

    get_entry(args.model)  # an unknown name fails here, before any note
    ckpt = bundled_checkpoint(args.model)
    if ckpt is None:
        warn_random(args.model, "no trained weights exist for it; pass --checkpoint PATH")
    elif not quiet:
        print(f"using the bundled {args.model} weights ({ckpt.name})", file=sys.stderr)
    return ckpt


def warn_if_random_artifact(runner) -> None:
    """An artifact of a zoo model exported without a checkpoint file ran random weights."""
    from ffedge.specs import MODEL_SPECS

    meta = runner.info.extra.get("metadata")
    if (meta is not None and getattr(meta, "precision", "unknown") != "unknown"
            and not getattr(meta, "checkpoint_sha256", "") and meta.model in MODEL_SPECS):
        name = runner.info.path.name if runner.info.path else meta.model
        warn_random(name, f"exported from the seeded random init of {meta.model}")


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable), else physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_input_memory(height: int, width: int, flag: str, factor: float = 1.0,
                       what: str | None = None, fix: str | None = None) -> None:
    """Refuse, up front, a size whose inference would not fit in memory. ``what`` names the
    input (default "FLAG HxW"); ``fix`` is the hint, with ``{side}`` the largest square that
    fits (default "use FLAG {side} or less")."""
    need = height * width * BYTES_PER_PIXEL * factor
    have = available_memory()
    if need > have * MEMORY_SHARE:
        side = int((have * MEMORY_SHARE / (BYTES_PER_PIXEL * factor)) ** 0.5) // 32 * 32
        hint = (fix or f"use {flag} {{side}} or less").format(side=side)
        raise FFEdgeError(f"{what or f'{flag} {height}x{width}'} needs ~{need / 2**30:.1f} GiB; "
                          f"this machine has {have / 2**30:.1f} GiB available: {hint}")


def imgsz(args: argparse.Namespace, factor: float = 1.0) -> tuple[int, int] | None:
    size = parse_imgsz(getattr(args, "imgsz", None))
    if size is not None:
        check_input_memory(*size, "--imgsz", factor)
    return size


def runner_from_args(args: argparse.Namespace, workdir: Path, runtime: str | None = None,
                     artifact: Path | None = None, input_size: tuple[int, int] | None = None,
                     quiet_weights: bool = False):
    """--artifact as is; --model in torch, or exported on the fly for another runtime."""
    from ffedge.runtimes import load_runner

    runtime = runtime if runtime is not None else getattr(args, "runtime", None)
    artifact = artifact if artifact is not None else getattr(args, "artifact", None)
    if artifact is None and not getattr(args, "model", None):
        raise FFEdgeError("give --model NAME or --artifact PATH")
    if artifact is None and runtime not in (None, "torch"):
        from ffedge.artifact.targets import find_target
        from ffedge.export.pipeline import build_for_runtime

        find_target(runtime)  # an unknown runtime lists the real ones, before any export
        artifact = build_for_runtime(runtime, args.model,
                                     resolve_checkpoint(args, quiet=quiet_weights),
                                     input_size, workdir)
    if artifact is None:
        return load_runner("torch", model=args.model,
                           checkpoint=resolve_checkpoint(args, quiet=quiet_weights),
                           input_size=input_size, threads=args.threads)
    return load_runner(runtime, artifact=artifact, model=getattr(args, "model", None),
                       input_size=input_size, threads=args.threads)
