"""A TFLite-minded lowering of V1's deformable convs: bilinear sampling by row gathers.

litert-torch lowers ``grid_sample`` into index constants the size of the sampling grid times
the channels (V1 at 640x640: a 23 MB file, ~2.6 s per image on 2 threads) and, on a PT2E
quantised graph, fails in its ``grid_sampler_2d`` decomposition. Here the same DCNv2 maths
is written with ops every TFLite runtime has and whose constants are tiny:

1. sampling positions ``p = base + tap + offset`` per tap and output pixel (FLOOR, SUB);
2. for each of the 4 bilinear corners, a flat row index ``y * W + x`` (clamped) and a weight
   ``bilinear * in_bounds * mask`` (zero outside the map, like DCNv2 / grid_sample zeros);
3. one GATHER of C-channel rows from the feature map laid out ``[H*W, C]`` per corner;
4. the deformable kernel as one FULLY_CONNECTED over ``k*C`` features per output pixel.

Numerically it is :func:`ffedge.models.dcn.deform_conv2d` (same formula, other grouping of
sums): agreement ~1e-5 in float32.
"""

from __future__ import annotations

import torch
from torch import nn

from ffedge.models.dcn import DeformableConv2d


class Modulator(nn.Module):
    """``2 * sigmoid(conv(x))``, the DCNv2 mask, as its own module so INT8 export can keep it
    in float: TFLite fixes a quantised sigmoid's output scale at 1/256 and the converter then
    rejects the transposes around it ("same scale constraint")."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.sigmoid(self.conv(x))


class Sampler(nn.Module):
    """Steps 1-3: ``(rows [B*H*W, C], offset, mask) -> [B, Ho*Wo, k*C]`` sampled features.

    The feature map comes in as rows (made outside, in the quantised part of the graph):
    a 2-D input keeps litert-torch's NCHW->NHWC layout pass away from this module.

    A module of its own so INT8 export keeps it in float: positions, bilinear fractions and
    masks need more than 8 bits (a fraction quantised to 1/255 moves every sample)."""

    def __init__(self, kh: int, kw: int, stride: int, padding: int) -> None:
        super().__init__()
        self.kh, self.kw, self.stride, self.padding = kh, kw, stride, padding

    def forward(self, rows: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                h: int, w: int) -> torch.Tensor:
        b, c = offset.shape[0], rows.shape[1]
        kh, kw = self.kh, self.kw
        k = kh * kw
        ho, wo = offset.shape[-2], offset.shape[-1]
        dt = rows.dtype
        base_y = torch.arange(ho, dtype=dt) * self.stride - self.padding
        base_x = torch.arange(wo, dtype=dt) * self.stride - self.padding
        tap_y = torch.arange(kh, dtype=dt).repeat_interleave(kw)
        tap_x = torch.arange(kw, dtype=dt).repeat(kh)
        off = offset.reshape(b, k, 2, ho, wo)
        py = base_y.reshape(1, 1, ho, 1) + tap_y.reshape(1, k, 1, 1) + off[:, :, 0]
        px = base_x.reshape(1, 1, 1, wo) + tap_x.reshape(1, k, 1, 1) + off[:, :, 1]
        y0 = torch.floor(py)
        x0 = torch.floor(px)
        ly, lx = py - y0, px - x0
        first = (torch.arange(b).reshape(b, 1, 1, 1) * (h * w)).to(torch.int32)
        cols = None
        for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
            wy = ly if dy else 1.0 - ly
            wx = lx if dx else 1.0 - lx
            wgt = wy * wx * inside.to(dt) * mask.reshape(b, k, ho, wo)
            idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).to(torch.int32) + first
            picked = rows.index_select(0, idx.reshape(-1)).reshape(b, k, ho * wo, c)
            term = picked * wgt.reshape(b, k, ho * wo, 1)
            cols = term if cols is None else cols + term
        # [B, k, HoWo, C] -> [B, HoWo, k*C] (k-major, C-minor)
        return cols.permute(0, 2, 1, 3).reshape(b, ho * wo, k * c)


class GatherDeformConv(nn.Module):
    """Drop-in for a :class:`DeformableConv2d` (shares its convs; dilation 1)."""

    def __init__(self, dcn: DeformableConv2d) -> None:
        super().__init__()
        self.offset_conv = dcn.offset_conv
        self.modulator = Modulator(dcn.modulator_conv)
        self.regular_conv = dcn.regular_conv
        _, _, kh, kw = dcn.regular_conv.weight.shape
        self.sampler = Sampler(kh, kw, int(dcn.stride), int(dcn.padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x)
        mask = self.modulator(x)
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(b * h * w, c)
        feats = self.sampler(rows, offset, mask, h, w)
        weight, bias = self.regular_conv.weight, self.regular_conv.bias
        cout = weight.shape[0]
        ho, wo = offset.shape[-2], offset.shape[-1]
        # the kernel reordered to the features' (k-major, C-minor) order: one FULLY_CONNECTED
        kernel = weight.permute(0, 2, 3, 1).reshape(cout, -1)
        out = nn.functional.linear(feats, kernel, bias)
        return out.reshape(b, ho, wo, cout).permute(0, 3, 1, 2)


def use_gather_dcn(model: nn.Module) -> int:
    """Replace every :class:`DeformableConv2d` in ``model`` (in place) by
    :class:`GatherDeformConv`; returns how many were replaced."""
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, DeformableConv2d):
                setattr(parent, name, GatherDeformConv(child))
                n += 1
    return n
