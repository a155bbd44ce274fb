"""The target registry: one record per deployment target, and everything derived from it.

A record names, by import path, the target's exporter (export layer), runner (runtimes
layer) and CLI options (cli layer); this module imports none of them, so it sits below
all three. ``ffexport`` subcommands, ``load_runner``'s suffix lookup, ``ffbench --runtime``
choices and their help text are all read from here: adding a target is adding one record.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffedge.errors import FFEdgeError


@dataclass(frozen=True)
class Preset:
    """An extra ``ffexport`` subcommand that is this target at a fixed precision
    (``ffexport int8`` = the ONNX target at int8)."""

    command: str
    precision: str
    summary: str


@dataclass(frozen=True)
class TargetRecord:
    """One deployment target.

    ``name``: the ``ffexport`` subcommand; ``runtime``: the ``ffbench --runtime`` name of
    what runs its artifacts; ``aliases`` are accepted for both. ``exporter`` and
    ``runner`` are ``"module:attribute"`` paths, imported only when used; ``cli`` is a
    module with ``add_arguments(parser)`` and ``options(args)`` for target-only flags.
    """

    name: str
    runtime: str
    suffixes: tuple[str, ...]
    summary: str
    runner: str
    exporter: str | None = None
    cli: str | None = None
    aliases: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ("fp32",)
    calibration: str | None = None  # CalibrationDataset adapter: ort, nncf, tflite, tensorrt
    presets: tuple[Preset, ...] = ()
    extra_suffixes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, self.runtime, *self.aliases)

    def load_exporter(self) -> Any:
        if self.exporter is None:
            raise FFEdgeError(f"target {self.name!r} has no exporter")
        return _resolve(self.exporter)

    def load_runner_class(self) -> Any:
        return _resolve(self.runner)


def _resolve(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


_TARGETS: dict[str, TargetRecord] = {}


def register_target(record: TargetRecord) -> TargetRecord:
    """Add (or replace) a target; every CLI and loader sees it from then on."""
    for other in list(_TARGETS.values()):
        clash = set(other.names) & set(record.names)
        if other.name != record.name and clash:
            raise FFEdgeError(f"target {record.name!r} reuses the name(s) {sorted(clash)} "
                              f"of target {other.name!r}")
    _TARGETS[record.name] = record
    return record


def unregister_target(name: str) -> None:
    _TARGETS.pop(name, None)


def all_targets() -> list[TargetRecord]:
    return list(_TARGETS.values())


def runtime_names() -> list[str]:
    """Every runtime ``ffbench --runtime`` accepts (torch first, then each target's)."""
    names = ["torch"]
    for t in _TARGETS.values():
        if t.runtime not in names:
            names.append(t.runtime)
    return names


def find_target(name: str) -> TargetRecord:
    """The record a subcommand, runtime name or alias refers to."""
    for t in _TARGETS.values():
        if name in t.names:
            return t
    known = ", ".join(runtime_names() + [a for t in _TARGETS.values() for a in t.aliases])
    raise FFEdgeError(f"unknown runtime or target {name!r}; choose one of: {known}")


def target_for_artifact(path: str | Path) -> TargetRecord:
    """The target whose artifacts end like ``path`` (last matching record wins ties)."""
    name = Path(path).name.lower()
    hits = [t for t in _TARGETS.values() if any(name.endswith(s) for s in t.suffixes)]
    if not hits:
        known = ", ".join(s for t in _TARGETS.values() for s in t.suffixes)
        raise FFEdgeError(f"no runtime for {Path(path).name!r} (known artifact types: {known})")
    return max(hits, key=lambda t: max(len(s) for s in t.suffixes if name.endswith(s)))


def help_line() -> str:
    """``torch, onnxruntime (ort), openvino, ...`` for ``--runtime`` help."""
    parts = ["torch"]
    for t in _TARGETS.values():
        extra = [a for a in (t.name, *t.aliases) if a != t.runtime]
        parts.append(t.runtime + (f" ({', '.join(extra)})" if extra else ""))
    return ", ".join(parts)


# --- the built-in targets -----------------------------------------------------------------

register_target(TargetRecord(
    name="onnx", runtime="onnxruntime", aliases=("ort",), suffixes=(".onnx",),
    summary="FP32 ONNX: traced, simplified, verified against PyTorch",
    exporter="ffedge.export.onnx_target:OnnxTarget",
    runner="ffedge.runtimes.onnxruntime_runner:OnnxRuntimeRunner",
    cli="ffedge.cli.export_onnx", precisions=("fp32", "int8"), calibration="ort",
    presets=(Preset("int8", "int8",
                    "INT8 QDQ ONNX (onnxruntime), calibrated, fidelity-gated"),),
))
register_target(TargetRecord(
    name="openvino", runtime="openvino", aliases=("ov",), suffixes=(".xml",),
    summary="OpenVINO IR for x86 CPUs: FP32/FP16 verified, INT8 gated",
    exporter="ffedge.export.openvino_target:OpenVinoTarget",
    runner="ffedge.runtimes.openvino_runner:OpenVinoRunner",
    cli="ffedge.cli.export_openvino", precisions=("fp32", "fp16", "int8"), calibration="nncf",
))
register_target(TargetRecord(
    name="tflite", runtime="tflite", aliases=("litert",), suffixes=(".tflite",),
    summary="TFLite for phones (litert-torch): FP32/FP16/INT8, NHWC, gated",
    exporter="ffedge.export.tflite_target:TFLiteTarget",
    runner="ffedge.runtimes.tflite_runner:TFLiteRunner",
    cli="ffedge.cli.export_tflite", precisions=("fp32", "fp16", "int8"), calibration="tflite",
))
register_target(TargetRecord(
    name="tensorrt", runtime="tensorrt", aliases=("trt",),
    suffixes=(".trtbundle", ".engine", ".plan"),
    summary="TensorRT for Jetson: a bundle (ONNX for the target TensorRT, INT8 QDQ gated, "
            "reference outputs, build commands); engines built and run on the device",
    exporter="ffedge.export.tensorrt_target:TensorRTTarget",
    runner="ffedge.runtimes.tensorrt_runner:TensorRTRunner",
    cli="ffedge.cli.export_tensorrt", precisions=("fp16", "int8", "fp32"), calibration="ort",
))
