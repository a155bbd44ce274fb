"""The one export pipeline every target runs.

resolve model + checkpoint -> convert (target) -> verify (float) or calibrate + gate +
fallback search (int8) -> stamp metadata -> atomic write -> :class:`ExportReport`.

A :class:`Target` supplies only what differs: how to convert, how to quantise, how to run
the result and which files it writes. Tolerances come from :mod:`ffedge.export.tolerances`
(one table), calibration from :mod:`ffedge.export.calibration_plan`.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffedge.artifact.atomic import atomic_files, check_writable
from ffedge.artifact.metadata import ArtifactMetadata, sidecar_json, sidecar_path
from ffedge.artifact.targets import TargetRecord, find_target
from ffedge.errors import FFEdgeError
from ffedge.export.calibration_plan import Calibration, CalibrationPlan, plan_calibration
from ffedge.export.report import ExportReport
from ffedge.export.tolerances import detection_floor, tolerance_for
from ffedge.progress import log
from ffedge.runtimes.base import Runner
from ffedge.runtimes.compare import ParityReport

PROBE_IMAGES = 8  # held-out images each fallback trial is judged on
PROBE_CALIB = 32  # calibration images each fallback trial calibrates on


@dataclass
class ExportRequest:
    """Everything a user can ask of an export, for every target."""

    model: str
    checkpoint: str | Path | None = None
    output: str | Path | None = None
    input_size: tuple[int, int] | None = None
    precision: str = "fp32"
    options: Any = None  # the target's own options dataclass
    verify: bool = True
    verify_images: Sequence[str | Path] = ()
    calibration: Calibration | None = None
    min_f1: float | None = None  # None: the policy in ffedge.export.tolerances
    fallback: bool = True  # search the fewest float layers when the INT8 gate fails
    threads: int | None = None
    module: Any = None  # a user's nn.Module (with .spec) instead of a zoo model
    random_init: bool = False  # True: the seeded random init even when bundled weights exist
    optimize: int | None = None  # graph passes level (ffedge.export.passes); None: the target's


@dataclass
class ExportContext:
    """What the pipeline knows while a target works: the model, its spec, a scratch
    folder, the torch reference, and the metadata/report facts the target adds."""

    request: ExportRequest
    record: TargetRecord
    net: Any
    spec: Any
    tmp: Path
    trained: bool
    checkpoint_sha: str
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # -> artifact metadata
    details: dict[str, Any] = field(default_factory=dict)  # -> report only
    state: dict[str, Any] = field(default_factory=dict)  # the target's scratch
    _reference: Runner | None = None

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def options(self) -> Any:
        return self.request.options

    @property
    def reference(self) -> Runner:
        if self._reference is None:
            from ffedge.runtimes.torch_runner import TorchRunner

            self._reference = TorchRunner(self.model, module=self.net,
                                          threads=self.request.threads)
        return self._reference


class Target(ABC):
    """What one deployment target supplies to the pipeline (subclass and override)."""

    sidecar = False  # also write <artifact>.json
    #: graph passes level when the request gives none (``ffedge.export.passes``: 1 = the
    #: exact passes; a target whose runtime measured faster with level 2's forms says 2)
    default_optimize = 1

    def check(self, request: ExportRequest) -> None:
        """Refuse an option combination before any work (raise FFEdgeError). Default: none."""
        return None

    def default_output(self, request: ExportRequest, suffix: str) -> Path:
        tag = "" if request.precision == "fp32" else f"_{request.precision}"
        return Path(f"{request.model}{tag}{suffix}")

    def companion_files(self, output: Path) -> list[Path]:
        """Files written together with ``output`` (OpenVINO's .bin)."""
        return []

    def prepare(self, ctx: ExportContext) -> None:
        """Trace / convert what every precision starts from (e.g. the FP32 ONNX). Default:
        nothing shared."""
        return None

    @abstractmethod
    def convert(self, ctx: ExportContext) -> Path:
        """A float candidate at ``ctx.request.precision`` in ``ctx.tmp``."""

    def quantise(self, ctx: ExportContext, dataset: Any, keep_float: list[str]) -> Path:
        """An INT8 candidate calibrated on ``dataset`` with ``keep_float`` nodes in float."""
        raise FFEdgeError(f"{ctx.record.name} has no int8 export")

    def fallback_names(self, ctx: ExportContext) -> list[str]:
        """Node names the fallback search may keep in float (empty: no search)."""
        return []

    def runner(self, ctx: ExportContext, path: Path) -> Runner:
        cls = ctx.record.load_runner_class()
        return cls(path, model_name=ctx.model, threads=ctx.request.threads)

    @abstractmethod
    def write(self, ctx: ExportContext, candidate: Path, meta: ArtifactMetadata,
              paths: list[Path]) -> None:
        """Write the final artifact (with ``meta`` embedded) to the temporary ``paths``
        (output first, then companions)."""

    def histogram(self, ctx: ExportContext, candidate: Path) -> dict[str, int]:
        return {}

    def int8_coverage(self, ctx: ExportContext, candidate: Path) -> tuple[int, int] | None:
        """``(convs that run in int8, all convs)`` of a quantised candidate (None: unknown)."""
        return None

    def sidecar_text(self, meta: ArtifactMetadata) -> str:
        return sidecar_json(meta)


#: The fallback search, replaceable (e.g. by a sensitivity-ranked one):
#: fn(build, names, reference, probe_batches, min_f1) -> (scopes or None, trials)
FallbackStrategy = Callable[..., "tuple[list[str] | None, int]"]


def hierarchical_fallback(build, names, reference, probe_batches, min_f1):
    from ffedge.export.fidelity import FallbackSearch

    search = FallbackSearch(build, names, reference, probe_batches, min_f1, log=log)
    return search.run(), search.trials


FALLBACK: dict[str, FallbackStrategy] = {"search": hierarchical_fallback}


# --- the pipeline -------------------------------------------------------------------------

def export(target: str | TargetRecord, request: ExportRequest) -> ExportReport:
    """Run ``request`` through ``target``'s exporter; nothing is written unless it passes."""
    record = find_target(target) if isinstance(target, str) else target
    impl: Target = record.load_exporter()()
    t0 = time.perf_counter()
    _check_request(record, impl, request)
    out = _output_path(record, impl, request)
    from ffedge.export.passes import optimize_level

    level = impl.default_optimize if request.optimize is None else request.optimize
    with optimize_level(level), _user_model_errors(record, request), \
            tempfile.TemporaryDirectory(prefix=f"ffedge-{record.name}-") as tmp:
        ctx = _context(record, request, Path(tmp))
        ctx.extra["optimize"] = level  # in the artifact's metadata
        if request.calibration is not None and request.precision == "int8":
            ctx.state["plan"] = plan_calibration(request.calibration)  # before any tracing
        impl.prepare(ctx)
        if request.precision == "int8":
            candidate, parity, min_f1, gated = _quantised(impl, ctx, out)
        else:
            candidate = impl.convert(ctx)
            parity, min_f1, gated = _verify_float(impl, ctx, candidate, out)
        if parity is not None and request.precision != "fp32":
            # fp32 stays byte-identical whether verified or not; reduced precisions carry it
            ctx.extra["fidelity"] = parity.detections.to_dict()
        meta = ArtifactMetadata(model=ctx.model, spec=ctx.spec, precision=request.precision,
                                checkpoint_sha256=ctx.checkpoint_sha, extra=ctx.extra)
        _write(impl, ctx, candidate, meta, out)
        report = ExportReport(
            out, ctx.model, record.name, request.precision, _parameters(ctx.net),
            size_bytes=sum(_size(p) for p in [out, *impl.companion_files(out)]),
            node_histogram=impl.histogram(ctx, candidate), parity=parity, min_f1=min_f1,
            gated=gated, details=ctx.details, notes=ctx.notes,
            excluded=ctx.state.get("excluded", []), trials=ctx.state.get("trials", 0))
    report.seconds = time.perf_counter() - t0
    return report


@contextlib.contextmanager
def _user_model_errors(record: TargetRecord, request: ExportRequest) -> Iterator[None]:
    """A user's module (``request.module``) can fail tracing or a converter in ways no zoo
    model does: say so in one line instead of a converter's traceback."""
    if request.module is None:
        yield
        return
    try:
        yield
    except FFEdgeError:
        raise
    except Exception as exc:  # torch's exporter and the converters raise many types
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise FFEdgeError(f"{record.name} export of {request.model} failed: "
                          f"{type(exc).__name__}: {first} (its ops must trace to "
                          f"{record.name}; docs/models.md, 'Bring your own model')") from None


def _check_request(record: TargetRecord, impl: Target, request: ExportRequest) -> None:
    if request.precision not in record.precisions:
        raise FFEdgeError(f"{record.name} exports {', '.join(record.precisions)}, not "
                          f"{request.precision!r}")
    if request.precision == "int8" and request.calibration is None:
        raise FFEdgeError(f"int8 needs --calib IMAGES (calibration photos) for {record.name}")
    impl.check(request)


def _output_path(record: TargetRecord, impl: Target, request: ExportRequest) -> Path:
    out = (Path(request.output) if request.output
           else impl.default_output(request, record.suffixes[0]))
    if not any(out.name.lower().endswith(s) for s in record.suffixes):
        raise FFEdgeError(f"output {out} must end in {' or '.join(record.suffixes)} for "
                          f"{record.name} (the file is a {record.name} artifact)")
    check_writable(out)
    return out


def _context(record: TargetRecord, request: ExportRequest, tmp: Path) -> ExportContext:
    from ffedge.digest import file_sha256

    net, ckpt = request.module, request.checkpoint
    if net is None:
        from ffedge.models import create_model
        from ffedge.weights import bundled_checkpoint

        if ckpt is None and not request.random_init:
            ckpt = bundled_checkpoint(request.model)  # like the CLI and create_model
        net = create_model(request.model, checkpoint=ckpt, input_size=request.input_size,
                           pretrained=False)
    else:  # a user's model: wrapped, sized, outputs checked; candidates read its spec by name
        from ffedge.models.user import prepare_user_model
        from ffedge.specs import register_spec

        net = prepare_user_model(net, request.model, request.input_size)
        register_spec(request.model, net.spec)
    trained = ckpt is not None or bool(getattr(net, "trained", False))
    sha = file_sha256(ckpt) if isinstance(ckpt, (str, Path)) else ""
    ctx = ExportContext(request, record, net, net.spec, tmp, trained, sha)
    if getattr(net, "spec_note", ""):
        ctx.notes.append(net.spec_note)
    if not trained:
        ctx.notes.append("random weights (no trained checkpoint): detections reported, not "
                         "gated; raw outputs checked")
    if getattr(net, "denormals_flushed", 0):
        ctx.notes.append(f"zeroed {net.denormals_flushed:,} denormal weights at load (no output "
                         "changes; avoids slow denormal arithmetic on x86)")
    return ctx


def _size(path: Path) -> int:
    """Bytes of a file, or of everything in a folder artifact (a TensorRT bundle)."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _parameters(net: Any) -> int:
    return sum(p.numel() for p in net.parameters())


def _verify_float(impl: Target, ctx: ExportContext, candidate: Path, out: Path
                  ) -> tuple[ParityReport | None, float, bool]:
    req = ctx.request
    if not req.verify:
        return None, 0.0, False
    from ffedge.export.verify import verification_images, verify_runner

    tol = tolerance_for(req.precision)
    images, how = verification_images(ctx.spec, ctx.trained, req.verify_images,
                                      req.calibration)
    ctx.details["verified on"] = how
    parity = verify_runner(ctx.reference, impl.runner(ctx, candidate), images)
    min_f1 = detection_floor(req.precision, ctx.trained, req.min_f1)
    reasons = parity.failures(tol.relative, min_f1)
    if reasons:
        raise FFEdgeError(f"verification failed, nothing written to {out}: " + "; ".join(reasons)
                          + f" ({parity.images} images)")
    return parity, min_f1, ctx.trained or req.min_f1 is not None


def _quantised(impl: Target, ctx: ExportContext, out: Path
               ) -> tuple[Path, ParityReport, float, bool]:
    from ffedge.calibration import CalibrationDataset
    from ffedge.export.verify import photo_batches, verify_runner

    req = ctx.request
    assert req.calibration is not None
    plan = ctx.state["plan"]
    ctx.notes.extend(plan.notes)
    ctx.extra["calibration"] = plan.describe()
    dataset = CalibrationDataset(plan.calib_files, ctx.spec, cache_dir=req.calibration.cache_dir)
    batches = photo_batches(ctx.spec, plan.eval_files)
    min_f1 = detection_floor("int8", ctx.trained, req.min_f1)
    log(f"quantising {ctx.model} for {ctx.record.name}: {len(dataset)} calibration images, "
        f"{len(plan.eval_files)} held-out images")
    candidate = impl.quantise(ctx, dataset, [])
    parity = verify_runner(ctx.reference, impl.runner(ctx, candidate), batches)
    searchable = req.fallback and min_f1 <= 1.0  # an F1 above 1 no search can reach
    if parity.detections.f1 < min_f1 and searchable and impl.fallback_names(ctx):
        candidate, parity = _fallback(impl, ctx, plan, batches, min_f1, candidate, parity)
    if parity.detections.f1 < min_f1:
        hint = "" if req.fallback else " (drop --no-fallback to search float fallbacks)"
        raise FFEdgeError(f"fidelity gate failed, nothing written to {out}: F1 "
                          f"{parity.detections.f1:.4f} < {min_f1} on {parity.images} held-out "
                          f"images{hint}")
    _note_coverage(impl, ctx, candidate)
    return candidate, parity, min_f1, ctx.trained or req.min_f1 is not None


def _note_coverage(impl: Target, ctx: ExportContext, candidate: Path) -> None:
    """Say how much of the model is really int8: a gate passed by keeping most convs float
    is an artifact with little of INT8's speed or size (eca_cbam on OpenVINO: none)."""
    coverage = impl.int8_coverage(ctx, candidate)
    if coverage is None:
        return
    int8, total = coverage
    ctx.extra["int8_convs"] = {"int8": int8, "total": total}
    ctx.notes.append(f"{int8} of {total} convs run in int8")
    if total and int8 < total / 2:
        ctx.notes.append("most convs stayed float to pass the gate: expect little of INT8's "
                         "speed or size gain over FP32 (docs/int8.md)")


def _fallback(impl: Target, ctx: ExportContext, plan: CalibrationPlan, batches, min_f1: float,
              candidate: Path, parity: ParityReport) -> tuple[Path, ParityReport]:
    from ffedge.calibration import CalibrationDataset
    from ffedge.export.fidelity import expand
    from ffedge.export.verify import verify_runner

    log(f"  gate failed (F1 {parity.detections.f1:.4f} < {min_f1}); searching the fewest "
        "layers to keep in float")
    names = impl.fallback_names(ctx)
    probe = CalibrationDataset(plan.calib_files[:PROBE_CALIB], ctx.spec,
                               cache_dir=ctx.request.calibration.cache_dir, progress=False)

    trial = [0]

    def build(excluded: list[str]) -> Runner:
        trial[0] += 1  # each trial quantises and runs the probe set: seconds each, so counted
        log(f"  fallback trial {trial[0]}: {len(excluded)} of {len(names)} nodes kept in float")
        return impl.runner(ctx, impl.quantise(ctx, probe, excluded))

    strategy = FALLBACK[ctx.state.get("fallback_strategy", "search")]
    scopes, trials = strategy(build, names, ctx.reference, batches[:PROBE_IMAGES], min_f1)
    ctx.state["trials"] = trials
    if not scopes:
        return candidate, parity
    dataset = CalibrationDataset(plan.calib_files, ctx.spec,
                                 cache_dir=ctx.request.calibration.cache_dir, progress=False)
    candidate = impl.quantise(ctx, dataset, expand(scopes, names))
    ctx.state["excluded"] = scopes
    ctx.extra.setdefault("quantization", {})["fallback_nodes"] = len(expand(scopes, names))
    return candidate, verify_runner(ctx.reference, impl.runner(ctx, candidate), batches)


def _write(impl: Target, ctx: ExportContext, candidate: Path, meta: ArtifactMetadata,
           out: Path) -> None:
    files = [out, *impl.companion_files(out)]
    if impl.sidecar:
        files.append(sidecar_path(out))
    with atomic_files(files) as tmp_paths:
        impl.write(ctx, candidate, meta, tmp_paths)
        if impl.sidecar:
            tmp_paths[-1].write_text(impl.sidecar_text(meta))


def build_for_runtime(runtime: str, model: str, checkpoint: str | Path | None,
                      input_size: tuple[int, int] | None, out_dir: Path) -> Path:
    """Export ``model`` into ``out_dir`` in the format ``runtime`` runs (unverified, its
    first precision); returns its path. ``ffbench --runtime R --model M`` uses this."""
    record = find_target(runtime)
    if record.exporter is None:
        raise FFEdgeError(f"runtime {record.runtime!r} has no exporter here; export an "
                          "artifact and pass --artifact")
    out = out_dir / f"{model}{record.suffixes[0]}"
    request = ExportRequest(model, checkpoint, out, input_size, record.precisions[0],
                            verify=False)
    return export(record, request).path
