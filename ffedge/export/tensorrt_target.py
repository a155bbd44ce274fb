"""The TensorRT target: a **Jetson bundle** (a folder) that builds a verified engine on the
device.

The bundle holds the TensorRT-ready ONNX (:mod:`ffedge.export.trt_onnx`; for int8 the
explicit QDQ graph of :mod:`ffedge.export.trt_int8`, fidelity-gated in onnxruntime on
held-out photos and passed by the linter :mod:`ffedge.export.trt_lint`), the DLA
calibration cache and float graph when ``--dla`` int8 needs them (TensorRT <= 10), a
``manifest.json`` (spec, I/O names and shapes, minimum TensorRT, DCN mode, precision, DLA
report), ``reference.npz`` (inputs + torch FP32 outputs, and the graph's onnxruntime outputs)
for on-device parity, and ``BUILD.md`` with the exact trtexec line and our builder command.
TensorRT itself is not needed to make a bundle; the engine is built where it runs
(:mod:`ffedge.export.trt_build`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ffedge.artifact.metadata import INPUT_NAME, OUTPUT_NAMES, ArtifactMetadata
from ffedge.errors import FFEdgeError
from ffedge.export.pipeline import FALLBACK, ExportContext, ExportRequest, Target, export
from ffedge.export.report import ExportReport
from ffedge.export.trt_versions import MAX_OPSET, TrtVersion, jetpack_for, min_version_for_ops

BUNDLE_SUFFIX = ".trtbundle"
BUNDLE_FORMAT = "ffedge-tensorrt-bundle"
BUNDLE_VERSION = 1
ONNX_NAME = "model.onnx"
FLOAT_ONNX_NAME = "model_float.onnx"  # DLA int8 (implicit, with the calibration cache)
CACHE_NAME = "calibration.cache"
REFERENCE_NAME = "reference.npz"
MANIFEST_NAME = "manifest.json"
BUILD_NAME = "BUILD.md"
N_REFERENCE = 4
FLOAT_GRAPH = "float.onnx"  # in the export's scratch folder, next to every candidate
INT8_FALLBACK = "trt-sensitivity"  # ranked by measured noise, doubling + bisection; float


def trt_sensitivity_fallback(build, names, reference, probe_batches, min_f1):
    """The pipeline's fallback strategy for TensorRT QDQ graphs: build the fully quantised
    candidate once, rank ``names`` by the output error their Q/DQ adds
    (:func:`ffedge.export.sensitivity.rank_nodes`, noise x gain), then keep the fewest
    top-ranked nodes in float (doubling + bisection). The ranking reads node and tensor
    names from the float graph next to the candidate: with Q/DQ on conv *inputs* only, the
    QDQ graph's convs read DequantizeLinear outputs, which the ranking does not follow."""
    from ffedge.export.sensitivity import (
        SensitivitySearch,
        feeds_from_batches,
        output_gains,
        rank_nodes,
    )
    from ffedge.export.wrapper import DeployWrapper
    from ffedge.progress import log

    full = build([])
    qdq = Path(full.info.path)
    feeds = feeds_from_batches(probe_batches, limit=4)
    gains = None
    if getattr(reference, "module", None) is not None:
        reference.activate()
        half = [f["images"][:, :, ::2, ::2] for f in feeds[:1]]
        gains = output_gains(DeployWrapper(reference.module).eval(), half)
    keep = set(names)
    ranked = [r.name for r in rank_nodes(qdq.with_name(FLOAT_GRAPH), qdq, feeds, gains)
              if r.name in keep]
    log(f"  sensitivity: {len(ranked)} of {len(names)} quantised nodes ranked")
    search = SensitivitySearch(ranked, min_f1, build=build, reference=reference,
                               batches=probe_batches, log=log)
    search.seed(0, full)  # the fully quantised build is measured, not rebuilt
    return search.run(), search.trials + 1


FALLBACK.setdefault(INT8_FALLBACK, trt_sensitivity_fallback)


