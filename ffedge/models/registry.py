"""The model registry: ``create_model(name, checkpoint=...)`` over one file per family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ffedge.errors import FFEdgeError
from ffedge.spec import DeploymentSpec


@dataclass(frozen=True)
class ModelEntry:
    name: str
    spec: DeploymentSpec
    description: str
    builder: Callable[..., object]


_REGISTRY: dict[str, ModelEntry] = {}
INIT_SEED = 0
FAMILIES = ("v1", "v2_ultra", "nano_b", "v2_ca", "eca_cbam")  # one module per family; importing registers it


def register_model(name: str, spec: DeploymentSpec, description: str):
    """Decorator for a builder ``fn(state_dict=None, spec=..., **overrides) -> FaceDetector``.

    The builder sees the checkpoint's state_dict (when one is given) so that shapes such as
    a pruned backbone's widths can be read from it before the module is built.
    """

    def wrap(fn: Callable[..., object]) -> Callable[..., object]:
        _REGISTRY[name] = ModelEntry(name, spec, description, fn)
        return fn

    return wrap


def _ensure_loaded() -> None:
    # Importing the family modules fills the registry.
    import importlib

    for family in FAMILIES:
        importlib.import_module(f"ffedge.models.{family}")


def list_models() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise FFEdgeError(f"unknown model {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_spec(name: str) -> DeploymentSpec:
    return get_entry(name).spec


_WARNED_RANDOM: set[str] = set()


class RandomWeightsWarning(UserWarning):
    """A zoo model was built with random weights (no checkpoint given, none bundled)."""


def create_model(
    name: str,
    checkpoint: str | Path | dict | None = None,
    input_size: tuple[int, int] | None = None,
    pretrained: bool = True,
    **overrides,
):
    """Build model ``name`` in eval mode, loading ``checkpoint`` strictly if given.

    ``checkpoint`` may be a path or an already-read state_dict. Without one, ``pretrained``
    (the default) loads the bundled trained weights when the model has them (v1, v2_ca,
    eca_cbam), as the CLI does; a model without bundled weights (nano_b, v2_ultra) gets the
    seeded random init and a :class:`RandomWeightsWarning` (once per model and process).
    ``pretrained=False`` asks for the random init explicitly, silently. ``input_size``
    (H, W) changes the deployment spec's export size; the module itself accepts any size
    divisible by 32. The result's ``trained`` attribute says whether weights were loaded.
    """
    from ffedge.models.checkpoint import load_strict, read_state_dict, unwrap_state_dict

    entry = get_entry(name)
    if checkpoint is None and pretrained:
        checkpoint = _bundled_or_warn(name)
    spec = entry.spec if input_size is None else entry.spec.with_input_size(*input_size)
    state_dict = None
    source = "checkpoint"
    if isinstance(checkpoint, (str, Path)):
        source = str(checkpoint)
        state_dict = read_state_dict(checkpoint)
    elif checkpoint is not None:
        state_dict = unwrap_state_dict(checkpoint)
    try:
        import torch

        # Random init is seeded: random-weight exports are reproducible and comparable.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            model = entry.builder(state_dict=state_dict, spec=spec, **overrides)
    except KeyError as exc:
        raise FFEdgeError(
            f"{source} does not fit model '{name}': missing key {exc.args[0]}"
        ) from None
    if state_dict is not None:
        load_strict(model, state_dict, name, source)
    model.spec = replace(spec)
    model.trained = state_dict is not None
    return model.eval()


def _bundled_or_warn(name: str) -> Path | None:
    from ffedge.weights import bundled_checkpoint

    ckpt = bundled_checkpoint(name)
    if ckpt is None and name not in _WARNED_RANDOM:
        _WARNED_RANDOM.add(name)
        import warnings

        warnings.warn(f"{name} has no trained weights: it is built with RANDOM weights and its "
                      "detections mean nothing (pass checkpoint=PATH, or pretrained=False to "
                      "ask for random weights without this warning)",
                      RandomWeightsWarning, stacklevel=3)
    return ckpt
