"""``ffbench compare``: several runtimes on the same inputs, one process, one table."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ffedge.cli.bench_run import add_common, emit, load_images, make_runner, torch_reference
from ffedge.errors import FFEdgeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime"],
                   help="runtimes to build on the fly from --model (default: torch onnxruntime)")
    p.add_argument("--artifacts", type=Path, nargs="*", default=[],
                   help="exported artifacts to add (runtime from the file suffix)")
    add_common(p)
    from ffedge.cli.bench_device import add_json_inputs

    add_json_inputs(p)  # ffbench compare a.json b.json: reports from several devices


def run(args: argparse.Namespace) -> int:
    from ffedge.benchmarks.bench import benchmark

    if getattr(args, "reports", None):
        from ffedge.cli.bench_device import compare_reports

        return compare_reports(args)
    if not args.model and not args.artifacts:
        raise FFEdgeError("give --model NAME and/or --artifacts PATH...")
    runtimes = args.runtimes if args.model else []
    results = []
    with tempfile.TemporaryDirectory(prefix="ffbench-") as tmp:
        runners = [make_runner(rt, None, args, Path(tmp)) for rt in runtimes]
        runners += [make_runner(None, a, args, Path(tmp)) for a in args.artifacts]
        images = load_images(args.images, runners[0].spec.input_size)
        reference = None if args.no_parity else next((r for r in runners if r.runtime == "torch"), None)
        ref_outputs = None
        for runner in runners:
            ref = reference if reference is not None and runner is not reference else None
            if ref is None and runner.runtime != "torch":
                ref = torch_reference(args, runner)
            if ref is not None and ref is reference and ref_outputs is None:
                from ffedge.decoder.transform import preprocess

                ref_outputs = [ref.infer(preprocess(img, ref.spec)[0][None]) for img in images]
            print(f"benchmarking {runner.describe()} ...", file=sys.stderr)
            results.append(benchmark(runner, images, args.warmup, args.iterations, reference=ref,
                                     ref_outputs=ref_outputs if ref is reference else None))
    emit(results, args)
    return 0
