"""``load_runner``: pick and build a runner from an artifact path or a model name.

Which runner runs which artifact comes from the target registry
(:mod:`ffedge.artifact.targets`); nothing here names a runtime but torch.
"""

from __future__ import annotations

from pathlib import Path

from ffedge.artifact.targets import find_target, target_for_artifact
from ffedge.errors import FFEdgeError
from ffedge.runtimes.base import Runner


def runtime_for(path: Path) -> str:
    return target_for_artifact(path).runtime


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
            find_target(runtime)  # an unknown name lists the real ones
            raise FFEdgeError(f"runtime {runtime!r} needs an exported --artifact (or use --runtime torch)")
        from ffedge.runtimes.torch_runner import TorchRunner

        return TorchRunner(model, checkpoint, input_size, threads)
    if runtime == "torch":
        raise FFEdgeError("--runtime torch runs a model: give --model NAME [--checkpoint PATH]")
    path = Path(artifact)
    if not path.exists():
        raise FFEdgeError(f"artifact not found: {path}")
    record = find_target(runtime) if runtime else target_for_artifact(path)
    return record.load_runner_class()(path, model, input_size, threads)
