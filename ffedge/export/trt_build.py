"""Build a TensorRT engine from a Jetson bundle, verify it, then write ``.engine`` + sidecar.

Runs where TensorRT runs (a Jetson, or any NVIDIA GPU with TensorRT): ``python -m
ffedge.export.trt_build BUNDLE [-o x.engine] [--precision fp16|int8|fp32] [--dla-core N]``.
Written against the documented TensorRT Python API, with the 8.x / 10.x / 11.x branches:

- network: ``create_network(EXPLICIT_BATCH)`` on 8.x, ``create_network(0)`` on 10.x (explicit
  batch is the only mode; the flag is deprecated), strongly typed on 11 (always);
- precision: ``BuilderFlag.FP16`` / ``INT8`` on 8.x-10.x; none on 11 (removed: the graph's Q/DQ
  and types decide);
- ``set_memory_pool_limit(WORKSPACE, ...)`` (``max_workspace_size`` before 8.4), a timing
  cache, DLA via ``default_device_type``/``DLA_core`` + ``GPU_FALLBACK``, INT8-on-DLA via the
  bundle's calibration cache; parser errors reported per node.

Before anything is written, the engine runs the bundle's reference inputs and is compared
with the torch FP32 outputs through the shared decoder (F1 and raw errors).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ffedge.artifact.metadata import OUTPUT_NAMES, ArtifactMetadata, sidecar_json, sidecar_path
from ffedge.errors import FFEdgeError
from ffedge.export.tensorrt_target import (
    CACHE_NAME,
    FLOAT_ONNX_NAME,
    ONNX_NAME,
    REFERENCE_NAME,
    read_manifest,
)
from ffedge.runtimes.tensorrt_runner import device_identity, import_tensorrt

# max |error| / max(|ref|, 1) per output, and detection F1 floor, vs torch FP32
ENGINE_TOLERANCE = {"fp32": 5e-3, "fp16": 5e-2, "int8": None}  # fp32 engines use TF32
ENGINE_MIN_F1 = {"fp32": 0.99, "fp16": 0.98, "int8": 0.95}


def trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def parse_onnx(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> Any:
    """A network parsed from ``onnx_path``; parser errors become one line naming each node."""
    major = trt_major(trt)
    flags = 0
    if major < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            name = e.node_name() if hasattr(e, "node_name") else ""
            op = e.node_operator() if hasattr(e, "node_operator") else ""
            errs.append(f"node {e.node()} {name} [{op}]: {e.desc()}")
        raise FFEdgeError(f"TensorRT {trt.__version__} cannot parse {onnx_path.name}: "
                          + "; ".join(errs[:4]) + (f" (+{len(errs) - 4} more)" if len(errs) > 4 else ""))
    return network, parser


class _CacheCalibrator:
    """An IInt8EntropyCalibrator2 that only reads the bundle's cache (DLA INT8, TRT <= 10)."""

    def __new__(cls, trt: Any, cache: Path):
        class Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self) -> None:
                trt.IInt8EntropyCalibrator2.__init__(self)

            def get_batch_size(self) -> int:
                return 1

            def get_batch(self, names):  # no data: the cache holds every scale
                return None

            def read_calibration_cache(self):
                return cache.read_bytes()

            def write_calibration_cache(self, data) -> None:
                return None

        return Calibrator()


