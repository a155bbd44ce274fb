"""Channel shuffle as a permutation of the consumers' input channels (no runtime op).

A channel shuffle only reorders channels; when every consumer of its output is a 1x1 conv
(the prediction heads), reordering those convs' input channels instead is exact and removes
the Reshape-Transpose-Reshape (ORT, LiteRT) or ShuffleChannels (OpenVINO) node per level.
:func:`ffedge.export.passes.heads.merge_heads` applies it while merging the heads.
"""

from __future__ import annotations

import torch
from torch import nn


def shuffle_permutation(shuffle: nn.Module, channels: int) -> torch.Tensor:
    """``perm`` with ``shuffle(x)[:, j] == x[:, perm[j]]`` (found by shuffling the indices)."""
    idx = torch.arange(channels, dtype=torch.float32).reshape(1, channels, 1, 1)
    with torch.no_grad():
        perm = shuffle(idx).reshape(channels).round().long()
    if sorted(perm.tolist()) != list(range(channels)):
        raise ValueError("module is not a channel permutation")
    return perm


def permute_inputs(conv: nn.Conv2d, perm: torch.Tensor) -> None:
    """Make ``conv(x)`` equal the old ``conv(x[:, perm])`` (groups=1 convs only)."""
    if conv.groups != 1:
        raise ValueError("only dense convs can absorb a channel permutation")
    with torch.no_grad():
        w = torch.empty_like(conv.weight)
        w[:, perm] = conv.weight
        conv.weight.copy_(w)
