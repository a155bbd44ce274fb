"""The five "V2 Ultra innovations" of the V2 card, as concrete static tensor computations.

The card only names them (and its formulas resample in the wrong direction); what is built
here, level by level over 32-channel P3/P4/P5 maps (``attend`` is the shared BiFPN CBAM):

1. Smart feature reuse (0 params): ``R3 = X3 + up2(attend(X4)) + up4(X5)``, ``R4 = X4``,
   ``R5 = X5 + down2(attend(X4)) + down4(X3)``.
2. Attention multiplication (0 params): ``E = attend(attend(attend(R)))`` with the same
   weights; ``attend`` is residual (``x * (1 + mask)``), so three passes compound the
   attention without ever zeroing a feature.
3. Progressive enhancement (0 params): ``L3 = 2*E3 - blur3x3(E3)`` (unsharp mask: small
   faces live in high frequencies), ``L4 = E4 + down2(L3)/2``,
   ``L5 = E5 + (down2(L4) + down4(L3))/2``.
4. Multi-scale intelligence (0 params): per-channel global descriptors ``g_l``, importance
   ``w = softmax over levels of g``, context ``c = sum_l w_l g_l``; ``S_l = L_l + w_l * c``.
5. Dynamic weight sharing (<1K params): the card's ``if similarity > threshold`` becomes the
   soft gate ``a_l = sigmoid(tau_l * (cos(g_l, mean_l g_l) - theta_l))``;
   ``D_l = S_l + a_l * shared_block_l(S_l)`` where the block's depthwise 3x3 and grouped
   pointwise convs are shared by all levels (each level has its own BNs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ffedge.models.lightops import cosine_similarity, down, down2, gap, softmax_across, up, up2

Attend = Callable[[torch.Tensor], torch.Tensor]


def smart_feature_reuse(feats: Sequence[torch.Tensor], attend: Attend) -> list[torch.Tensor]:
    """Innovation 1: the extreme levels borrow the attended middle level and each other."""
    x3, x4, x5 = feats
    a4 = attend(x4)
    return [x3 + up2(a4) + up(x5, 2), x4, x5 + down2(a4) + down(x3, 2)]


def attention_multiplication(x: torch.Tensor, attend: Attend, passes: int = 3) -> torch.Tensor:
    """Innovation 2: the same (residual) attention applied ``passes`` times."""
    for _ in range(passes):
        x = attend(x)
    return x


def blur3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 box blur, stride 1, borders averaged over valid pixels only."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def progressive_enhancement(feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Innovation 3: sharpen P3, then feed the enhanced finer levels into the coarser ones."""
    e3, e4, e5 = feats
    l3 = 2.0 * e3 - blur3x3(e3)
    l4 = e4 + 0.5 * down2(l3)
    l5 = e5 + 0.5 * (down2(l4) + down(l3, 2))
    return [l3, l4, l5]


def multi_scale_intelligence(feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Innovation 4: importance-weighted global context, shared out by level importance."""
    g = [gap(f) for f in feats]
    w = softmax_across(g)
    ctx = w[0] * g[0]
    for wi, gi in zip(w[1:], g[1:], strict=True):
        ctx = ctx + wi * gi
    return [f + wi * ctx for f, wi in zip(feats, w, strict=True)]


class DynamicWeightSharing(nn.Module):
    """Innovation 5: a level-shared light block, admitted per level by a similarity gate."""

    def __init__(self, channels: int = 32, groups: int = 4, levels: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1, groups=groups, bias=False)
        self.bn_dw = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(levels))
        self.bn_pw = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(levels))
        self.temperature = nn.Parameter(torch.full((levels,), 10.0))
        self.threshold = nn.Parameter(torch.full((levels,), 0.5))

    def gates(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``[B, 1, 1, 1]`` soft "similar enough to share" gate per level."""
        g = [gap(f) for f in feats]
        mean = g[0]
        for gi in g[1:]:
            mean = mean + gi
        mean = mean / len(g)
        return [
            torch.sigmoid(self.temperature[i] * (cosine_similarity(gi, mean) - self.threshold[i]))
            for i, gi in enumerate(g)
        ]

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, (f, a) in enumerate(zip(feats, self.gates(feats), strict=True)):
            h = F.relu(self.bn_dw[i](self.depthwise(f)))
            h = self.bn_pw[i](self.pointwise(h))
            out.append(f + a * h)
        return out


class V2UltraInnovations(nn.Module):
    """Innovations 1-5 in the card's order; only innovation 5 has parameters."""

    def __init__(self, channels: int = 32, groups: int = 4, attention_passes: int = 3) -> None:
        super().__init__()
        self.attention_passes = attention_passes
        self.dynamic_sharing = DynamicWeightSharing(channels, groups)

    def forward(self, feats: Sequence[torch.Tensor], attend: Attend) -> list[torch.Tensor]:
        x = smart_feature_reuse(feats, attend)
        x = [attention_multiplication(f, attend, self.attention_passes) for f in x]
        x = progressive_enhancement(x)
        x = multi_scale_intelligence(x)
        return self.dynamic_sharing(x)
