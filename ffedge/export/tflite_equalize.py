"""Cross-layer equalisation of the MobileNetV1 backbone before TFLite INT8.

With BN folded, V1's stage-1 depthwise convs carry per-channel weights from ~0.01 up to
~52, and their activations spread the same way: one per-tensor int8 scale per activation
then leaves the small channels a few levels (V1 INT8 on LiteRT: F1 0.906 vs FP32 on the
held-out photos; 0.987 with the whole backbone float). Equalisation (Nagel et al. 2019)
rescales each pair of consecutive convs ``a -> LeakyReLU -> b`` inside a stage: output
channel ``i`` of ``a`` (weights and bias) by ``1/s_i`` and input channel ``i`` of ``b`` by
``s_i``, ``s_i = sqrt(r_a[i] / r_b[i])`` with ``r`` the channel's weight range. LeakyReLU is
positively homogeneous, so the float model is unchanged (up to rounding) while weight and
activation ranges per channel even out. Stage outputs (read by the FPN) are not rescaled.
"""

from __future__ import annotations

import torch
from torch import nn

from ffedge.export.passes.bn_fold import folded_conv
from ffedge.models.mobilenet import MobileNetV1

HOMOGENEOUS = (nn.LeakyReLU, nn.ReLU, nn.Identity)


def _stage_convs(stage: nn.Sequential) -> list[nn.Conv2d] | None:
    """The stage's convs in order, BNs folded in place; None if something else sits
    between two convs (then the stage is left alone)."""
    convs: list[nn.Conv2d] = []
    for block in stage:
        mods = list(block) if isinstance(block, nn.Sequential) else [block]
        for i, m in enumerate(mods):
            if isinstance(m, nn.BatchNorm2d):
                if not isinstance(mods[i - 1], nn.Conv2d) or i == 0:
                    return None
                block[i - 1] = folded_conv(block[i - 1], m)
                block[i] = nn.Identity()
                convs[-1] = block[i - 1]
            elif type(m) is nn.Conv2d:
                convs.append(m)
            elif not isinstance(m, HOMOGENEOUS):
                return None
    return convs


def _equalise_pair(a: nn.Conv2d, b: nn.Conv2d) -> None:
    wa, wb = a.weight, b.weight
    ra = wa.abs().amax(dim=(1, 2, 3))
    if b.groups == b.in_channels == b.out_channels:  # depthwise: channel i -> channel i
        rb = wb.abs().amax(dim=(1, 2, 3))
        shape_b = (-1, 1, 1, 1)
    elif b.groups == 1:
        rb = wb.abs().amax(dim=(0, 2, 3))
        shape_b = (1, -1, 1, 1)
    else:
        return
    s = torch.sqrt(ra.clamp_min(1e-8) / rb.clamp_min(1e-8)).clamp(1e-4, 1e4)
    with torch.no_grad():
        a.weight.div_(s.reshape(-1, 1, 1, 1))
        if a.bias is not None:
            a.bias.div_(s)
        b.weight.mul_(s.reshape(shape_b))


def equalise_backbone(net: nn.Module, rounds: int = 3) -> int:
    """Equalise every MobileNetV1 stage in ``net`` in place; returns the pairs equalised."""
    pairs = 0
    for body in [m for m in net.modules() if isinstance(m, MobileNetV1)]:
        for stage in (body.stage1, body.stage2, body.stage3):
            convs = _stage_convs(stage)
            if not convs:
                continue
            for _ in range(rounds):
                for a, b in zip(convs, convs[1:], strict=False):
                    _equalise_pair(a, b)
            pairs += len(convs) - 1
    return pairs
