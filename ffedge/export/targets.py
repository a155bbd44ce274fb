"""Which exporter produces the artifact a runtime runs, so ``ffbench --runtime R --model M``
can build one on the fly. A new target (OpenVINO, TFLite, TensorRT) registers here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ffedge.errors import FFEdgeError

Builder = Callable[[str, "Path | None", "tuple[int, int] | None", Path], Path]


def _onnx(model: str, checkpoint: Path | None, input_size: tuple[int, int] | None, out_dir: Path) -> Path:
    from ffedge.export.onnx_target import export_onnx

    return export_onnx(model, checkpoint, out_dir / f"{model}.onnx", input_size, verify=False).path


def _openvino(model: str, checkpoint: Path | None, input_size: tuple[int, int] | None,
              out_dir: Path) -> Path:
    from ffedge.export.openvino_target import export_openvino

    return export_openvino(model, checkpoint, out_dir / f"{model}.xml", input_size, verify=False)[0].path


def _tflite(model: str, checkpoint: Path | None, input_size: tuple[int, int] | None,
            out_dir: Path) -> Path:
    from ffedge.export.tflite_target import export_tflite

    return export_tflite(model, checkpoint, out_dir / f"{model}.tflite", input_size, verify=False).path


BUILDERS: dict[str, Builder] = {"onnxruntime": _onnx, "openvino": _openvino, "tflite": _tflite}


def register_builder(runtime: str, builder: Builder) -> None:
    BUILDERS[runtime] = builder


def build_for_runtime(runtime: str, model: str, checkpoint: Path | None,
                      input_size: tuple[int, int] | None, out_dir: Path) -> Path:
    """Export ``model`` into ``out_dir`` in the format ``runtime`` runs; returns its path."""
    if runtime not in BUILDERS:
        raise FFEdgeError(f"no exporter builds artifacts for runtime {runtime!r}; "
                          f"export one and pass --artifact")
    return BUILDERS[runtime](model, checkpoint, input_size, out_dir)
