"""Parameter-free tensor helpers that every converter lowers cleanly.

Resampling is always by exact factors of two (nearest upsampling, stride-2 pooling) and
global pooling is a mean/max over dims (2, 3) with ``keepdim``, so the traced graph is the
same static Resize/AveragePool/ReduceMean chain for TFLite, OpenVINO and TensorRT.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

COSINE_EPS = 1e-6


def up2(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour upsampling by exactly 2."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def up(x: torch.Tensor, times: int) -> torch.Tensor:
    """``times`` successive 2x nearest upsamplings (factor ``2**times``)."""
    for _ in range(times):
        x = up2(x)
    return x


def down2(x: torch.Tensor) -> torch.Tensor:
    """2x2 stride-2 average pool: the exact inverse grid of :func:`up2` (even sizes)."""
    return F.avg_pool2d(x, kernel_size=2, stride=2)


def down(x: torch.Tensor, times: int) -> torch.Tensor:
    """``times`` successive 2x average-pool downsamplings."""
    for _ in range(times):
        x = down2(x)
    return x


def maxpool_down2(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-2 max pool, symmetric pad 1: halves even sizes exactly (BiFPN bottom-up)."""
    return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def resample(x: torch.Tensor, src_level: int, dst_level: int) -> torch.Tensor:
    """Bring a map from pyramid level ``src_level`` to ``dst_level`` (level k = stride 2**k)."""
    if src_level > dst_level:
        return up(x, src_level - dst_level)
    return down(x, dst_level - src_level)


def gap(x: torch.Tensor) -> torch.Tensor:
    """Global average pool as ``mean`` over (2, 3) with keepdim: ``[B, C, 1, 1]``."""
    return x.mean(dim=(2, 3), keepdim=True)


def gmp(x: torch.Tensor) -> torch.Tensor:
    """Global max pool as ``amax`` over (2, 3) with keepdim: ``[B, C, 1, 1]``."""
    return torch.amax(x, dim=(2, 3), keepdim=True)


def softmax_across(xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Element-wise softmax across same-shaped tensors (no stacking into a 5-D tensor)."""
    m = xs[0]
    for x in xs[1:]:
        m = torch.maximum(m, x)
    exps = [torch.exp(x - m) for x in xs]
    total = exps[0]
    for e in exps[1:]:
        total = total + e
    return [e / total for e in exps]


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity over the channel dim of ``[B, C, 1, 1]`` vectors: ``[B, 1, 1, 1]``."""
    dot = (a * b).sum(dim=1, keepdim=True)
    na = torch.sqrt((a * a).sum(dim=1, keepdim=True))
    nb = torch.sqrt((b * b).sum(dim=1, keepdim=True))
    return dot / (na * nb + COSINE_EPS)
