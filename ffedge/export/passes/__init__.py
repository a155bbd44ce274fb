"""Deploy-time graph passes: exact rewrites that leave fewer, fatter ops for the runtimes.

Two entry points, applied in one place by the export pipeline:

- :func:`optimize_module` works on a deep copy of the torch model before tracing (BN folding,
  paired channel attention, merged heads with the channel shuffle and softmax folded in);
  every pass is checked against the model before it on a probe input and skipped, with a
  note, when it does not fit or does not agree.
- :func:`optimize_onnx` works on the traced, simplified ONNX graph (fusion-weight Muls into
  convs, global pooling, no-op Reshape/Transpose removal, Transpose merging).

Levels: 0 = the graph as traced (byte for byte what export produced before passes existed);
1 = the exact passes; 2 = level 1 plus forms chosen for a runtime (see ``RUNTIME_FORMS``).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn

OPTIMIZE_LEVELS = (0, 1, 2)
DEFAULT_LEVEL = 1
PROBE_SIZE = 64
#: A pass must reproduce the model before it within this (relative to output magnitude).
PROBE_RTOL = 1e-5
_LEVEL: contextvars.ContextVar[int] = contextvars.ContextVar("ffedge_optimize", default=DEFAULT_LEVEL)


@contextlib.contextmanager
def optimize_level(level: int) -> Iterator[None]:
    """The level every ``trace_to_onnx`` without an explicit ``OnnxOptions.optimize`` uses
    inside this block (the export pipeline sets it from ``ExportRequest.optimize``)."""
    if level not in OPTIMIZE_LEVELS:
        raise ValueError(f"optimize level must be one of {OPTIMIZE_LEVELS}, not {level}")
    token = _LEVEL.set(level)
    try:
        yield
    finally:
        _LEVEL.reset(token)


def current_level() -> int:
    return _LEVEL.get()


def _outputs(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        boxes, scores, landmarks = net(x)
    if not getattr(net, "emits_scores", False):
        scores = torch.softmax(scores, dim=-1)
    return [boxes, scores, landmarks]


def _agrees(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Worst relative error over the three outputs (inf on a shape mismatch)."""
    worst = 0.0
    for u, v in zip(a, b, strict=True):
        if u.shape != v.shape:
            return float("inf")
        worst = max(worst, float((u - v).abs().max()) / (1.0 + float(u.abs().max())))
    return worst


def _torch_passes(level: int) -> list[tuple[str, Callable[[nn.Module], nn.Module | int]]]:
    from ffedge.export.passes.attention import pair_channel_attention
    from ffedge.export.passes.bn_fold import drop_identities, fold_batchnorm
    from ffedge.export.passes.dcn_grid import affine_grid_dcn
    from ffedge.export.passes.dcn_tap import tap_major_dcn
    from ffedge.export.passes.heads import merge_heads

    if level <= 0:
        return []
    passes = [
        ("fold_batchnorm", fold_batchnorm),
        ("drop_identities", drop_identities),
        ("pair_channel_attention", pair_channel_attention),
        ("merge_heads", merge_heads),
        ("affine_grid_dcn", affine_grid_dcn),
    ]
    if level >= 2:  # runtime forms
        passes.append(("tap_major_dcn", tap_major_dcn))
    return passes


def optimize_module(net: nn.Module, level: int = DEFAULT_LEVEL) -> nn.Module:
    """A deep copy of ``net`` (eval mode) with the level's torch passes applied; level 0
    returns ``net`` itself. ``result.graph_passes`` lists what each pass did."""
    if level not in OPTIMIZE_LEVELS:
        raise ValueError(f"optimize level must be one of {OPTIMIZE_LEVELS}, not {level}")
    if level == 0:
        return net
    current = copy.deepcopy(net).eval()
    probe = torch.rand(1, 3, PROBE_SIZE, PROBE_SIZE, generator=torch.Generator().manual_seed(0))
    probe = probe * 255
    reference = _outputs(current, probe)
    notes: list[str] = []
    for name, fn in _torch_passes(level):
        candidate = copy.deepcopy(current)
        try:
            result = fn(candidate)
        except ValueError as exc:
            notes.append(f"{name}: skipped ({exc})")
            continue
        if isinstance(result, nn.Module):
            candidate, result = result, "applied"
        if result == 0:
            notes.append(f"{name}: nothing to do")
            continue
        err = _agrees(reference, _outputs(candidate, probe))
        if err > PROBE_RTOL:
            notes.append(f"{name}: skipped (disagrees by {err:.1e})")
            continue
        current = candidate
        notes.append(f"{name}: {result}")
    current.graph_passes = notes
    return current


def optimize_onnx(proto, level: int = DEFAULT_LEVEL):
    """A copy of ``proto`` with the level's ONNX passes applied (``proto`` itself at level 0)."""
    from ffedge.export.passes.onnx_global_pool import to_global_pool
    from ffedge.export.passes.onnx_noop import drop_noops, merge_transposes
    from ffedge.export.passes.onnx_scale_fold import fold_scales

    if level not in OPTIMIZE_LEVELS:
        raise ValueError(f"optimize level must be one of {OPTIMIZE_LEVELS}, not {level}")
    if level == 0:
        return proto
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for fn in (fold_scales, drop_noops, merge_transposes, to_global_pool):
        fn(out)
    return out


__all__ = ["DEFAULT_LEVEL", "OPTIMIZE_LEVELS", "current_level", "optimize_level", "optimize_module",
           "optimize_onnx"]
