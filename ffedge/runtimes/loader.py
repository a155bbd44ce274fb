"""``load_runner``: pick and build a runner from an artifact path or a model name."""

from __future__ import annotations

from pathlib import Path

from ffedge.errors import FFEdgeError
from ffedge.runtimes.base import Runner

# runtime name -> artifact suffixes it runs
RUNTIMES: dict[str, tuple[str, ...]] = {
    "torch": (".pth", ".pt"),
    "onnxruntime": (".onnx",),
    "openvino": (".xml",),
    "tflite": (".tflite",),
}


def runtime_for(path: Path) -> str:
    for name, suffixes in RUNTIMES.items():
        if name != "torch" and path.suffix.lower() in suffixes:
            return name
    raise FFEdgeError(
        f"no runtime for {path.name!r} (known artifact types: "
        + ", ".join(s for n, ss in RUNTIMES.items() if n != "torch" for s in ss) + ")"
    )


def load_runner(
    runtime: str | None = None,
    artifact: str | Path | None = None,
    model: str | None = None,
    checkpoint: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    threads: int | None = None,
) -> Runner:
    """A runner for ``artifact`` (runtime from its suffix unless given) or for ``model``
    in torch. ``model`` also supplies the spec for artifacts without our metadata."""
    if artifact is None:
        if model is None:
            raise FFEdgeError("give --model NAME or --artifact PATH")
        if runtime not in (None, "torch"):
            raise FFEdgeError(f"runtime {runtime!r} needs an exported --artifact (or use --runtime torch)")
        from ffedge.runtimes.torch_runner import TorchRunner

        return TorchRunner(model, checkpoint, input_size, threads)
    path = Path(artifact)
    if not path.exists():
        raise FFEdgeError(f"artifact not found: {path}")
    runtime = runtime or runtime_for(path)
    if runtime not in RUNTIMES:
        raise FFEdgeError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if runtime == "onnxruntime":
        from ffedge.runtimes.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, model, input_size, threads)
    if runtime == "openvino":
        from ffedge.runtimes.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(path, model, input_size, threads)
    if runtime == "tflite":
        from ffedge.runtimes.tflite_runner import TFLiteRunner

        return TFLiteRunner(path, model, input_size, threads)
    if runtime == "torch":
        raise FFEdgeError("--runtime torch runs a model: give --model NAME [--checkpoint PATH]")
    raise FFEdgeError(f"runtime {runtime!r} cannot run {path.name}")
