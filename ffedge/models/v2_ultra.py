"""FeatherFace V2 Ultra: the ~0.25M-parameter, V1-compatible-output lightweight family.

MobileNetV1-0.25 -> CBAM_Plus per backbone level (reduction 32) -> BiFPN_Light (32 ch,
2 layers, shared depthwise-separable convs) -> one shared CBAM_Plus on the BiFPN outputs ->
the five V2 innovations (:mod:`ffedge.models.v2_innovations`) -> SSH_Grouped (groups 4) ->
channel shuffle (4 groups) -> SharedMultiHead per level, 2 anchors per cell. Same prior and
input conventions as V1 (16,800 priors at 640x640), so V1's decoder settings carry over.
See docs/models.md for the parameter table and how the card's ambiguities were resolved.
"""

from __future__ import annotations

import torch
from torch import nn

from ffedge.models.base import FaceDetector
from ffedge.models.bifpn_light import BiFPNLight
from ffedge.models.cbam import CBAM, SharedCBAM
from ffedge.models.mobilenet import MobileNetV1
from ffedge.models.multihead import SharedMultiHead
from ffedge.models.registry import register_model
from ffedge.models.shuffle import ChannelShuffle
from ffedge.models.ssh import SSH, plain_conv3x3
from ffedge.models.v2_innovations import V2UltraInnovations
from ffedge.spec import DeploymentSpec
from ffedge.specs import V2_ULTRA_SPEC

V2_ULTRA_CARD_TOTAL = 244_483  # the card's headline count; the build stays within +-5%


class FeatherFaceV2Ultra(FaceDetector):
    model_name = "v2_ultra"

    def __init__(
        self,
        spec: DeploymentSpec = V2_ULTRA_SPEC,
        channels: int = 32,
        backbone_reduction: int = 32,
        bifpn_reduction: int = 8,
        groups: int = 4,
    ) -> None:
        super().__init__(spec)
        anchors = spec.priors.anchors_per_level
        self.body = MobileNetV1()
        self.backbone_cbam = nn.ModuleList(
            CBAM(c, backbone_reduction, residual=True) for c in self.body.out_channels
        )
        self.bifpn = BiFPNLight(self.body.out_channels, channels, layers=2)
        self.bifpn_cbam = SharedCBAM(channels, bifpn_reduction, residual=True)
        self.innovations = V2UltraInnovations(channels, groups)
        self.ssh = nn.ModuleList(
            SSH(channels, channels, plain_conv3x3(groups)) for _ in anchors
        )
        self.shuffle = ChannelShuffle(groups)
        self.heads = nn.ModuleList(SharedMultiHead(channels, a, channels // 2) for a in anchors)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = [cbam(f) for cbam, f in zip(self.backbone_cbam, self.body(images), strict=True)]
        feats = self.bifpn_cbam(self.bifpn(feats))
        feats = self.innovations(feats, self.bifpn_cbam.attend)
        outs = [
            head(self.shuffle(ssh(f)))
            for ssh, head, f in zip(self.ssh, self.heads, feats, strict=True)
        ]
        boxes = torch.cat([o[0] for o in outs], dim=1)
        logits = torch.cat([o[1] for o in outs], dim=1)
        landmarks = torch.cat([o[2] for o in outs], dim=1)
        return boxes, logits, landmarks


@register_model(
    "v2_ultra", V2_ULTRA_SPEC,
    "FeatherFace V2 Ultra (0.25M, CBAM + BiFPN_Light + 5 zero/low-param innovations)",
)
def build_v2_ultra(
    state_dict: dict | None = None, spec: DeploymentSpec = V2_ULTRA_SPEC
) -> FeatherFaceV2Ultra:
    return FeatherFaceV2Ultra(spec)