def make_config(trt: Any, builder: Any, precision: str, dla_core: int | None, workspace_mb: int,
                timing_cache: bytes, bundle: Path, use_cache: bool) -> Any:
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    else:  # TensorRT < 8.4
        config.max_workspace_size = workspace_mb << 20
    if trt_major(trt) < 11:
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)  # float islands of an int8 graph too
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
    if hasattr(config, "create_timing_cache"):
        cache = config.create_timing_cache(timing_cache)
        config.set_timing_cache(cache, ignore_mismatch=False)
    if dla_core is not None:
        if builder.num_DLA_cores <= dla_core:
            raise FFEdgeError(f"--dla-core {dla_core}: this device has {builder.num_DLA_cores} "
                              "DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        if use_cache:
            config.int8_calibrator = _CacheCalibrator(trt, bundle / CACHE_NAME)
    return config


def build_serialized(bundle: Path, manifest: dict, precision: str, dla_core: int | None,
                     workspace_mb: int = 1024, timing_cache: Path | None = None) -> bytes:
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # DeformConv maps onto ModulatedDeformConv2d
    builder = trt.Builder(logger)
    files = manifest["files"]
    use_cache = (dla_core is not None and precision == "int8" and "calibration_cache" in files
                 and trt_major(trt) < 11)
    onnx_path = bundle / (FLOAT_ONNX_NAME if use_cache else files.get("onnx", ONNX_NAME))
    network, _parser = parse_onnx(trt, builder, logger, onnx_path)
    tc = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    config = make_config(trt, builder, precision, dla_core, workspace_mb, tc, bundle, use_cache)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise FFEdgeError(f"TensorRT {trt.__version__} failed to build an engine from "
                          f"{onnx_path.name} (run with FFEDGE_VERBOSE=1 for its log)")
    if timing_cache is not None and hasattr(config, "get_timing_cache"):
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(blob)


def load_reference(bundle: Path) -> dict[str, np.ndarray]:
    with np.load(bundle / REFERENCE_NAME) as z:
        return {k: z[k] for k in z.files}


def verify_engine(session: Any, manifest: dict, ref: dict[str, np.ndarray], precision: str):
    """Run the reference inputs through ``session``; (ParityReport, failure reasons)."""
    from ffedge.export.verify import parity_decoder
    from ffedge.runtimes.compare import ParityReport, match_detections
    from ffedge.spec import DeploymentSpec

    spec = DeploymentSpec.from_dict(manifest["metadata"]["spec"])
    decode = parity_decoder(spec)
    rep = ParityReport("torch fp32 (bundle reference)", f"tensorrt {precision}")
    name = manifest["input"]
    for i in range(ref["images"].shape[0]):
        x = ref["images"][i:i + 1].astype(np.float32)
        out = session.run({name: x})
        got = tuple(out[n].astype(np.float32) for n in OUTPUT_NAMES)
        want = tuple(ref[n][i:i + 1] for n in OUTPUT_NAMES)
        rep.images += 1
        for n, r, o in zip(OUTPUT_NAMES, want, got):
            rep.outputs[n].update(r, o)
        for (rb, rs), (cb, cs) in zip(decode(want, [None]), decode(got, [None])):
            rep.detections.add(match_detections(rb, rs, cb, cs, 0.5))
    trained = bool(manifest.get("trained_weights"))  # random weights: F1 reported only
    floor = ENGINE_MIN_F1[precision] if trained else 0.0
    return rep, rep.failures(ENGINE_TOLERANCE[precision], floor)


def engine_metadata(manifest: dict, precision: str, identity: dict, dla_core: int | None,
                    bundle: Path, seconds: float) -> ArtifactMetadata:
    props = {f"ffedge.{k}": (v if isinstance(v, str) else json.dumps(v))
             for k, v in manifest["metadata"].items()}
    props["ffedge.spec"] = json.dumps(manifest["metadata"]["spec"])
    meta = ArtifactMetadata.from_props(props)
    assert meta is not None
    meta.precision = precision
    meta.extra["tensorrt"] = {**identity, "dla_core": dla_core, "bundle": bundle.name,
                              "dcn_mode": manifest["dcn_mode"], "build_seconds": round(seconds, 1),
                              "input_shape": manifest["inputs"][0]["shape"]}
    return meta


def build_engine(bundle: str | Path, output: str | Path | None = None,
                 precision: str | None = None, dla_core: int | None = None,
                 workspace_mb: int = 1024, timing_cache: str | Path | None = None,
                 verify: bool = True) -> tuple[Path, Any]:
    """Build, verify against the bundle's reference outputs, write engine + sidecar."""
    from ffedge.artifact.atomic import atomic_files
    from ffedge.runtimes.tensorrt_runner import EngineSession

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    precision = precision or manifest["precision"]
    if precision == "int8" and manifest["precision"] != "int8":
        raise FFEdgeError("an int8 engine needs an int8 bundle (ffexport tensorrt --precision int8)")
    out = Path(output) if output else bundle.with_name(f"{bundle.stem}_{precision}.engine")
    identity = device_identity()
    t0 = time.perf_counter()
    blob = build_serialized(bundle, manifest, precision, dla_core, workspace_mb,
                            Path(timing_cache) if timing_cache else None)
    seconds = time.perf_counter() - t0
    report = None
    if verify:
        session = EngineSession(blob, dla_core)
        report, reasons = verify_engine(session, manifest, load_reference(bundle), precision)
        session.close()
        if reasons:
            raise FFEdgeError(f"engine verification failed, nothing written to {out}: "
                              + "; ".join(reasons))
    meta = engine_metadata(manifest, precision, identity, dla_core, bundle, seconds)
    with atomic_files([out, sidecar_path(out)]) as (tmp_engine, tmp_side):
        tmp_engine.write_bytes(blob)
        tmp_side.write_text(sidecar_json(meta))
    return out, report


def benchmark(engine: str | Path, runs: int = 200, warmup: int = 20) -> dict[str, float]:
    """Latency of one static-shape inference (host<->device copies included), ms."""
    from ffedge.runtimes.tensorrt_runner import TensorRTRunner

    runner = TensorRTRunner(engine).activate()
    h, w = runner.spec.input_size
    x = np.zeros((1, 3, h, w), np.float32)
    for _ in range(warmup):
        runner.infer(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        runner.infer(x)
        times.append((time.perf_counter() - t) * 1e3)
    a = np.array(times)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "mean_ms": float(a.mean()), "runs": runs}


def build_instructions(manifest: dict, folder: str) -> str:
    """BUILD.md: the exact trtexec lines and our builder command for this bundle."""
    p = manifest["precision"]
    files = manifest["files"]
    major = int(manifest["target_tensorrt"].split(".")[0])
    flags = {"fp32": "", "fp16": " --fp16", "int8": " --fp16 --int8"}[p] if major < 11 else ""
    if major >= 11:
        flags = " --stronglyTyped"
    shape = "x".join(str(d) for d in manifest["inputs"][0]["shape"])
    stem = folder.removesuffix(".trtbundle")
    trtexec = (f"/usr/src/tensorrt/bin/trtexec --onnx={folder}/{files['onnx']}{flags} "
               f"--shapes={manifest['input']}:{shape} --saveEngine={stem}_{p}.engine "
               f"--timingCacheFile=timing.cache")
    lines = [f"# Build the TensorRT engine for {manifest['model']} ({p})", "",
             f"Made for TensorRT {manifest['target_tensorrt']} (JetPack "
             f"{manifest.get('target_jetpack') or '?'}); needs TensorRT >= "
             f"{manifest['minimum_tensorrt']}. DCN: {manifest['dcn_mode']}. Engines are not "
             "portable: build on the device that runs them.", "",
             "Our builder (verifies against reference.npz before writing; writes a .json "
             "sidecar the runner checks):", "", "```",
             f"python -m ffedge.export.trt_build {folder} --precision {p}", "```", "",
             "trtexec (no verification):", "", "```", trtexec, "```"]
    if "calibration_cache" in files:
        lines += ["", "DLA (INT8 needs the calibration cache before TensorRT 11):", "", "```",
                  f"/usr/src/tensorrt/bin/trtexec --onnx={folder}/{files['float_onnx']} --int8 "
                  f"--fp16 --calib={folder}/{files['calibration_cache']} --useDLACore=0 "
                  f"--allowGPUFallback --saveEngine={stem}_dla.engine",
                  f"python -m ffedge.export.trt_build {folder} --precision int8 --dla-core 0",
                  "```"]
    elif manifest["dla"]["requested"]:
        lines += ["", "DLA:", "", "```", trtexec.replace("--saveEngine", "--useDLACore=0 "
                  "--allowGPUFallback --saveEngine"),
                  f"python -m ffedge.export.trt_build {folder} --precision {p} --dla-core 0",
                  "```"]
    lines += ["", "Parity and latency on the device: scripts/trt_device_check.sh " + folder, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m ffedge.export.trt_build",
                                 description="Build and verify a TensorRT engine from a bundle.")
    ap.add_argument("bundle", type=Path)
    ap.add_argument("-o", "--output", type=Path)
    ap.add_argument("--precision", choices=("fp32", "fp16", "int8"))
    ap.add_argument("--dla-core", type=int, default=None)
    ap.add_argument("--workspace-mb", type=int, default=1024)
    ap.add_argument("--timing-cache", type=Path, default=None)
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--benchmark", type=int, default=0, help="then time N runs")
    args = ap.parse_args(argv)
    try:
        out, rep = build_engine(args.bundle, args.output, args.precision, args.dla_core,
                                args.workspace_mb, args.timing_cache, not args.no_verify)
        print(f"built {out}")
        if rep is not None:
            d, o = rep.detections, rep.outputs
            print(f"  parity vs torch FP32 on {rep.images} reference images: F1 {d.f1:.4f}, "
                  f"faces {d.matched}/{d.reference}; max abs err boxes {o['boxes'].max_abs:.3g}, "
                  f"scores {o['scores'].max_abs:.3g}, landmarks {o['landmarks'].max_abs:.3g}")
        if args.benchmark:
            print("  latency " + json.dumps(benchmark(out, args.benchmark)))
    except FFEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
