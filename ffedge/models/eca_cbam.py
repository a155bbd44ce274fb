"""FeatherFace ECA-CBAM: ECA channel attention + CBAM spatial attention (trained, 476,345 params).

The published ``featherface_eca_cbam_widerface.pth`` (WIDER FACE, MIT) loads strictly:
MobileNetV1-0.25 -> ECA-CBAM on each backbone level (64/128/256 ch) -> three BiFPN cells at
52 channels -> ECA-CBAM on each BiFPN output -> deformable SSH 52->52 per level -> V1's
channel shuffle (2 groups, even-then-odd) -> 1x1 heads, 2 anchors per cell. Same priors and
input conventions as V1 (16,800 priors at 640x640).

ECA-CBAM is sequential: ``y = x * sigmoid(conv1d_k(gap(x)))`` (ECA, Wang et al. CVPR 2020:
a k-tap 1-D conv across the channel axis of the pooled vector, k = odd(log2(C)/2 + 1/2):
3 for 52/64 channels, 5 for 128/256), then CBAM's spatial attention
``y * sigmoid(conv7x7([mean_c y, max_c y]))``. Global pooling is ``mean`` over (2, 3) with
keepdim (ReduceMean); the 1-D conv runs on the pooled vector laid out ``[B, 1, C]`` (one
ONNX Conv with a 1-D kernel, no dynamic shapes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ffedge.models.base import FaceDetector
from ffedge.models.bifpn import BiFPNCell
from ffedge.models.cbam import SpatialAttention
from ffedge.models.lightops import gap
from ffedge.models.mobilenet import MobileNetV1
from ffedge.models.registry import register_model
from ffedge.models.v1 import V1_SPEC, add_ssh_and_heads, ssh_and_heads
from ffedge.spec import DeploymentSpec

ECA_CBAM_SPEC = V1_SPEC
ECA_GAMMA, ECA_BETA = 2, 1


def eca_kernel_size(channels: int, gamma: int = ECA_GAMMA, beta: int = ECA_BETA) -> int:
    """ECA's adaptive kernel: ``int(log2(C)/gamma + beta/gamma)``, rounded up to odd."""
    k = int(abs(math.log2(channels) / gamma + beta / gamma))
    return k if k % 2 else k + 1


class ECA(nn.Module):
    """Channel gate ``sigmoid(conv1d_k(gap(x)))`` as ``[B, C, 1, 1]``; k parameters."""

    def __init__(self, channels: int, kernel_size: int | None = None) -> None:
        super().__init__()
        k = kernel_size or eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        pooled = gap(x).reshape(b, 1, c)  # the channel axis becomes the 1-D "length"
        return torch.sigmoid(self.conv(pooled)).reshape(b, c, 1, 1)


class ECACBAM(nn.Module):
    """Sequential ECA then CBAM spatial attention: ``y = x * Mc(x)``, out ``y * Ms(y)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.eca = ECA(channels)
        self.sam = SpatialAttention(7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.eca(x)
        return y * self.sam(y)


class FeatherFaceECACBAM(FaceDetector):
    model_name = "eca_cbam"

    def __init__(self, spec: DeploymentSpec = ECA_CBAM_SPEC, channels: int = 52,
                 bifpn_cells: int = 3) -> None:
        super().__init__(spec)
        anchors = spec.priors.anchors_per_level
        self.body = MobileNetV1()
        c3, c4, c5 = self.body.out_channels
        self.backbone_attention_0 = ECACBAM(c3)
        self.backbone_attention_1 = ECACBAM(c4)
        self.backbone_attention_2 = ECACBAM(c5)
        self.bifpn = nn.Sequential(
            BiFPNCell(channels, self.body.out_channels),
            *(BiFPNCell(channels) for _ in range(bifpn_cells - 1)),
        )
        self.bifpn_attention_0 = ECACBAM(channels)
        self.bifpn_attention_1 = ECACBAM(channels)
        self.bifpn_attention_2 = ECACBAM(channels)
        add_ssh_and_heads(self, channels, anchors)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        backbone_att = (self.backbone_attention_0, self.backbone_attention_1,
                        self.backbone_attention_2)
        feats = tuple(att(f) for att, f in zip(backbone_att, self.body(images)))
        bifpn_att = (self.bifpn_attention_0, self.bifpn_attention_1, self.bifpn_attention_2)
        feats = [att(f) for att, f in zip(bifpn_att, self.bifpn(feats))]
        return ssh_and_heads(self, feats)


@register_model(
    "eca_cbam", ECA_CBAM_SPEC,
    "FeatherFace ECA-CBAM (0.48M, ECA + CBAM spatial attention, 3 BiFPN cells, trained)",
)
def build_eca_cbam(state_dict: dict | None = None, spec: DeploymentSpec = ECA_CBAM_SPEC
                   ) -> FeatherFaceECACBAM:
    return FeatherFaceECACBAM(spec)