@dataclass(frozen=True)
class TrtOptions:
    jetpack: str | None = None
    trt_version: str | None = None
    dcn: str | None = None  # None: by version (native >= 10.1, plugin 8.6, gridsample 8.5)
    dla: bool = False
    method: str = "minmax"
    exclude: tuple[str, ...] = ()
    equalize: bool = True  # int8: cross-layer equalisation of the float graph (int8_prep)
    bias_correction: bool = True  # int8: fold the weight-rounding shift into conv biases
    n_reference: int = N_REFERENCE

    def version(self) -> TrtVersion:
        from ffedge.export.trt_versions import resolve_version

        return resolve_version(self.jetpack, self.trt_version)

    def target_jetpack(self) -> str | None:
        if self.trt_version:
            return None
        from ffedge.export.trt_versions import DEFAULT_JETPACK, JETPACK_ALIASES

        jp = str(self.jetpack or DEFAULT_JETPACK)
        return JETPACK_ALIASES.get(jp, jp)


class TensorRTTarget(Target):
    def check(self, request: ExportRequest) -> None:
        opts = request.options or TrtOptions()
        version = opts.version()
        if opts.dla:
            from ffedge.export.trt_dla import check_dla

            check_dla(version, request.precision, opts.target_jetpack())
        if request.precision == "fp16" and version.strongly_typed_only:
            raise FFEdgeError(f"TensorRT {version.major} is strongly typed (no FP16 builder "
                              "flag) and these bundles carry float32 graphs: use --precision "
                              "int8 or fp32 for it, or target TensorRT 10 (--jetpack 7)")
        out = Path(request.output) if request.output else self.default_output(request, BUNDLE_SUFFIX)
        if out.suffix != BUNDLE_SUFFIX:
            raise FFEdgeError(f"output {out} must end in {BUNDLE_SUFFIX}: ffexport tensorrt "
                              "writes a bundle folder; the engine is built on the device "
                              "(python -m ffedge.export.trt_build BUNDLE)")
        if out.is_dir():
            raise FFEdgeError(f"bundle folder {out} exists; remove it or give another --output")

    def default_output(self, request: ExportRequest, suffix: str) -> Path:
        opts = request.options or TrtOptions()
        v = opts.version()
        return Path(f"{request.model}_{request.precision}_trt{v.major}.{v.minor}{BUNDLE_SUFFIX}")

    def prepare(self, ctx: ExportContext) -> None:
        from ffedge.export.trt_onnx import trace_for_trt

        opts: TrtOptions = ctx.options or TrtOptions()
        version = opts.version()
        g = trace_for_trt(ctx.net, ctx.spec.input_size, version, opts.dcn)
        path = ctx.tmp / FLOAT_GRAPH
        path.write_bytes(g.ort_proto.SerializeToString(deterministic=True))
        ctx.state.update(float=path, graph=g, version=version, counter=0)
        ctx.state.setdefault("fallback_strategy", INT8_FALLBACK)
        ctx.details.update(tensorrt=f">= {version.major}.{version.minor}", dcn=g.dcn_mode,
                           opset=g.opset, simplifier=g.simplifier)
        ctx.extra.update(tensorrt_target=str(version), dcn=g.dcn_mode, layout="NCHW")

    def convert(self, ctx: ExportContext) -> Path:
        return ctx.state["float"]

    def quantise(self, ctx: ExportContext, dataset: Any, keep_float: list[str]) -> Path:
        from ffedge.export.trt_int8 import quantize_for_trt

        opts: TrtOptions = ctx.options or TrtOptions()
        ctx.state["counter"] += 1
        path = ctx.tmp / f"q{ctx.state['counter']}.onnx"
        key = _dataset_key(dataset, opts)  # same images + settings: prep and ranges reused
        quantize_for_trt(ctx.state["float"], path, dataset, opts.method,
                         tuple(opts.exclude) + tuple(keep_float), equalize=opts.equalize,
                         bias_correction=opts.bias_correction, prep_dir=ctx.tmp / f"prep-{key}",
                         calibration_cache=ctx.tmp / f"ranges-{key}.json")
        ctx.state["dataset"] = dataset
        ctx.extra["quantization"] = {
            "backend": "onnxruntime QDQ (TensorRT explicit quantisation rules)",
            "activations": "int8 symmetric per-tensor", "weights": "int8 per-channel axis 0",
            "bias": "float", "method": opts.method, "equalize": opts.equalize,
            "bias_correction": opts.bias_correction, "fallback_precision": "float",
            "fallback_nodes": len(keep_float)}
        return path

    def fallback_names(self, ctx: ExportContext) -> list[str]:
        """The nodes the quantiser puts Q/DQ on (Conv/Gemm, residual Adds): float fallback
        removes their Q/DQ; TensorRT has no 16-bit activations to fall back to."""
        import onnx

        from ffedge.export.trt_int8 import trt_quant_nodes

        opts: TrtOptions = ctx.options or TrtOptions()
        return trt_quant_nodes(onnx.load(str(ctx.state["float"])), tuple(opts.exclude))

    def runner(self, ctx: ExportContext, path: Path):
        """Candidates are judged in onnxruntime (TensorRT runs on the device)."""
        from ffedge.runtimes.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, model_name=ctx.model, threads=ctx.request.threads)

    def histogram(self, ctx: ExportContext, candidate: Path) -> dict[str, int]:
        from ffedge.export.onnx_export import node_histogram

        return node_histogram(ctx.state.get("final_proto") or ctx.state["graph"].proto)

    def write(self, ctx: ExportContext, candidate: Path, meta: ArtifactMetadata,
              paths: list[Path]) -> None:
        write_bundle(ctx, candidate, meta, paths[0])


