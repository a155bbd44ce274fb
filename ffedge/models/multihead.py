"""SharedMultiHead: one shared 1x1 reduction per level feeding the three task heads.

The class, box and landmark heads are the usual :class:`Conv1x1Head` (NHWC, flattened to
``(B, priors, k)``), but they read a 16-channel map that a shared conv+BN+ReLU computes
once, instead of the 32-channel input: the tasks share that projection, halving head cost.
"""

from __future__ import annotations

import torch
from torch import nn

from ffedge.models.heads import bbox_head, class_head, landmark_head


class SharedMultiHead(nn.Module):
    """``shared`` (1x1 conv, BN, ReLU: in -> mid), then the class/box/landmark heads."""

    def __init__(self, in_channels: int, anchors: int, mid_channels: int | None = None) -> None:
        super().__init__()
        mid = mid_channels or in_channels // 2
        self.shared = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
        )
        self.ClassHead = class_head(mid, anchors)
        self.BboxHead = bbox_head(mid, anchors)
        self.LandmarkHead = landmark_head(mid, anchors)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(boxes [B,n,4], logits [B,n,2], landmarks [B,n,10])`` for this level."""
        s = self.shared(x)
        return self.BboxHead(s), self.ClassHead(s), self.LandmarkHead(s)
