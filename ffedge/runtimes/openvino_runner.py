"""OpenVINO runner: an IR (``.xml`` + ``.bin``) compiled for the CPU with the latency hint.

The deployment spec is read from the IR's ``rt_info`` (``<ffedge>`` section) first, the
``<artifact>.json`` sidecar second, and ``--model NAME`` last, so an IR that went through a
tool that drops ``rt_info`` still runs.

Inference precision defaults to ``f32``: on CPUs with AVX-512 BF16 or AMX the CPU plugin
otherwise runs float layers in bfloat16, which makes an "FP32" artifact disagree with
torch by ~1e-2 and would hide what the artifact itself does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ffedge.artifact.formats import read_rt_info
from ffedge.artifact.metadata import OUTPUT_NAMES, ArtifactMetadata, read_sidecar
from ffedge.errors import FFEdgeError, require
from ffedge.runtimes.base import ArtifactInfo, Outputs, Runner, info_for

# A CPU-plugin check seen both on NNCF INT8 (PERFORMANCE preset) and, once, on an FP32
# graph that compiled fine on a rerun: retried once, then reported.
FLAKY_COMPILE_MARK = "any_of(scale.size(), OC, 1U)"


def openvino():
    """``import openvino`` with NNCF telemetry off (see :func:`quiet_telemetry`)."""
    quiet_telemetry()
    return require("openvino", "openvino")


def quiet_telemetry() -> None:
    """Keep NNCF from sending usage telemetry unless the user opts in with
    ``FFEDGE_OPENVINO_TELEMETRY=1``. NNCF sends by default when no consent file exists;
    ``NNCF_CI`` is the switch it reads at import. Model conversion here goes through
    ``Core.read_model`` (no telemetry); ``opt_in_out --opt_out`` turns it off for every
    OpenVINO tool of the user."""
    if os.environ.get("FFEDGE_OPENVINO_TELEMETRY", "") != "1":
        os.environ.setdefault("NNCF_CI", "1")




def compile_model(core: Any, model: Any, config: dict[str, Any], what: str = "the model") -> Any:
    """``core.compile_model`` on the CPU, retrying once the known flaky plugin check."""
    for attempt in (1, 2):
        try:
            return core.compile_model(model, "CPU", config)
        except RuntimeError as exc:
            msg = str(exc)
            if FLAKY_COMPILE_MARK in msg and attempt == 1:
                continue
            first = next((ln for ln in msg.splitlines() if ln.strip()), msg)[:200]
            hint = (" (a known CPU-plugin check; retried once. For INT8 use --preset mixed "
                    "or keep the failing layer in float)") if FLAKY_COMPILE_MARK in msg else ""
            raise FFEdgeError(f"OpenVINO cannot compile {what} for CPU: {first}{hint}") from None
    raise AssertionError("unreachable")


def _info_from_ir(path: Path, model: Any, model_name: str | None,
                  input_size: tuple[int, int] | None) -> ArtifactInfo:
    meta = read_rt_info(model)
    source = "rt_info"
    if meta is None:
        meta, source = read_sidecar(path), "sidecar"
    if meta is None:
        if model_name is None:
            raise FFEdgeError(f"{path.name} carries no FeatherFace metadata (no rt_info, no "
                              f"{path.name}.json); pass --model NAME to supply its deployment spec")
        from ffedge.specs import spec_for

        meta, source = ArtifactMetadata(model=model_name, spec=spec_for(model_name),
                                        precision="unknown"), "--model"
    shape = model.inputs[0].get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape]
    return info_for(meta, path, dims, input_size, metadata_source=source)


class OpenVinoRunner(Runner):
    """Runs an OpenVINO IR on the CPU: latency hint, ``threads`` inference threads."""

    runtime = "openvino"

    def __init__(self, path: str | Path, model_name: str | None = None,
                 input_size: tuple[int, int] | None = None, threads: int | None = None,
                 inference_precision: str | None = "f32",
                 config: dict[str, Any] | None = None) -> None:
        p = Path(path)
        ov = openvino()
        if p.suffix.lower() != ".xml":
            raise FFEdgeError(f"{p.name}: OpenVINO runs IR .xml files (with the .bin beside it)")
        if not p.with_suffix(".bin").is_file():
            raise FFEdgeError(f"{p.with_suffix('.bin').name} (the weights of {p.name}) not found")
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(p))
        except RuntimeError as exc:
            # OpenVINO's first lines are "Exception from <source file>": show the reason
            lines = [ln for ln in str(exc).splitlines()
                     if ln.strip() and not ln.startswith("Exception from")]
            why = (lines[0] if lines else str(exc)).split(" Please check")[0]
            raise FFEdgeError(f"{p.name} is not a readable OpenVINO IR ({why[:160]}); export "
                              "one with `ffexport openvino`") from None
        super().__init__(_info_from_ir(p, self.model, model_name, input_size), threads)
        self.config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        if inference_precision:
            self.config["INFERENCE_PRECISION_HINT"] = inference_precision
        self.config.update(config or {})
        self.compiled = None

    def _activate(self) -> None:
        self.compiled = compile_model(self.core, self.model, self.config, self.info.path.name)
        names = [o.get_any_name() for o in self.compiled.outputs]
        wanted = list(OUTPUT_NAMES) if set(OUTPUT_NAMES) <= set(names) else names[:3]
        self._outputs = [self.compiled.output(n) for n in wanted]
        self._request = self.compiled.create_infer_request()

    def _infer(self, batch: np.ndarray) -> Outputs:
        if self.info.layout == "NHWC":
            batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        res = self._request.infer({0: batch})
        boxes, scores, landmarks = (np.array(res[o], copy=True) for o in self._outputs)
        return boxes, scores, landmarks
