"""Graph-level clean-ups done in torch before tracing.

ONNX simplifiers fuse BatchNorm into a preceding Conv, but not into DeformConv or the
GridSample+MatMul lowering; V1 has 15 such pairs. Folding them here removes 15 BN nodes
from every target and keeps the quantisers from trying to quantise bare BN weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ffedge.models.dcn import DeformableConv2d


def _fold_into(dcn: DeformableConv2d, bn: nn.BatchNorm2d) -> None:
    conv = dcn.regular_conv
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, bias=True)
    with torch.no_grad():
        new.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        new.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    dcn.regular_conv = new


def fold_dcn_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` (eval mode) with every ``Sequential(DCN, BN, ...)`` folded.
    Returns (model, number of folds); the original is untouched."""
    if not any(isinstance(m, DeformableConv2d) for m in model.modules()):
        return model, 0
    model = copy.deepcopy(model).eval()
    n = 0
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            if isinstance(seq[i], DeformableConv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                _fold_into(seq[i], seq[i + 1])
                seq[i + 1] = nn.Identity()
                n += 1
    return model, n
