"""FeatherFace Nano-B: a B-FPGM-pruned MobileNetV1-0.25 with a small-face P3 pipeline.

Pruned backbone (stage outputs 27/50/87 by default) -> differential pipeline:
P3: ScaleDecoupling -> CBAM -> BiFPN + MSE-FPN -> ASSN;
P4/P5: CBAM -> BiFPN + MSE-FPN -> CBAM;
then standard SSH (32->32) per level, channel shuffle (4 groups) and 1x1 heads with
3 anchors per cell (25,200 priors at 640x640).

Backbone widths are read from the checkpoint when one is given, and every width-dependent
layer (ScaleDecoupling, the backbone CBAMs, the BiFPN projections) is built from them, so
checkpoints pruned to other widths load without code changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ffedge.errors import CheckpointError
from ffedge.models.base import FaceDetector
from ffedge.models.bifpn_light import BiFPNLight
from ffedge.models.cbam import CBAM
from ffedge.models.heads import bbox_head, class_head, landmark_head
from ffedge.models.mobilenet import MNET025_WIDTHS, STAGE_ENDS, MobileNetV1, widths_from_state_dict
from ffedge.models.nano_modules import ASSN, MSEFPN, ScaleDecoupling
from ffedge.models.registry import register_model
from ffedge.models.shuffle import ChannelShuffle
from ffedge.models.ssh import SSH, plain_conv3x3
from ffedge.spec import DeploymentSpec
from ffedge.specs import NANO_B_SPEC

NANO_B_STAGE_WIDTHS: tuple[int, int, int] = (27, 50, 87)
STEM_CONVS = 2  # conv0 (3->8) and conv1 (8->16): 0.3% of the weights, never pruned


def pruned_widths(stage_widths: Sequence[int] = NANO_B_STAGE_WIDTHS) -> tuple[int, ...]:
    """Distribute pruning over the 14 convs given the three stage-output widths.

    Each stage's last conv gets the stage width (keep ratio ``k``); the stage's other convs
    keep ``min(1, 2k)`` of their filters (pruned half as hard: they carry the features the
    stage-end conv selects from); the 8/16-filter stem is kept. For 27/50/87 this gives
    ``(8, 16, 27, 27, 54, 27, 100, 100, 100, 100, 100, 50, 174, 87)`` - conv2 at 27 is the
    card's "PrunedConv2d(16, 27) (pruned 32->27)".
    """
    ends = [MNET025_WIDTHS[e - 1] for e in STAGE_ENDS]
    widths: list[int] = []
    start = 0
    for stage, end in enumerate(STAGE_ENDS):
        keep = stage_widths[stage] / ends[stage]
        for i in range(start, end):
            if i == end - 1:
                widths.append(int(stage_widths[stage]))
            elif i < STEM_CONVS:
                widths.append(MNET025_WIDTHS[i])
            else:
                widths.append(max(1, min(MNET025_WIDTHS[i], round(MNET025_WIDTHS[i] * 2 * keep))))
        start = end
    return tuple(widths)


NANO_B_WIDTHS = pruned_widths()



class FeatherFaceNanoB(FaceDetector):
    model_name = "nano_b"

    def __init__(
        self,
        spec: DeploymentSpec = NANO_B_SPEC,
        backbone_widths: Sequence[int] = NANO_B_WIDTHS,
        channels: int = 32,
        cbam_reduction: int = 16,
        groups: int = 4,
    ) -> None:
        super().__init__(spec)
        anchors = spec.priors.anchors_per_level
        self.body = MobileNetV1(backbone_widths)
        c3, c4, c5 = self.body.out_channels
        self.scale_decoupling = ScaleDecoupling(c3)
        self.backbone_cbam = nn.ModuleList(CBAM(c, cbam_reduction) for c in (c3, c4, c5))
        self.bifpn = BiFPNLight((c3, c4, c5), channels, layers=1)
        self.mse_fpn = MSEFPN(channels)
        self.assn = ASSN(channels)
        self.output_cbam = nn.ModuleList(CBAM(channels, cbam_reduction) for _ in range(2))
        self.ssh = nn.ModuleList(SSH(channels, channels, plain_conv3x3()) for _ in anchors)
        self.shuffle = ChannelShuffle(groups)
        self.ClassHead = nn.ModuleList(class_head(channels, a) for a in anchors)
        self.BboxHead = nn.ModuleList(bbox_head(channels, a) for a in anchors)
        self.LandmarkHead = nn.ModuleList(landmark_head(channels, a) for a in anchors)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3, c4, c5 = self.body(images)
        c3 = self.scale_decoupling(c3)
        feats = [cbam(f) for cbam, f in zip(self.backbone_cbam, (c3, c4, c5), strict=True)]
        p3, p4, p5 = self.mse_fpn(self.bifpn(feats))
        feats = [self.assn((p3, p4, p5)), self.output_cbam[0](p4), self.output_cbam[1](p5)]
        feats = [self.shuffle(ssh(f)) for ssh, f in zip(self.ssh, feats, strict=True)]
        boxes = torch.cat([h(f) for h, f in zip(self.BboxHead, feats, strict=True)], dim=1)
        logits = torch.cat([h(f) for h, f in zip(self.ClassHead, feats, strict=True)], dim=1)
        landmarks = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats, strict=True)], dim=1)
        return boxes, logits, landmarks


@register_model(
    "nano_b", NANO_B_SPEC,
    "FeatherFace Nano-B (~0.15M, pruned backbone, small-face P3 pipeline, 3 anchors/cell)",
)
def build_nano_b(
    state_dict: dict | None = None,
    spec: DeploymentSpec = NANO_B_SPEC,
    backbone_widths: Sequence[int] | None = None,
    stage_widths: Sequence[int] | None = None,
) -> FeatherFaceNanoB:
    """Widths come from the checkpoint (``body.*`` shapes), else an override, else default.

    ``backbone_widths`` gives all 14 conv widths; ``stage_widths`` gives the three stage
    outputs and lets :func:`pruned_widths` distribute the rest.
    """
    if backbone_widths is None and stage_widths is not None:
        backbone_widths = pruned_widths(stage_widths)
    widths = tuple(backbone_widths) if backbone_widths is not None else NANO_B_WIDTHS
    if state_dict is not None:
        found = widths_from_state_dict(state_dict, "body.")
        if backbone_widths is not None and tuple(backbone_widths) != found:
            raise CheckpointError(
                f"backbone_widths={tuple(backbone_widths)} disagree with the checkpoint's "
                f"backbone widths {found}"
            )
        widths = found
    return FeatherFaceNanoB(spec, widths)
