"""FeatherFace V1: the ~0.49M-parameter WIDER FACE teacher.

MobileNetV1-0.25 -> two BiFPN cells at 56 channels -> deformable SSH per level -> channel
shuffle (2 groups, even-then-odd) -> 1x1 heads, 2 anchors per cell. Module names are the
published checkpoint's, so ``featherface_v1_widerface.pth`` loads with ``strict=True``.
"""

from __future__ import annotations

import torch
from torch import nn

from ffedge.models.base import FaceDetector
from ffedge.models.bifpn import BiFPNCell
from ffedge.models.heads import bbox_head, class_head, landmark_head
from ffedge.models.mobilenet import MobileNetV1
from ffedge.models.registry import register_model
from ffedge.models.shuffle import ChannelShuffle
from ffedge.models.ssh import SSH, deformable_conv3x3
from ffedge.spec import DeploymentSpec
from ffedge.specs import V1_SPEC


class FeatherFaceV1(FaceDetector):
    model_name = "v1"

    def __init__(self, spec: DeploymentSpec = V1_SPEC, channels: int = 56) -> None:
        super().__init__(spec)
        anchors = spec.priors.anchors_per_level
        self.body = MobileNetV1()
        self.bifpn = nn.Sequential(
            BiFPNCell(channels, self.body.out_channels), BiFPNCell(channels)
        )
        self.ssh1 = SSH(channels, channels, deformable_conv3x3)
        self.ssh2 = SSH(channels, channels, deformable_conv3x3)
        self.ssh3 = SSH(channels, channels, deformable_conv3x3)
        self.shuffle = ChannelShuffle(2, order="split")
        self.ClassHead = nn.ModuleList(class_head(channels, a) for a in anchors)
        self.BboxHead = nn.ModuleList(bbox_head(channels, a) for a in anchors)
        self.LandmarkHead = nn.ModuleList(landmark_head(channels, a) for a in anchors)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.bifpn(self.body(images))
        feats = [
            self.shuffle(ssh(f)) for ssh, f in zip((self.ssh1, self.ssh2, self.ssh3), feats)
        ]
        boxes = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        logits = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        landmarks = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        return boxes, logits, landmarks


@register_model("v1", V1_SPEC, "FeatherFace V1 (0.49M, deformable SSH, WIDER FACE teacher)")
def build_v1(state_dict: dict | None = None, spec: DeploymentSpec = V1_SPEC) -> FeatherFaceV1:
    return FeatherFaceV1(spec)
