"""``ffbench [run]`` and ``ffbench compare``: latency, memory, size and parity per runtime."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ffedge.cli.args import add_model_args, add_runner_args, imgsz, runner_from_args
from ffedge.errors import FFEdgeError


def add_common(p: argparse.ArgumentParser) -> None:
    add_model_args(p, model_required=False)
    p.add_argument("--threads", type=int, default=2, help="threads per runtime (default 2)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--images", type=Path, default=None,
                   help="folder of photos for end-to-end timing and parity (default: synthetic)")
    p.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    p.add_argument("--no-parity", action="store_true", help="skip the comparison with torch")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_runner_args(p)
    p.add_argument("--profile", action="store_true",
                   help="also print a per-op profile: top ops, time share, precision they ran in")
    add_common(p)
    from ffedge.cli.bench_device import add_device_args

    add_device_args(p)  # --device/--host/--lock-clocks (docs/devices.md)


def load_images(folder: Path | None, input_size: tuple[int, int], limit: int = 32) -> list:
    from ffedge.imageio import list_images, random_images, read_image

    if folder is None:
        return random_images(2, input_size)
    images, bad = [], 0
    for f in list_images(folder)[:limit]:
        try:
            images.append(read_image(f))
        except FFEdgeError as exc:
            bad += 1
            print(f"warning: {exc}", file=sys.stderr)
    if not images:
        raise FFEdgeError(f"no readable images in {folder}")
    return images


def reference_checkpoint(args: argparse.Namespace, runner) -> tuple[Path | None, str | None]:
    """The weights that reproduce ``runner``'s artifact in torch, or (None, why not)."""
    from ffedge.digest import file_sha256
    from ffedge.weights import bundled_checkpoint

    meta = runner.info.extra.get("metadata")
    want = getattr(meta, "checkpoint_sha256", "") if meta else ""
    if args.checkpoint is not None:
        if want and file_sha256(args.checkpoint) != want:
            print("warning: --checkpoint differs from the one the artifact was exported from",
                  file=sys.stderr)
        return args.checkpoint, None
    if not want:
        return None, None  # exported from the seeded random init: torch reproduces it
    bundled = bundled_checkpoint(runner.info.model)
    if bundled is not None and file_sha256(bundled) == want:
        return bundled, None
    return None, "pass --checkpoint with the weights the artifact was exported from"


def check_counts(args: argparse.Namespace) -> None:
    """Refuse counts that cannot give a measurement, before any runner is built."""
    if args.iterations < 1:
        raise FFEdgeError(f"--iterations {args.iterations}: at least 1 timed run is needed "
                          "(default 20)")
    if args.warmup < 0:
        raise FFEdgeError(f"--warmup {args.warmup}: use 0 or more (default 3)")
    if args.threads is not None and args.threads < 1:
        raise FFEdgeError(f"--threads {args.threads}: use 1 or more (default 2)")


def make_runner(runtime: str | None, artifact: Path | None, args, workdir: Path):
    from ffedge.cli.args import warn_if_random_artifact
    from ffedge.progress import log

    check_counts(args)
    if artifact is None and runtime not in (None, "torch"):
        log(f"exporting {args.model} for {runtime} ...")
    runner = runner_from_args(args, workdir, runtime or None, artifact, imgsz(args),
                              quiet_weights=artifact is not None or runtime not in (None, "torch"))
    if artifact is not None:  # built on the fly: resolve_checkpoint has already said so
        warn_if_random_artifact(runner)
    return runner


def torch_reference(args, runner):
    from ffedge.runtimes.torch_runner import TorchRunner

    if runner.runtime == "torch" or args.no_parity:
        return None
    from ffedge.specs import MODEL_SPECS

    if runner.info.model not in MODEL_SPECS:  # a --model-def export: its code is the user's
        print(f"note: parity skipped: {runner.info.model} is not a zoo model (its export was "
              "verified against its own torch code)", file=sys.stderr)
        return None
    ckpt, why = reference_checkpoint(args, runner)
    if why:
        print(f"note: parity skipped: {why}", file=sys.stderr)
        return None
    return TorchRunner(runner.info.model, ckpt, runner.spec.input_size, threads=args.threads)


def emit(results, args) -> None:
    from ffedge.benchmarks.bench import render_table

    print(render_table(results))
    from ffedge.cli.bench_device import device_doc

    extra = device_doc(args, results)  # the device block (board, OS, clocks, power, thermal)
    if args.json:
        doc = {"results": [r.to_dict() for r in results], **extra}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
        from ffedge.benchmarks.reports import rows_from_bench, write_reports

        files = write_reports(args.json, rows_from_bench(results), title="ffbench")
        for path in files.written:
            print(f"wrote {path}")
        if files.note:
            print(files.note, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ffedge.cli.bench_device import run_on_device
    from ffedge.cli.verbosity import quiet_unless_verbose

    check_counts(args)

    def quiet_run_here(a: argparse.Namespace) -> int:
        with quiet_unless_verbose(a.verbose):  # runtime/converter chatter only with --verbose
            return run_here(a)

    return run_on_device(args, quiet_run_here)  # --device/--host: here, over SSH, or over adb


def run_here(args: argparse.Namespace) -> int:
    from ffedge.benchmarks.bench import benchmark
    from ffedge.progress import log

    if args.artifact is None and not args.model:
        raise FFEdgeError("give --model NAME or --artifact PATH")
    with tempfile.TemporaryDirectory(prefix="ffbench-") as tmp:
        runner = make_runner(args.runtime, args.artifact, args, Path(tmp))
        images = load_images(args.images, runner.spec.input_size)
        ref = torch_reference(args, runner)
        log(f"benchmarking {runner.describe()}: {args.warmup} warmup + {args.iterations} timed "
            f"runs, model then end to end{', then parity vs torch' if ref else ''} ...")
        result = benchmark(runner, images, args.warmup, args.iterations, reference=ref)
        if getattr(args, "profile", False):
            from ffedge.benchmarks.profile import profile_runner

            print(profile_runner(runner, images[0], args.threads).render())
    emit([result], args)
    return 0
