"""SSH context module (RetinaFace): 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ffedge.models.dcn import DeformableConv2d

ConvFactory = Callable[[int, int], nn.Module]


def plain_conv3x3(groups: int = 1) -> ConvFactory:
    """A 3x3 conv (pad 1, no bias) factory; ``groups`` > 1 gives SSH_Grouped."""

    def make(cin: int, cout: int) -> nn.Module:
        g = groups if cin % groups == 0 and cout % groups == 0 else 1
        return nn.Conv2d(cin, cout, 3, 1, 1, groups=g, bias=False)

    return make


def deformable_conv3x3(cin: int, cout: int) -> nn.Module:
    return DeformableConv2d(cin, cout, 3, 1, 1)


class SSH(nn.Module):
    """Output ``relu(concat[3x3 (out/2), 5x5 (out/4), 7x7 (out/4)])``.

    Key names follow RetinaFace (``conv3X3``, ``conv5X5_1``, ``conv5X5_2``, ``conv7X7_2``,
    ``conv7x7_3``), each a Sequential of conv, BN[, LeakyReLU(0.1)].
    """

    def __init__(
        self, in_channels: int, out_channels: int, conv: ConvFactory | None = None,
        leaky: float = 0.1,
    ) -> None:
        super().__init__()
        if out_channels % 4:
            raise ValueError("SSH out_channels must be divisible by 4")
        half, quarter = out_channels // 2, out_channels // 4
        conv = conv or plain_conv3x3()

        def block(cin: int, cout: int, act: bool) -> nn.Sequential:
            layers: list[nn.Module] = [conv(cin, cout), nn.BatchNorm2d(cout)]
            if act:
                layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
            return nn.Sequential(*layers)

        self.conv3X3 = block(in_channels, half, act=False)
        self.conv5X5_1 = block(in_channels, quarter, act=True)
        self.conv5X5_2 = block(quarter, quarter, act=False)
        self.conv7X7_2 = block(quarter, quarter, act=True)
        self.conv7x7_3 = block(quarter, quarter, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c3 = self.conv3X3(x)
        c5_1 = self.conv5X5_1(x)
        c5 = self.conv5X5_2(c5_1)
        c7 = self.conv7x7_3(self.conv7X7_2(c5_1))
        return F.relu(torch.cat([c3, c5, c7], dim=1))
