"""FeatherFace V2-CA: V1 plus coordinate attention on each SSH output (trained, 493,095 params).

The published ``featherface_v2_ca_widerface.pth`` (WIDER FACE, MIT) loads strictly: V1's
MobileNetV1-0.25 -> two BiFPN cells at 56 channels -> deformable SSH per level, then a
coordinate attention block per level (``ca_p3``, ``ca_p4``, ``ca_p5``) before V1's channel
shuffle and 1x1 heads. Same priors and input conventions as V1 (16,800 priors at 640x640).

Coordinate attention (Hou et al., CVPR 2021, in the trained variant): the map is averaged
along each axis (``[B, C, H, 1]`` and ``[B, C, 1, W]``), each profile goes through one
shared 1x1 conv (C -> C/32, at least 8) + BN + ReLU, then its own 1x1 conv back to C and a
sigmoid; the input is rescaled by both gates. The trained code transforms the two profiles
separately (no concatenation), which in eval mode equals the paper's concatenated form.
Directional pooling is written as ``mean`` over one axis with ``keepdim`` (ONNX ReduceMean),
not ``AdaptiveAvgPool2d((None, 1))``, so every converter sees a static reduction.
"""

from __future__ import annotations

import torch
from torch import nn

from ffedge.models.registry import register_model
from ffedge.models.v1 import V1_SPEC, FeatherFaceV1
from ffedge.spec import DeploymentSpec

V2_CA_SPEC = V1_SPEC
CA_REDUCTION = 32
CA_MIN_HIDDEN = 8


def ca_hidden(channels: int, reduction: int = CA_REDUCTION) -> int:
    """Width of the shared transform: ``channels // reduction``, at least 8 (56 -> 8)."""
    return max(channels // reduction, CA_MIN_HIDDEN)


class CoordinateAttention(nn.Module):
    """``x * sigmoid(conv_h(t(mean_w x))) * sigmoid(conv_w(t(mean_h x)))``, ``t`` shared.

    Key names (``conv_transform``, ``bn_transform``, ``conv_h``, ``conv_w``) are the trained
    checkpoint's; ``2 * C * hidden + C * hidden + 2 * hidden`` parameters (1,360 at C=56).
    """

    def __init__(self, channels: int, reduction: int = CA_REDUCTION) -> None:
        super().__init__()
        hidden = ca_hidden(channels, reduction)
        self.conv_transform = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn_transform = nn.BatchNorm2d(hidden)
        self.conv_h = nn.Conv2d(hidden, channels, 1, bias=False)
        self.conv_w = nn.Conv2d(hidden, channels, 1, bias=False)

    def _transform(self, profile: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn_transform(self.conv_transform(profile)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        along_h = x.mean(dim=3, keepdim=True)  # [B, C, H, 1]: one value per row
        along_w = x.mean(dim=2, keepdim=True)  # [B, C, 1, W]: one value per column
        gate_h = torch.sigmoid(self.conv_h(self._transform(along_h)))
        gate_w = torch.sigmoid(self.conv_w(self._transform(along_w)))
        return x * gate_h * gate_w


class FeatherFaceV2CA(FeatherFaceV1):
    model_name = "v2_ca"

    def __init__(self, spec: DeploymentSpec = V2_CA_SPEC, channels: int = 56) -> None:
        super().__init__(spec, channels)
        self.ca_p3 = CoordinateAttention(channels)
        self.ca_p4 = CoordinateAttention(channels)
        self.ca_p5 = CoordinateAttention(channels)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.bifpn(self.body(images))
        levels = zip(
            (self.ssh1, self.ssh2, self.ssh3), (self.ca_p3, self.ca_p4, self.ca_p5), feats
        )
        feats = [self.shuffle(ca(ssh(f))) for ssh, ca, f in levels]
        boxes = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        logits = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        landmarks = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        return boxes, logits, landmarks


@register_model(
    "v2_ca", V2_CA_SPEC, "FeatherFace V2-CA (0.49M, V1 + coordinate attention, trained)"
)
def build_v2_ca(state_dict: dict | None = None, spec: DeploymentSpec = V2_CA_SPEC
                ) -> FeatherFaceV2CA:
    return FeatherFaceV2CA(spec)
