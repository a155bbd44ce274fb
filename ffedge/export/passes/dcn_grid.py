"""Deformable convs with fewer, fatter ops: mask scale in the weights, affine sampling grid,
and the deformable kernel as a 1x1 Conv.

``DeformableConv2d`` computes ``mask = 2 * sigmoid(m)`` and, in the GridSample lowering,
builds the sampling grid from the offsets with ~24 small ops (aranges, gathers, divides, a
stack) and applies the kernel as Reshape + MatMul. Here:

- the factor 2 moves into the kernel (exact: a power of two), for both lowerings;
- one conv for offsets and mask logits (both read the same 3x3 window), the offset rows
  reordered to ``(x, y)`` per tap (the native lowering keeps the original convs), so the
  grid is one chain of per-channel elementwise ops on the offsets,
  ``(2 * (offsets + positions) + 1) / (W|H) - 1`` (the reference's arithmetic, op for op:
  the grid is bit-identical; positions as two small broadcast constants), then one
  Reshape/Transpose/Reshape;
- the mask multiply and MatMul stay as in the reference, with a constant ``[Cout, C*k]``
  kernel. (Measured slower on OpenVINO: a 1x1 Conv over the ``C*k`` channels, and the mask
  as a ``[B, 1, k*Ho, Wo]`` broadcast; both reorder the big sampled map to a blocked layout.)

Same formula and op order as :func:`ffedge.models.dcn.deform_conv2d`, checked per pass by
the probe and in the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ffedge.export.passes._modules import replace_modules
from ffedge.models.dcn import DeformableConv2d, _NativeDeformConv


class AffineGridDCN(DeformableConv2d):
    """A :class:`DeformableConv2d` (so lowering selection still applies) in the fast form."""

    def __init__(self, dcn: DeformableConv2d) -> None:
        conv = dcn.regular_conv
        kh, kw = conv.kernel_size
        super().__init__(conv.in_channels, conv.out_channels, kh, dcn.stride, dcn.padding)
        self.kh, self.kw = kh, kw
        self.lowering = dcn.lowering
        k = kh * kw
        swap = torch.arange(2 * k).reshape(k, 2).flip(1).reshape(-1)  # (dy, dx) -> (dx, dy)
        # offsets as (x, y) per tap, then the mask logits: one conv over the shared 3x3 window
        # (and a Slice after it, which also keeps OpenVINO from folding the conv bias into
        # a per-DCN [2k, Ho, Wo] position constant)
        self.offset_mask = nn.Conv2d(conv.in_channels, 3 * k, (kh, kw), dcn.stride, dcn.padding)
        with torch.no_grad():
            self.offset_conv.load_state_dict(dcn.offset_conv.state_dict())
            self.modulator_conv.load_state_dict(dcn.modulator_conv.state_dict())
            self.offset_mask.weight.copy_(torch.cat((dcn.offset_conv.weight[swap],
                                                     dcn.modulator_conv.weight)))
            self.offset_mask.bias.copy_(torch.cat((dcn.offset_conv.bias[swap],
                                                   dcn.modulator_conv.bias)))
            self.regular_conv = nn.Conv2d(conv.in_channels, conv.out_channels, (kh, kw),
                                          dcn.stride, dcn.padding, bias=conv.bias is not None)
            self.regular_conv.weight.copy_(2.0 * conv.weight)
            if conv.bias is not None:
                self.regular_conv.bias.copy_(conv.bias)
        # the kernel over C*k sampled channels as a constant-shaped matrix
        self.kernel_2d = nn.Parameter(self.regular_conv.weight.detach().reshape(
            conv.out_channels, conv.in_channels * k).clone())

    def _offsets_and_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(offsets as (x, y) per tap, sigmoid mask)`` from the one offset+mask conv."""
        om = self.offset_mask(x)
        k2 = 2 * self.kh * self.kw
        return om[:, :k2], torch.sigmoid(om[:, k2:])

    def _grid_terms(self, h: int, w: int, ho: int, wo: int, like: torch.Tensor):
        """Per ``(x, y)`` channel pair the tap positions ``base + tap`` as two small broadcast
        constants — ``[2k, 1, Wo]`` (zero on y rows) and ``[2k, Ho, 1]`` (zero on x rows):
        ``off + along_x + along_y`` equals ``off + positions`` exactly (one term of every
        element is 0), without a ``[2k, Ho, Wo]`` constant per DCN in the file — and the
        divisor ``W|H``."""
        k = self.kh * self.kw
        dt, dev = like.dtype, like.device
        tap_y = torch.arange(self.kh, dtype=dt, device=dev).repeat_interleave(self.kw)
        tap_x = torch.arange(self.kw, dtype=dt, device=dev).repeat(self.kh)
        py = torch.arange(ho, dtype=dt, device=dev) * self.stride - self.padding
        px = torch.arange(wo, dtype=dt, device=dev) * self.stride - self.padding
        zx, zy = torch.zeros(k, 1, wo, dtype=dt, device=dev), torch.zeros(k, ho, 1, dtype=dt,
                                                                            device=dev)
        along_x = torch.stack((px.reshape(1, 1, wo) + tap_x.reshape(k, 1, 1), zx), dim=1)
        along_y = torch.stack((zy, py.reshape(1, ho, 1) + tap_y.reshape(k, 1, 1)), dim=1)
        size = torch.tensor([float(w), float(h)], dtype=dt, device=dev).repeat(k)
        return (along_x.reshape(2 * k, 1, wo), along_y.reshape(2 * k, ho, 1),
                size.reshape(2 * k, 1, 1))

    def _native(self, x: torch.Tensor) -> torch.Tensor:
        """The ONNX ``DeformConv`` lowering: original (dy, dx) offsets, the 2x kernel."""
        weight, bias = self.regular_conv.weight, self.regular_conv.bias
        if bias is None:
            bias = torch.zeros(weight.shape[0], dtype=x.dtype, device=x.device)
        mask = torch.sigmoid(self.modulator_conv(x))
        return _NativeDeformConv.apply(x, weight, self.offset_conv(x), mask, bias,
                                       self.stride, self.padding, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lowering == "native" and torch.onnx.is_in_onnx_export():
            return self._native(x)
        bias = self.regular_conv.bias
        b, c, h, w = x.shape
        off, mask = self._offsets_and_mask(x)
        k, (ho, wo) = self.kh * self.kw, off.shape[-2:]
        along_x, along_y, size = self._grid_terms(h, w, ho, wo, x)
        # the reference's arithmetic, op for op, so the grid is bit-identical
        grid = ((2.0 * (off + along_x + along_y) + 1.0) / size - 1.0).reshape(b, k, 2, ho, wo)
        grid = grid.permute(0, 1, 3, 4, 2)
        sampled = F.grid_sample(x, grid.reshape(b, k * ho, wo, 2), mode="bilinear",
                                padding_mode="zeros", align_corners=False)
        cols = (sampled.reshape(b, c, k, ho * wo) * mask.reshape(b, 1, k, ho * wo))
        cols = cols.reshape(b, c * k, ho * wo)
        out = torch.matmul(self.kernel_2d, cols).reshape(b, self.kernel_2d.shape[0], ho, wo)
        return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def affine_grid_dcn(net: nn.Module) -> int:
    """Replace every plain ``DeformableConv2d`` in place; returns how many."""
    return replace_modules(net, DeformableConv2d, AffineGridDCN)
