"""Reading checkpoints in the shapes users actually have, and loading them strictly."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ffedge.errors import CheckpointError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
PREFIXES = ("module.", "model.")
MAX_LISTED = 5


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load ``path`` with ``weights_only=True`` and unwrap it to a flat state_dict.

    Accepts a raw state_dict, ``{"state_dict": ...}``, ``{"model_state_dict": ...}``,
    ``{"model": ...}`` and keys prefixed with ``module.`` (DataParallel).
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if p.is_dir():
        raise CheckpointError(f"checkpoint is a directory, not a file: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a non-checkpoint file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if first.startswith("Weights only load failed"):
            # torch's advice about weights_only=False is wrong here: we never unpickle code
            first = "not a tensor-only torch.save file"
        raise CheckpointError(f"{p} is not a readable PyTorch checkpoint ({first[:160]})") from None
    return unwrap_state_dict(obj, source=str(p))


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    for _ in range(3):  # nested wrappers, e.g. {"model": {"state_dict": ...}}
        if isinstance(obj, Mapping) and not _is_state_dict(obj):
            inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        raise CheckpointError(
            f"{source} holds no state_dict (expected tensors by name, or one under "
            f"{', '.join(repr(k) for k in WRAPPER_KEYS[:3])})"
        )
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _is_state_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and sum(isinstance(v, torch.Tensor) for v in obj.values()) >= max(1, len(obj) // 2)


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], model_name: str,
                source: str = "checkpoint") -> int:
    """Load every key exactly; otherwise one line naming the first offending keys.

    Denormal floats are then flushed to zero (see :func:`flush_denormals`); the count is
    returned and kept as ``model.denormals_flushed``.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshaped = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or misshaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("mis-shaped (checkpoint vs model)", misshaped)):
            if keys:
                shown = ", ".join(keys[:MAX_LISTED]) + (", ..." if len(keys) > MAX_LISTED else "")
                parts.append(f"{len(keys)} {label}: {shown}")
        raise CheckpointError(
            f"{source} does not fit model '{model_name}': " + "; ".join(parts)
        )
    model.load_state_dict(state_dict, strict=True)
    flushed = flush_denormals(model)
    model.denormals_flushed = flushed
    return flushed


def flush_denormals(model: nn.Module) -> int:
    """Set every denormal (subnormal) weight and buffer of ``model`` to zero, in place.

    Denormals are below float precision's normal range (|x| < ``finfo.tiny``, 1.2e-38 for
    float32); x86 CPUs compute with them through a slow microcode path, so a checkpoint full
    of them (the trained ECA-CBAM has 48,532) makes every conv that reads them several times
    slower, while their contribution to any output is far below float resolution. Returns
    how many values were zeroed.
    """
    flushed = 0
    with torch.no_grad():
        for tensor in model.state_dict(keep_vars=True).values():
            if not tensor.is_floating_point():
                continue
            tiny = torch.finfo(tensor.dtype).tiny
            mask = (tensor != 0) & (tensor.abs() < tiny)
            n = int(mask.sum())
            if n:
                tensor.data.masked_fill_(mask, 0.0)
                flushed += n
    return flushed
