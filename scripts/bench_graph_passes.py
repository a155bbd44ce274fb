"""Graph passes benchmark: nodes and latency per model, runtime and --optimize level.

Exports each model at every requested level, then times all variants of one runtime
*alternately* in one loop (round-robin, so load drifts hit every variant alike) on a fixed
input, and reports the median. ms per conv-GMAC uses the conv MACs of the level-0 graph for
every level (passes must not buy speed by moving arithmetic out of convs).

    python scripts/bench_graph_passes.py --models nano_b v1 v2_ca eca_cbam \
        --runtimes onnxruntime openvino --levels 0 1 2 --threads 2 --rounds 30 [--profile]

Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np

DCN = {"onnxruntime": "native", "openvino": "gridsample"}
CHECKPOINTS = {"v1": "ffedge/weights/featherface_v1_widerface.pth"}


def conv_gmacs(proto) -> float:
    """MACs of Conv and DeformConv nodes, from inferred static shapes."""
    import onnx
    from onnx import numpy_helper

    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    weights = {t.name: numpy_helper.to_array(t).shape for t in proto.graph.initializer}
    macs = 0
    for node in proto.graph.node:
        if node.op_type in ("Conv", "DeformConv") and node.input[1] in weights:
            _, cin_g, *kernel = weights[node.input[1]]  # 2-D convs and ECA's 1-D conv
            out = shapes.get(node.output[0])
            if out:
                macs += int(np.prod(out)) * cin_g * int(np.prod(kernel))
    return macs / 1e9


def export(model: str, level: int, dcn: str, size: int):
    from ffedge.export.onnx_export import OnnxOptions, trace_to_onnx
    from ffedge.models import create_model

    net = create_model(model, CHECKPOINTS.get(model))  # zoo: bundled weights where they exist
    graph = trace_to_onnx(net, (size, size), OnnxOptions(dcn=dcn, optimize=level))
    return graph.proto, sum(graph.node_histogram.values())


def ort_session(path: Path, threads: int, profile: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    if profile:
        so.enable_profiling, so.profile_file_prefix = True, profile
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess, (lambda x: sess.run(None, {"images": x}))


def ov_compiled(path: Path, threads: int, profile: bool = False):
    import openvino as ov

    core = ov.Core()
    cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
           "INFERENCE_PRECISION_HINT": "f32"}  # as the product runner
    if profile:
        cfg["PERF_COUNT"] = True
    compiled = core.compile_model(ov.convert_model(str(path)), "CPU", cfg)
    req = compiled.create_infer_request()
    return req, (lambda x: req.infer({0: x}))


def profile_ops(runtime: str, path: Path, threads: int, x, runs: int = 10) -> dict[str, float]:
    """Per-op-type share of kernel time (percent)."""
    by: collections.Counter = collections.Counter()
    if runtime == "onnxruntime":
        sess, run = ort_session(path, threads, profile=str(path.with_suffix("")))
        for _ in range(runs):
            run(x)
        for ev in json.loads(Path(sess.end_profiling()).read_text()):
            if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
                by[ev["args"]["op_name"]] += ev["dur"]
    else:
        req, run = ov_compiled(path, threads, profile=True)
        for _ in range(runs):
            run(x)
            for p in req.profiling_info:
                if p.status == p.Status.EXECUTED:
                    by[p.node_type] += p.real_time.total_seconds()
    total = sum(by.values()) or 1.0
    return {k: round(100 * v / total, 1) for k, v in by.most_common(8)}


def bench_runtime(runtime, paths, threads, rounds, x) -> list[float]:
    make = ort_session if runtime == "onnxruntime" else ov_compiled
    runs = [make(p, threads)[1] for p in paths]
    for run in runs:  # warm-up
        run(x), run(x)
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for i, run in enumerate(runs):
            t = time.perf_counter()
            run(x)
            times[i].append(time.perf_counter() - t)
    return [1000 * float(np.median(t)) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["nano_b", "v1"])
    ap.add_argument("--runtimes", nargs="+", default=["onnxruntime", "openvino"])
    ap.add_argument("--levels", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--profile", action="store_true", help="per-op time shares too")
    args = ap.parse_args()
    x = (np.random.default_rng(0).random((1, 3, args.size, args.size)) * 255).astype(np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="ffgp_"))
    print("| model | runtime | level | nodes | ms (median) | speed-up | conv GMAC | ms/GMAC |")
    print("|---|---|---|---|---|---|---|---|")
    profiles = []
    for model in args.models:
        for runtime in args.runtimes:
            paths, nodes, gmacs = [], [], 0.0
            for level in args.levels:
                proto, n = export(model, level, DCN[runtime], args.size)
                gmacs = gmacs or conv_gmacs(proto)
                path = tmp / f"{model}_{runtime}_o{level}.onnx"
                path.write_bytes(proto.SerializeToString())
                paths.append(path)
                nodes.append(n)
            ms = bench_runtime(runtime, paths, args.threads, args.rounds, x)
            for level, n, t in zip(args.levels, nodes, ms, strict=True):
                print(f"| {model} | {runtime} | {level} | {n} | {t:.1f} | {ms[0] / t:.2f}x "
                      f"| {gmacs:.3f} | {t / gmacs:.1f} |", flush=True)
                if args.profile:
                    profiles.append((model, runtime, level,
                                     profile_ops(runtime, paths[args.levels.index(level)],
                                                 args.threads, x)))
    for model, runtime, level, ops in profiles:
        print(f"profile {model} {runtime} level {level}: "
              + ", ".join(f"{k} {v}%" for k, v in ops.items()))


if __name__ == "__main__":
    main()
