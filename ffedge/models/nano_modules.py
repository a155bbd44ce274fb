"""The three "2024 modules" of the Nano-B card, made concrete and converter-friendly.

- :class:`ScaleDecoupling` (P3 only, on backbone width): split P3 into a low-frequency part
  (4x4 block mean, where large objects live) and the high-frequency rest (small faces);
  enhance the latter, suppress the former, and blend with a learned gate.
- :class:`MSEFPN`: per level, inject the top level's semantics, filter them by channel
  importance, and admit them through a gate (residual).
- :class:`ASSN` (P3 only, after the BiFPN): attention over the scale sequence
  (P3, up(P4), up(P5)), then spatial attention and a 1x1 fusion back into P3.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ffedge.models.cbam import SpatialAttention, cbam_hidden
from ffedge.models.lightops import down, gap, resample, softmax_across, up

Pyramid = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class ScaleDecoupling(nn.Module):
    """The card's three layers: enhancer conv3x3(C,C), suppressor conv1x1(C,C), gate conv1x1(2C,C).

    ``low = up4(avgpool4(x))``, ``high = x - low``; ``e = relu(enhancer(high))``,
    ``k = x * (1 - sigmoid(suppressor(low)))``; ``g = sigmoid(gate([e, k]))``;
    output ``g * e + (1 - g) * k``. Needs P3 sides divisible by 4 (inputs are /32).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.enhancer = nn.Conv2d(channels, channels, 3, 1, 1)
        self.suppressor = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = up(down(x, 2), 2)
        enhanced = F.relu(self.enhancer(x - low))
        kept = x * (1.0 - torch.sigmoid(self.suppressor(low)))
        g = torch.sigmoid(self.gate(torch.cat([enhanced, kept], dim=1)))
        return g * enhanced + (1.0 - g) * kept


class SemanticEnhancement(nn.Module):
    """One level of MSE-FPN: ``x + gate * (inject(src) * guide)``."""

    def __init__(self, channels: int, guide_reduction: int = 8, gate_groups: int = 4) -> None:
        super().__init__()
        hidden = cbam_hidden(channels, guide_reduction)
        self.inject = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.guide_fc1 = nn.Conv2d(channels, hidden, 1)
        self.guide_fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Conv2d(channels, channels, 1, groups=gate_groups)

    def forward(self, x: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        s = self.inject(semantic)
        s = s * torch.sigmoid(self.guide_fc2(F.relu(self.guide_fc1(gap(s)))))
        return x + torch.sigmoid(self.gate(x + s)) * s


class MSEFPN(nn.Module):
    """Semantic injection from P5 into every level (P5 itself: a gated 1x1 refinement)."""

    def __init__(self, channels: int = 32, guide_reduction: int = 8, gate_groups: int = 4) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            SemanticEnhancement(channels, guide_reduction, gate_groups) for _ in range(3)
        )

    def forward(self, feats: Sequence[torch.Tensor]) -> Pyramid:
        top = feats[2]
        p3, p4, p5 = (
            m(f, resample(top, 5, 3 + i))
            for i, (m, f) in enumerate(zip(self.levels, feats, strict=True))
        )
        return p3, p4, p5


class ASSN(nn.Module):
    """Attention over the scale sequence at P3 resolution, fused back into P3 (residual)."""

    def __init__(self, channels: int = 32, hidden: int = 16) -> None:
        super().__init__()
        self.scale_fc1 = nn.Conv2d(channels, hidden, 1)
        self.scale_fc2 = nn.Conv2d(hidden, channels, 1)
        self.spatial = SpatialAttention()
        self.fuse = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        p3 = feats[0]
        seq = [resample(f, 3 + i, 3) for i, f in enumerate(feats)]
        logits = [self.scale_fc2(F.relu(self.scale_fc1(gap(s)))) for s in seq]
        weights = softmax_across(logits)
        fused = weights[0] * seq[0]
        for w, s in zip(weights[1:], seq[1:], strict=True):
            fused = fused + w * s
        return p3 + self.fuse(fused * self.spatial(fused))