def _dataset_key(dataset: Any, opts: TrtOptions) -> str:
    import hashlib

    files = "\n".join(str(f) for f in getattr(dataset, "files", []))
    text = f"{files}|{opts.method}|{opts.equalize}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def write_bundle(ctx: ExportContext, candidate: Path, meta: ArtifactMetadata, folder: Path) -> None:
    """Fill ``folder`` (a temporary path the pipeline renames into place) with the bundle."""
    import onnx

    from ffedge.artifact.formats import stamp_onnx
    from ffedge.export.trt_lint import lint_model, raise_on_errors
    from ffedge.export.trt_onnx import TrtOnnx, finish_for_trt

    opts: TrtOptions = ctx.options or TrtOptions()
    version: TrtVersion = ctx.state["version"]
    g = ctx.state["graph"]
    ort_proto = onnx.load(str(candidate))
    final = finish_for_trt(TrtOnnx(ort_proto, ort_proto, g.dcn_mode, g.opset, g.simplifier))
    raise_on_errors(lint_model(final.proto, version), f"the {meta.precision} TensorRT graph")
    stamp_onnx(final.proto, meta)
    ctx.state["final_proto"] = final.proto
    folder.mkdir(parents=True)
    (folder / ONNX_NAME).write_bytes(final.proto.SerializeToString(deterministic=True))
    files = {"onnx": ONNX_NAME, "reference": REFERENCE_NAME, "build": BUILD_NAME}
    if opts.dla and meta.precision == "int8" and not version.strongly_typed_only:
        _write_dla_cache(ctx, version, folder)
        files.update(calibration_cache=CACHE_NAME, float_onnx=FLOAT_ONNX_NAME)
    refs = _write_reference(ctx, candidate, folder / REFERENCE_NAME, opts.n_reference)
    manifest = bundle_manifest(ctx, final, meta, version, files, refs)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    from ffedge.export.trt_build import build_instructions

    (folder / BUILD_NAME).write_text(build_instructions(manifest, folder.name))


def _write_dla_cache(ctx: ExportContext, version: TrtVersion, folder: Path) -> None:
    from ffedge.export.trt_dla import calibration_cache_text
    from ffedge.export.trt_int8 import activation_amax

    amax = activation_amax(ctx.state["float"], ctx.state["dataset"], "entropy")
    (folder / CACHE_NAME).write_text(calibration_cache_text(amax, version))
    (folder / FLOAT_ONNX_NAME).write_bytes(ctx.state["float"].read_bytes())


def _reference_batches(ctx: ExportContext, n: int) -> list:
    from ffedge.export.verify import photo_batches, verification_batches

    photos = list(ctx.request.verify_images)
    batches = photo_batches(ctx.spec, photos)[: max(n - 1, 0)] if photos else []
    if not batches and ctx.request.calibration is not None:
        from ffedge.export.calibration_plan import plan_calibration

        batches = photo_batches(ctx.spec, plan_calibration(ctx.request.calibration).eval_files)
        batches = batches[: max(n - 1, 0)]
    return verification_batches(ctx.spec, (), n - len(batches)) + batches


