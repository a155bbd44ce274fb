"""MobileNetV1 blocks and the (optionally pruned) MobileNetV1-0.25 backbone.

The module layout (``stage1/2/3`` of Sequentials of ``conv, BN, act[, pw conv, BN, act]``)
is the one the published RetinaFace/FeatherFace checkpoints use, so their keys load as-is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

LEAKY = 0.1

# Output width and stride of each of the 14 convs of MobileNetV1-0.25.
MNET025_WIDTHS: tuple[int, ...] = (8, 16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256)
MNET025_STRIDES: tuple[int, ...] = (2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
STAGE_ENDS: tuple[int, int, int] = (6, 12, 14)  # conv index after which each stage ends


def conv_bn(inp: int, oup: int, stride: int = 1, leaky: float = LEAKY) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def conv_dw(inp: int, oup: int, stride: int, leaky: float = LEAKY) -> nn.Sequential:
    """Depthwise-separable block: dw 3x3, BN, act, pw 1x1, BN, act (one Sequential)."""
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNetV1 returning the stride-8/16/32 feature maps (``stage1/2/3`` outputs).

    ``widths`` gives the output channels of each of the 14 convs; pruned variants pass
    other widths (see :func:`widths_from_state_dict`).
    """

    def __init__(self, widths: Sequence[int] = MNET025_WIDTHS) -> None:
        super().__init__()
        if len(widths) != len(MNET025_WIDTHS):
            raise ValueError(f"MobileNetV1 needs {len(MNET025_WIDTHS)} widths, got {len(widths)}")
        self.widths = tuple(int(w) for w in widths)
        layers: list[nn.Module] = [conv_bn(3, self.widths[0], MNET025_STRIDES[0])]
        for i in range(1, len(self.widths)):
            layers.append(conv_dw(self.widths[i - 1], self.widths[i], MNET025_STRIDES[i]))
        a, b, c = STAGE_ENDS
        self.stage1 = nn.Sequential(*layers[:a])
        self.stage2 = nn.Sequential(*layers[a:b])
        self.stage3 = nn.Sequential(*layers[b:c])

    @property
    def out_channels(self) -> tuple[int, int, int]:
        a, b, c = STAGE_ENDS
        return self.widths[a - 1], self.widths[b - 1], self.widths[c - 1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return c3, c4, c5


def widths_from_state_dict(state_dict: dict[str, torch.Tensor], prefix: str) -> tuple[int, ...]:
    """Read the 14 conv widths of a (possibly pruned) backbone from checkpoint shapes."""
    widths: list[int] = []
    a, b, _ = STAGE_ENDS
    for i in range(len(MNET025_WIDTHS)):
        stage, idx = (1, i) if i < a else (2, i - a) if i < b else (3, i - b)
        sub = "0" if i == 0 else "3"
        key = f"{prefix}stage{stage}.{idx}.{sub}.weight"
        if key not in state_dict:
            raise KeyError(key)
        widths.append(int(state_dict[key].shape[0]))
    return tuple(widths)
