"""Modulated deformable convolution (DCNv2) in plain torch, exportable two ways.

Eager and traced execution use bilinear sampling through ``grid_sample`` (samples outside
the map contribute zero, as in DCNv2), then one MatMul with the conv weight. During ONNX
export the lowering is chosen per module:

- ``"gridsample"`` — the same GridSample + MatMul graph, for runtimes without DeformConv
  (OpenVINO, TFLite converters);
- ``"native"`` — the ONNX ``DeformConv`` op (opset >= 19), which onnxruntime runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DCN_LOWERINGS = ("native", "gridsample")


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    padding: int = 1,
    dilation: int = 1,
) -> torch.Tensor:
    """DCNv2: offsets laid out as (dy, dx) per tap, tap k = kw*i + j; mask per tap."""
    b, c, h, w = x.shape
    cout, cin, kh, kw = weight.shape
    k = kh * kw
    ho, wo = offset.shape[-2], offset.shape[-1]
    dev, dt = x.device, x.dtype
    base_y = torch.arange(ho, device=dev, dtype=dt) * stride - padding
    base_x = torch.arange(wo, device=dev, dtype=dt) * stride - padding
    tap_y = (torch.arange(kh, device=dev, dtype=dt) * dilation).repeat_interleave(kw)
    tap_x = (torch.arange(kw, device=dev, dtype=dt) * dilation).repeat(kh)
    off = offset.reshape(b, k, 2, ho, wo)
    py = base_y.reshape(1, 1, ho, 1) + tap_y.reshape(1, k, 1, 1) + off[:, :, 0]
    px = base_x.reshape(1, 1, 1, wo) + tap_x.reshape(1, k, 1, 1) + off[:, :, 1]
    # pixel index -> grid_sample's normalised coordinates (align_corners=False)
    gx = (2.0 * px + 1.0) / w - 1.0
    gy = (2.0 * py + 1.0) / h - 1.0
    grid = torch.stack((gx, gy), dim=-1).reshape(b, k * ho, wo, 2)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    cols = sampled.reshape(b, c, k, ho * wo) * mask.reshape(b, 1, k, ho * wo)
    out = torch.matmul(weight.reshape(cout, cin * k), cols.reshape(b, c * k, ho * wo))
    out = out.reshape(b, cout, ho, wo)
    if bias is not None:
        out = out + bias.reshape(1, cout, 1, 1)
    return out


class _NativeDeformConv(torch.autograd.Function):
    """Computes like :func:`deform_conv2d`; exports as the ONNX ``DeformConv`` op."""

    @staticmethod
    def forward(ctx, x, weight, offset, mask, bias, stride, padding, dilation):  # noqa: D102
        # Compute outside the tracer: the exporter must see one opaque op, not the
        # sampling subgraph (whose inlined form breaks the TorchScript peephole pass).
        state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            return deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)
        finally:
            torch._C._set_tracing_state(state)

    @staticmethod
    def symbolic(g, x, weight, offset, mask, bias, stride, padding, dilation):  # noqa: D102
        kh, kw = 3, 3
        wt = weight.type()
        if wt is not None and hasattr(wt, "sizes") and wt.sizes() is not None:
            kh, kw = wt.sizes()[2], wt.sizes()[3]
        return g.op(
            "DeformConv",
            x,
            weight,
            offset,
            bias,
            mask,
            dilations_i=[dilation, dilation],
            group_i=1,
            kernel_shape_i=[kh, kw],
            offset_group_i=1,
            pads_i=[padding, padding, padding, padding],
            strides_i=[stride, stride],
        )


class DeformableConv2d(nn.Module):
    """DCNv2 block with the published FeatherFace key names.

    ``offset_conv`` (3x3, bias) predicts 2*k offsets, ``modulator_conv`` k mask logits
    (mask = 2*sigmoid), ``regular_conv`` holds the deformable kernel (no bias).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
        padding: int = 1, bias: bool = False,
    ) -> None:
        super().__init__()
        k = kernel_size * kernel_size
        self.stride = stride
        self.padding = padding
        self.offset_conv = nn.Conv2d(in_channels, 2 * k, kernel_size, stride, padding, bias=True)
        self.modulator_conv = nn.Conv2d(in_channels, k, kernel_size, stride, padding, bias=True)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)
        nn.init.zeros_(self.modulator_conv.weight)
        nn.init.zeros_(self.modulator_conv.bias)
        self.lowering = "gridsample"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x)
        mask = 2.0 * torch.sigmoid(self.modulator_conv(x))
        weight, bias = self.regular_conv.weight, self.regular_conv.bias
        if self.lowering == "native" and torch.onnx.is_in_onnx_export():
            if bias is None:
                bias = torch.zeros(weight.shape[0], dtype=x.dtype, device=x.device)
            return _NativeDeformConv.apply(
                x, weight, offset, mask, bias, self.stride, self.padding, 1
            )
        return deform_conv2d(x, offset, mask, weight, bias, self.stride, self.padding)


def set_dcn_lowering(model: nn.Module, lowering: str) -> int:
    """Choose how every DCN in ``model`` exports; returns how many modules it set."""
    if lowering not in DCN_LOWERINGS:
        raise ValueError(f"DCN lowering must be one of {DCN_LOWERINGS}, not {lowering!r}")
    n = 0
    for m in model.modules():
        if isinstance(m, DeformableConv2d):
            m.lowering = lowering
            n += 1
    return n


def has_dcn(model: nn.Module) -> bool:
    return any(isinstance(m, DeformableConv2d) for m in model.modules())
