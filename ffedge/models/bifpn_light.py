"""BiFPN_Light: an EfficientDet-topology BiFPN over P3-P5 with shared depthwise-separable convs.

Each layer has the four BiFPN nodes (P4 top-down, P3 out, P4 out, P5 out) with fast
normalised fusion, but only two depthwise-separable convs: one shared by the two top-down
nodes and one by the two bottom-up nodes (the card draws two ``DepthwiseSeparable(32ch)``
per layer). Every node keeps its own BatchNorm, since the shared conv sees maps of different
scales (the EfficientDet head convention: shared conv weights, per-level BN).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ffedge.models.bifpn import fast_normalized_weights
from ffedge.models.lightops import maxpool_down2, up2

Pyramid = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, both bias-free (a BN follows at each use)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def conv1x1_bn(cin: int, cout: int) -> nn.Sequential:
    """Bias-free 1x1 projection + BN: the lateral input of a BiFPN from a backbone width."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


class BiFPNLightLayer(nn.Module):
    """One bidirectional pass; ``relu(bn_node(sep(sum_i w_i * x_i)))`` at each node."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.td_conv = DepthwiseSeparable(channels)
        self.bu_conv = DepthwiseSeparable(channels)
        self.bn_p4_td = nn.BatchNorm2d(channels)
        self.bn_p3_out = nn.BatchNorm2d(channels)
        self.bn_p4_out = nn.BatchNorm2d(channels)
        self.bn_p5_out = nn.BatchNorm2d(channels)
        self.w_p4_td = nn.Parameter(torch.ones(2))
        self.w_p3_out = nn.Parameter(torch.ones(2))
        self.w_p4_out = nn.Parameter(torch.ones(3))
        self.w_p5_out = nn.Parameter(torch.ones(2))

    @staticmethod
    def _fuse(weights: torch.Tensor, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        w = fast_normalized_weights(weights)
        out = w[0] * inputs[0]
        for i in range(1, len(inputs)):
            out = out + w[i] * inputs[i]
        return out

    def forward(self, feats: Pyramid) -> Pyramid:
        p3, p4, p5 = feats
        p4_td = F.relu(self.bn_p4_td(self.td_conv(self._fuse(self.w_p4_td, (p4, up2(p5))))))
        p3_out = F.relu(self.bn_p3_out(self.td_conv(self._fuse(self.w_p3_out, (p3, up2(p4_td))))))
        p4_out = F.relu(self.bn_p4_out(self.bu_conv(
            self._fuse(self.w_p4_out, (p4, p4_td, maxpool_down2(p3_out)))
        )))
        p5_out = F.relu(self.bn_p5_out(self.bu_conv(
            self._fuse(self.w_p5_out, (p5, maxpool_down2(p4_out)))
        )))
        return p3_out, p4_out, p5_out


class BiFPNLight(nn.Module):
    """Project backbone maps (any widths) to ``channels``, then ``layers`` BiFPN passes."""

    def __init__(
        self, in_channels: Sequence[int], channels: int = 32, layers: int = 2
    ) -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError("BiFPNLight fuses exactly three levels (P3, P4, P5)")
        self.proj = nn.ModuleList(conv1x1_bn(c, channels) for c in in_channels)
        self.layers = nn.ModuleList(BiFPNLightLayer(channels) for _ in range(layers))

    def forward(self, feats: Sequence[torch.Tensor]) -> Pyramid:
        p3, p4, p5 = (proj(f) for proj, f in zip(self.proj, feats, strict=True))
        out: Pyramid = (p3, p4, p5)
        for layer in self.layers:
            out = layer(out)
        return out
