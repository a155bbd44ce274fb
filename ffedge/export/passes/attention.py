"""CBAM channel attention as one MLP pass over both pooled descriptors.

``sigmoid(fc2(relu(fc1(avg))) + fc2(relu(fc1(max))))`` runs four convs on 1x1 maps plus an
Add. Stacking the two descriptors side by side (``[B, C, 1, 2]``) lets ``fc1`` run once, and
since ``fc2`` is linear and bias-free, ``fc2(a) + fc2(b) == fc2(a + b)``: a ReduceSum over the
pair, then ``fc2`` once. Same maths, two convs instead of four; on these tiny maps the per-op
overhead, not arithmetic, is the cost.
"""

from __future__ import annotations

import torch
from torch import nn

from ffedge.export.passes._modules import replace_modules
from ffedge.models.cbam import ChannelAttention


class PairedChannelAttention(nn.Module):
    def __init__(self, ca: ChannelAttention) -> None:
        super().__init__()
        if ca.fc2.bias is not None or ca.fc1.kernel_size != (1, 1):
            raise ValueError("channel attention MLP must be 1x1 with a bias-free fc2")
        self.fc1, self.fc2 = ca.fc1, ca.fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=(2, 3), keepdim=True),
                            torch.amax(x, dim=(2, 3), keepdim=True)], dim=3)
        hidden = torch.relu(self.fc1(pooled)).sum(dim=3, keepdim=True)
        return torch.sigmoid(self.fc2(hidden))


def pair_channel_attention(net: nn.Module) -> int:
    """Replace every ``ChannelAttention`` in place; returns how many."""
    return replace_modules(net, ChannelAttention, PairedChannelAttention)
