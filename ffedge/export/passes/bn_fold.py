"""Fold every inference-mode BatchNorm into the conv that feeds it; drop the identities left.

``BN(conv(x)) = conv'(x)`` with ``W' = W * g / sqrt(var + eps)`` per output channel and
``b' = (b - mean) * g / sqrt(var + eps) + beta``. Pairs are found structurally: adjacent in a
``Sequential`` (conv, depthwise conv, DCN), or a ``(conv, bn)`` attribute pair listed in
:data:`ATTRIBUTE_PAIRS` that the owning module applies back to back. ONNX simplifiers fold
Conv+BN too, but not into DCN nor for every converter (LiteRT, NNCF see the torch graph).
"""

from __future__ import annotations

import torch
from torch import nn

from ffedge.models.dcn import DeformableConv2d

#: (module class name, conv attribute path, bn attribute) applied as ``bn(conv(...))``.
ATTRIBUTE_PAIRS = (("SeparableConvBlock", "pointwise_conv.conv", "bn"),)


def folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv (with bias) computing ``bn(conv(x))`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, bias=True,
                    padding_mode=conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        new.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return new


def _foldable(bn: nn.Module) -> bool:
    return isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and not bn.training


def fold_batchnorm(net: nn.Module) -> int:
    """Fold in place; returns the number of BNs folded (each replaced by ``Identity``)."""
    n = 0
    for seq in list(net.modules()):
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                conv, bn = seq[i], seq[i + 1]
                if not _foldable(bn):
                    continue
                if type(conv) is nn.Conv2d:
                    seq[i] = folded_conv(conv, bn)
                elif isinstance(conv, DeformableConv2d):
                    conv.regular_conv = folded_conv(conv.regular_conv, bn)
                else:
                    continue
                seq[i + 1] = nn.Identity()
                n += 1
        for cls, conv_path, bn_attr in ATTRIBUTE_PAIRS:
            if type(seq).__name__ == cls and _foldable(getattr(seq, bn_attr, None)):
                owner_path, _, leaf = conv_path.rpartition(".")
                owner = seq.get_submodule(owner_path) if owner_path else seq
                setattr(owner, leaf, folded_conv(getattr(owner, leaf), getattr(seq, bn_attr)))
                setattr(seq, bn_attr, nn.Identity())
                n += 1
    return n


def drop_identities(net: nn.Module) -> int:
    """Remove ``Identity`` members from every ``Sequential`` (keeping at least one member)."""
    n = 0
    for seq in list(net.modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        names = [k for k, m in seq._modules.items() if isinstance(m, nn.Identity)]
        for k in names[: len(seq) - 1 if len(names) == len(seq) else len(names)]:
            del seq._modules[k]
            n += 1
    return n