def _write_reference(ctx: ExportContext, candidate: Path, path: Path, n: int) -> int:
    """Inputs (float16: preprocessed pixels are integers, exact) + torch FP32 outputs +
    this graph's onnxruntime outputs, for parity on the device."""
    from ffedge.runtimes.onnxruntime_runner import OnnxRuntimeRunner

    batches = _reference_batches(ctx, n)
    ort = OnnxRuntimeRunner(candidate, model_name=ctx.model, threads=ctx.request.threads)
    data: dict[str, np.ndarray] = {"images": np.concatenate([b[0] for b in batches])}
    ref = [ctx.reference.infer(b[0]) for b in batches]
    got = [ort.infer(b[0]) for b in batches]
    for i, name in enumerate(OUTPUT_NAMES):
        data[name] = np.concatenate([r[i] for r in ref]).astype(np.float32)
        data[f"onnx_{name}"] = np.concatenate([r[i] for r in got]).astype(np.float32)
    exact = np.array_equal(data["images"].astype(np.float16).astype(np.float32), data["images"])
    data["images"] = data["images"].astype(np.float16 if exact else np.float32)
    with open(path, "wb") as f:
        np.savez_compressed(f, **data)
    return len(batches)


def _io(proto) -> tuple[list[dict], list[dict]]:
    def dims(v):
        return [d.dim_value for d in v.type.tensor_type.shape.dim]

    ins = [{"name": v.name, "shape": dims(v), "dtype": "float32"} for v in proto.graph.input]
    outs = [{"name": v.name, "shape": dims(v), "dtype": "float32"} for v in proto.graph.output]
    return ins, outs


def bundle_manifest(ctx: ExportContext, final, meta: ArtifactMetadata, version: TrtVersion,
                    files: dict, n_reference: int) -> dict:
    from ffedge.export.trt_dla import dla_report

    opts: TrtOptions = ctx.options or TrtOptions()
    ins, outs = _io(final.proto)
    ops = {n.op_type for n in final.proto.graph.node}
    minimum = min_version_for_ops(ops)
    for since, top in MAX_OPSET:  # the first version whose parser takes this opset
        if top >= final.opset:
            minimum = max(minimum, f"{since[0]}.{since[1]}", key=_vkey)
            break
    manifest = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION,
        "model": meta.model, "precision": meta.precision, "trained_weights": ctx.trained,
        "dcn_mode": final.dcn_mode,
        "opset": final.opset, "target_tensorrt": str(version),
        "target_jetpack": opts.target_jetpack() or jetpack_for(version),
        "minimum_tensorrt": minimum, "input": INPUT_NAME, "output_names": list(OUTPUT_NAMES),
        "inputs": ins, "outputs": outs, "files": files, "reference_images": n_reference,
        "dla": {"requested": opts.dla,
                "report": dla_report(final.proto, meta.precision)},
        "lint": "passed", "metadata": meta.to_sidecar(),
    }
    if meta.precision == "int8" and "fidelity" in meta.extra:
        manifest["fidelity_onnxruntime"] = meta.extra["fidelity"]
    return manifest


def _vkey(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def read_manifest(bundle: str | Path) -> dict:
    p = Path(bundle) / MANIFEST_NAME
    if not p.is_file():
        raise FFEdgeError(f"{bundle} is not a TensorRT bundle (no {MANIFEST_NAME}); make one "
                          "with ffexport tensorrt")
    m = json.loads(p.read_text())
    if m.get("format") != BUNDLE_FORMAT:
        raise FFEdgeError(f"{p} is not an ffedge TensorRT bundle manifest")
    return m


# --- Python API ---------------------------------------------------------------------------

def export_tensorrt(model: str, checkpoint: str | Path | None = None,
                    output: str | Path | None = None, precision: str = "fp16",
                    input_size: tuple[int, int] | None = None, options: TrtOptions | None = None,
                    calibration=None, verify_images=(), min_f1: float | None = None,
                    fallback: bool = True, threads: int | None = None,
                    verify: bool = True) -> ExportReport:
    """Write a Jetson bundle for ``model`` (see the module doc); nothing is written unless
    the float graph verifies against torch (fp16/fp32) or the INT8 gate passes."""
    return export("tensorrt", ExportRequest(
        model, checkpoint, output, input_size, precision, options or TrtOptions(), verify,
        verify_images, calibration, min_f1, fallback, threads))
