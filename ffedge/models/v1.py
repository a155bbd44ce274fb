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


def add_ssh_and_heads(model: nn.Module, channels: int, anchors: tuple[int, ...]) -> None:
    """V1's deformable SSH per level, the split channel shuffle and the three heads, under
    the checkpoint's names (``ssh1..3``, ``ClassHead``, ``BboxHead``, ``LandmarkHead``)."""
    model.ssh1 = SSH(channels, channels, deformable_conv3x3)
    model.ssh2 = SSH(channels, channels, deformable_conv3x3)
    model.ssh3 = SSH(channels, channels, deformable_conv3x3)
    model.shuffle = ChannelShuffle(2, order="split")
    model.ClassHead = nn.ModuleList(class_head(channels, a) for a in anchors)
    model.BboxHead = nn.ModuleList(bbox_head(channels, a) for a in anchors)
    model.LandmarkHead = nn.ModuleList(landmark_head(channels, a) for a in anchors)


def ssh_and_heads(model: nn.Module, feats) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes, class logits, landmarks) over all levels from the three fused features."""
    feats = [model.shuffle(ssh(f)) for ssh, f in zip((model.ssh1, model.ssh2, model.ssh3), feats)]
    boxes = torch.cat([h(f) for h, f in zip(model.BboxHead, feats)], dim=1)
    logits = torch.cat([h(f) for h, f in zip(model.ClassHead, feats)], dim=1)
    landmarks = torch.cat([h(f) for h, f in zip(model.LandmarkHead, feats)], dim=1)
    return boxes, logits, landmarks


class FeatherFaceV1(FaceDetector):
    model_name = "v1"

    def __init__(self, spec: DeploymentSpec = V1_SPEC, channels: int = 56) -> None:
        super().__init__(spec)
        anchors = spec.priors.anchors_per_level
        self.body = MobileNetV1()
        self.bifpn = nn.Sequential(
            BiFPNCell(channels, self.body.out_channels), BiFPNCell(channels)
        )
        add_ssh_and_heads(self, channels, anchors)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.bifpn(self.body(images))
        return ssh_and_heads(self, feats)


@register_model("v1", V1_SPEC, "FeatherFace V1 (0.49M, deformable SSH, WIDER FACE teacher)")
def build_v1(state_dict: dict | None = None, spec: DeploymentSpec = V1_SPEC) -> FeatherFaceV1:
    return FeatherFaceV1(spec)
