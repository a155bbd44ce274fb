"""EfficientDet-style BiFPN cell over P3-P5 with fast normalised fusion (FeatherFace V1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FUSION_EPS = 1e-4


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def fast_normalized_weights(w: torch.Tensor) -> torch.Tensor:
    """``relu(w) / (sum(relu(w)) + eps)`` - EfficientDet's fast normalised fusion."""
    w = F.relu(w)
    return w / (torch.sum(w, dim=0) + FUSION_EPS)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def maxpool_same(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-2 max pool with TF "same" zero padding, for even-sized maps.

    Inputs are multiples of 32, so P3/P4 maps are always even: "same" padding is then
    0 before and 1 after on each axis.
    """
    return F.max_pool2d(F.pad(x, (0, 1, 0, 1)), kernel_size=3, stride=2)


class _Conv(nn.Module):
    """A conv held as ``.conv`` (the EfficientDet "StaticSamePadding" key layout)."""

    def __init__(self, cin: int, cout: int, k: int, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, 1, k // 2, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SeparableConvBlock(nn.Module):
    """Depthwise 3x3 (no bias) -> pointwise 1x1 (bias) -> BN(eps 1e-3); no activation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise_conv = _Conv(channels, channels, 3, groups=channels, bias=False)
        self.pointwise_conv = _Conv(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels, momentum=0.01, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pointwise_conv(self.depthwise_conv(x)))


def _projection(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(_Conv(cin, cout, 1), nn.BatchNorm2d(cout, momentum=0.01, eps=1e-3))


class BiFPNCell(nn.Module):
    """One BiFPN cell; the first one owns the input projections from backbone widths."""

    def __init__(self, channels: int, in_channels: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        self.first = in_channels is not None
        self.p4_w1 = nn.Parameter(torch.ones(2))
        self.p3_w1 = nn.Parameter(torch.ones(2))
        self.p4_w2 = nn.Parameter(torch.ones(3))
        self.p5_w2 = nn.Parameter(torch.ones(3))
        self.conv4_up = SeparableConvBlock(channels)
        self.conv3_up = SeparableConvBlock(channels)
        self.conv4_down = SeparableConvBlock(channels)
        self.conv5_down = SeparableConvBlock(channels)
        if in_channels is not None:
            c3, c4, c5 = in_channels
            self.p5_down_channel = _projection(c5, channels)
            self.p4_down_channel = _projection(c4, channels)
            self.p3_down_channel = _projection(c3, channels)
            self.p4_down_channel_2 = _projection(c4, channels)
            self.p5_down_channel_2 = _projection(c5, channels)

    def forward(
        self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3, p4, p5 = feats
        if self.first:
            p3_in = self.p3_down_channel(p3)
            p4_in = self.p4_down_channel(p4)
            p5_in = self.p5_down_channel(p5)
        else:
            p3_in, p4_in, p5_in = p3, p4, p5
        w = fast_normalized_weights(self.p4_w1)
        p4_td = self.conv4_up(swish(w[0] * p4_in + w[1] * upsample2x(p5_in)))
        w = fast_normalized_weights(self.p3_w1)
        p3_out = self.conv3_up(swish(w[0] * p3_in + w[1] * upsample2x(p4_td)))
        if self.first:
            p4_in = self.p4_down_channel_2(p4)
            p5_in = self.p5_down_channel_2(p5)
        w = fast_normalized_weights(self.p4_w2)
        p4_out = self.conv4_down(
            swish(w[0] * p4_in + w[1] * p4_td + w[2] * maxpool_same(p3_out))
        )
        w = fast_normalized_weights(self.p5_w2)  # third entry only enters the normaliser
        p5_out = self.conv5_down(swish(w[0] * p5_in + w[1] * maxpool_same(p4_out)))
        return p3_out, p4_out, p5_out
