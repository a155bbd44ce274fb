"""Per-level 1x1 prediction heads, laid out NHWC and flattened to (B, priors, k)."""

from __future__ import annotations

import torch
from torch import nn


class Conv1x1Head(nn.Module):
    """``conv1x1`` (with bias) predicting ``anchors * per_anchor`` values per cell."""

    def __init__(self, in_channels: int, anchors: int, per_anchor: int) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(in_channels, anchors * per_anchor, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.per_anchor)


def class_head(in_channels: int, anchors: int) -> Conv1x1Head:
    return Conv1x1Head(in_channels, anchors, 2)


def bbox_head(in_channels: int, anchors: int) -> Conv1x1Head:
    return Conv1x1Head(in_channels, anchors, 4)


def landmark_head(in_channels: int, anchors: int) -> Conv1x1Head:
    return Conv1x1Head(in_channels, anchors, 10)
