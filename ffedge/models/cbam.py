"""CBAM (Woo et al., ECCV 2018): channel attention, then 7x7 spatial attention.

Written with converter-friendly ops only: global pooling is ``mean``/``amax`` over (2, 3)
with keepdim, the channel MLP is two bias-free 1x1 convs, and both gates are Sigmoid + Mul.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ffedge.models.lightops import gap, gmp


def cbam_hidden(channels: int, reduction: int) -> int:
    """Width of the channel-attention bottleneck: ``channels // reduction``, at least 1."""
    return max(1, channels // reduction)


class ChannelAttention(nn.Module):
    """``sigmoid(mlp(avgpool(x)) + mlp(maxpool(x)))`` with a shared bias-free 1x1 MLP."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = cbam_hidden(channels, reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc2(self.relu(self.fc1(gap(x))))
        mx = self.fc2(self.relu(self.fc1(gmp(x))))
        return torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """``sigmoid(conv7x7([mean_c(x), max_c(x)]))``: one bias-free 2->1 conv, 98 parameters."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, 1, kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        desc = torch.cat(
            [x.mean(dim=1, keepdim=True), torch.amax(x, dim=1, keepdim=True)], dim=1
        )
        return torch.sigmoid(self.conv(desc))


class CBAM(nn.Module):
    """``y = x * Mc(x)``, then ``y * Ms(y)``; ``2 * C * (C // r) + 98`` parameters.

    ``residual=True`` gives the V2 card's "CBAM_Plus", ``x + CBAM(x)`` = ``x * (1 + mask)``:
    attention can re-weight a feature by 1x-2x but never erase it, which keeps pretrained
    backbone activations usable and lets the block be stacked (V2 attention multiplication).
    """

    def __init__(self, channels: int, reduction: int = 16, residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.channel(x)
        y = y * self.spatial(y)
        return x + y if self.residual else y


class SharedCBAM(nn.Module):
    """One CBAM whose weights serve every pyramid level of the same width.

    The card's "SharedCBAMManager": sharing costs one CBAM instead of three and keeps the
    attention consistent across scales. ``forward`` attends each map of a sequence;
    :meth:`attend` is the single-map form for callers that reuse the weights elsewhere.
    """

    def __init__(self, channels: int, reduction: int = 16, residual: bool = False) -> None:
        super().__init__()
        self.cbam = CBAM(channels, reduction, residual)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbam(x)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self.cbam(f) for f in feats]
