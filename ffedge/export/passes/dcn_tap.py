"""Deformable convs in tap-major form (level 2): the kernel before the sampling.

Bilinear sampling is linear and acts per channel, so it commutes with a 1x1 channel mix:
``sum_k W_k · sample_k(x) == sum_k sample_k(W_k · x)``. Instead of sampling all ``Cin``
input channels at ``k`` taps and contracting ``Cin·k -> Cout`` with one MatMul, the ``k``
kernel slices run first as **one MatMul** ``[k·Cout, Cin] x [Cin, H·W]`` (a 1x1 Conv would
compute the same, but OpenVINO writes convs channels-last and GridSample reads planar:
reordering the conv's ``k·Cout``-channel output cost more than the MatMul saves). The map
enters the MatMul as ``transpose([H·W, Cin])``, its channels-last view — the memory as
OpenVINO's convs leave it — so OpenVINO folds both transposes into the MatMul instead of
reordering ``x`` to planar first; the sampling grid likewise starts from the offsets'
channels-last view. The result is viewed as ``k`` images of ``Cout`` channels and
sampled by **one GridSample** (tap ``t``'s image at tap ``t``'s grid, batched), then masked
and summed over taps (Mul + ReduceSum). Zeros outside the map stay zeros (``W·0 = 0``; the
bias is added after the sum).

Sampled values per output pixel drop from ``Cin·k`` to ``Cout·k`` — V1's SSH convs have
``Cout <= Cin`` (56->28, 56->14, 14->14), 0.55x the samples — and the MatMul disappears.
The offset and mask logits come from the level-1 module's one ``3k``-row conv.

Exact in real arithmetic; in float32 the sums are grouped differently (~1e-7 relative),
so it is a level-2 form, checked by the probe like every pass. Only the GridSample lowering
changes; the native ``DeformConv`` lowering is the level-1 module's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ffedge.export.passes._modules import replace_modules
from ffedge.export.passes.dcn_grid import AffineGridDCN


class TapMajorDCN(AffineGridDCN):
    """An :class:`AffineGridDCN` whose GridSample lowering samples after the kernel."""

    def __init__(self, dcn: AffineGridDCN) -> None:  # noqa: D107 (documented above)
        nn.Module.__init__(self)  # not AffineGridDCN's: its weights are already rewritten
        self.stride, self.padding, self.lowering = dcn.stride, dcn.padding, dcn.lowering
        self.kh, self.kw = dcn.kh, dcn.kw
        # kept for the native lowering (ONNX DeformConv takes the (dy, dx) offsets and the
        # kernel itself) and for the bias
        self.offset_conv, self.modulator_conv = dcn.offset_conv, dcn.modulator_conv
        self.regular_conv = dcn.regular_conv  # [Cout, Cin, kh, kw], the mask's 2 inside
        cout, cin, kh, kw = dcn.regular_conv.weight.shape
        k = kh * kw
        self.offset_mask = dcn.offset_mask  # offsets as (x, y) per tap, then mask logits
        # row t*Cout + o = W[o, :, t // kw, t % kw]: tap-major, so the map splits per tap
        self.tap_kernel = nn.Parameter(dcn.regular_conv.weight.detach().permute(2, 3, 0, 1)
                                       .reshape(k * cout, cin).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lowering == "native" and torch.onnx.is_in_onnx_export():
            return self._native(x)
        b, _, h, w = x.shape
        k = self.kh * self.kw
        cout = self.tap_kernel.shape[0] // k
        off, mask = self._offsets_and_mask(x)
        ho, wo = off.shape[-2:]
        along_x, along_y, size = self._grid_terms(h, w, ho, wo, x)
        grid = (2.0 * (off + along_x + along_y) + 1.0) / size - 1.0  # [b, 2k, Ho, Wo]
        # channels-last as the offset conv leaves it, [Ho, Wo, k, 2], then one Transpose to
        # tap-major (OpenVINO: no reorder to planar before it; V1 1.01-1.03x)
        grid = grid.permute(0, 2, 3, 1).reshape(b, ho, wo, k, 2).permute(0, 3, 1, 2, 4)
        grid = grid.reshape(b * k, ho, wo, 2)
        # a MatMul, not a 1x1 Conv: OpenVINO runs convs channels-last, and GridSample reads
        # planar — a conv's k*Cout-channel output would need a reorder (V1 1.21x instead of
        # 1.26x). The map enters as the transpose of its channels-last view, [H*W, Cin]:
        # that is x's memory as OpenVINO's convs leave it, so the transposes fold into the
        # MatMul (transpose_b) instead of a reorder of x to planar (V1 1.26x -> 1.31x)
        rows = x.permute(0, 2, 3, 1).reshape(b, h * w, -1)
        taps = torch.matmul(self.tap_kernel, rows.transpose(1, 2)).reshape(b * k, cout, h, w)
        sampled = F.grid_sample(taps, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        sampled = sampled * mask.reshape(b * k, 1, ho, wo)
        out = sampled.reshape(b, k, cout, ho, wo).sum(dim=1)
        bias = self.regular_conv.bias
        return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def tap_major_dcn(net: nn.Module) -> int:
    """Replace every :class:`AffineGridDCN` (the level-1 form) in place; returns how many."""
    return replace_modules(net, AffineGridDCN, TapMajorDCN)
