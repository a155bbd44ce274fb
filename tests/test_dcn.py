"""The plain-torch DCNv2 against a direct per-tap bilinear reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ffedge.models.dcn import DeformableConv2d, deform_conv2d


def bilinear_zero(img: np.ndarray, y: float, x: float) -> np.ndarray:
    """Sample img[C,H,W] at (y, x); corners outside the map contribute zero (DCNv2)."""
    c, h, w = img.shape
    y0, x0 = math.floor(y), math.floor(x)
    out = np.zeros(c)
    for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
        wgt = (1 - abs(y - yy)) * (1 - abs(x - xx))
        if 0 <= yy < h and 0 <= xx < w and wgt > 0:
            out += wgt * img[:, yy, xx]
    return out


def reference_dcn(x, offset, mask, weight, bias, stride=1, pad=1):
    b, c, h, w = x.shape
    cout, _, kh, kw = weight.shape
    ho, wo = offset.shape[2:]
    out = np.zeros((b, cout, ho, wo))
    for n in range(b):
        for oy in range(ho):
            for ox in range(wo):
                acc = np.zeros(cout)
                for i in range(kh):
                    for j in range(kw):
                        k = i * kw + j
                        py = oy * stride - pad + i + offset[n, 2 * k, oy, ox]
                        px = ox * stride - pad + j + offset[n, 2 * k + 1, oy, ox]
                        v = bilinear_zero(x[n], py, px) * mask[n, k, oy, ox]
                        acc += weight[:, :, i, j] @ v
                out[n, :, oy, ox] = acc + (bias if bias is not None else 0)
    return out


@pytest.mark.parametrize("seed,scale", [(0, 0.7), (1, 3.0), (2, 9.0)])
def test_matches_per_tap_reference(seed, scale):
    """Offsets up to +-9 px on a 6x7 map: many taps fall partly or wholly outside."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64)
    offset = torch.randn(2, 18, 6, 7, generator=g, dtype=torch.float64) * scale
    mask = 2 * torch.sigmoid(torch.randn(2, 9, 6, 7, generator=g, dtype=torch.float64))
    weight = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    got = deform_conv2d(x, offset, mask, weight, bias).numpy()
    want = reference_dcn(x.numpy(), offset.numpy(), mask.numpy(), weight.numpy(), bias.numpy())
    assert np.abs(got - want).max() < 1e-9
    outside = (offset.abs() > 7).float().mean().item()
    if scale > 3:
        assert outside > 0.05  # the case really samples outside the map


def test_integer_offsets_outside_give_zero():
    x = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    offset = torch.full((1, 18, 4, 4), 100.0, dtype=torch.float64)
    mask = torch.ones(1, 9, 4, 4, dtype=torch.float64)
    w = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    assert torch.all(deform_conv2d(x, offset, mask, w) == 0)


def test_zero_offsets_equal_conv_scaled_by_mask():
    torch.manual_seed(0)
    m = DeformableConv2d(5, 6).eval()
    x = torch.randn(1, 5, 9, 11)
    with torch.no_grad():
        got = m(x)
        # fresh module: offsets 0, mask = 2*sigmoid(0) = 1 -> a plain 3x3 conv
        want = torch.nn.functional.conv2d(x, m.regular_conv.weight, padding=1)
    assert torch.allclose(got, want, atol=1e-5)


def test_module_uses_2_sigmoid_mask():
    torch.manual_seed(0)
    m = DeformableConv2d(2, 2).eval()
    torch.nn.init.constant_(m.modulator_conv.bias, 3.0)
    x = torch.randn(1, 2, 5, 5)
    with torch.no_grad():
        got = m(x)
        want = torch.nn.functional.conv2d(x, m.regular_conv.weight, padding=1) * 2 * torch.sigmoid(torch.tensor(3.0))
    assert torch.allclose(got, want, atol=1e-5)
