"""Parameter-free channel shuffle."""

from __future__ import annotations

import torch
from torch import nn


class ChannelShuffle(nn.Module):
    """Interleave channels across ``groups`` (ShuffleNet) or, with ``order="split"``, the
    FeatherFace V1 variant: ``view(b, c/g, g, h, w).transpose(1, 2)`` (for g=2: even
    channels first, then odd)."""

    def __init__(self, groups: int, order: str = "shufflenet") -> None:
        super().__init__()
        if order not in ("shufflenet", "split"):
            raise ValueError(f"unknown shuffle order {order!r}")
        self.groups = groups
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = self.groups
        if self.order == "shufflenet":
            x = x.reshape(b, g, c // g, h, w).transpose(1, 2)
        else:
            x = x.reshape(b, c // g, g, h, w).transpose(1, 2)
        return x.reshape(b, c, h, w)
