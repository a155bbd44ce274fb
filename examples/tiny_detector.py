"""A tiny RetinaFace-style face detector defined outside ffedge (a "bring your own model" example).

Export it like a zoo model::

    ffexport onnx --model-def examples/tiny_detector.py:build --imgsz 320
    ffexport onnx --model-def examples/tiny_detector.py:build --checkpoint my_weights.pth

What makes it fit (the contract in ``ffedge/models/user.py``): ``forward`` takes
``[B, 3, H, W]`` float32 and returns ``(boxes [B, P, 4], class logits [B, P, 2],
landmarks [B, P, 10])`` with ``P`` the priors of its spec (3 levels at strides 8/16/32,
2 anchors per cell), ordered level, row, column, anchor; the class output is raw logits
(ffedge appends the softmax). The spec travels as ``net.spec``.
"""

from __future__ import annotations

import torch
from torch import nn

from ffedge.spec import DeploymentSpec, PriorSpec

SPEC = DeploymentSpec(
    input_size=(640, 640), channel_order="BGR", mean=(104.0, 117.0, 123.0),
    std=(1.0, 1.0, 1.0), resize_mode="letterbox",
    priors=PriorSpec(steps=(8, 16, 32), min_sizes=((16, 32), (64, 128), (256, 512))),
)
ANCHORS = 2  # per cell, = len(min_sizes[level])


def conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class TinyDetector(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(conv_bn(3, w, 2), conv_bn(w, w, 2), conv_bn(w, w, 2))  # /8
        self.down16 = conv_bn(w, 2 * w, 2)
        self.down32 = conv_bn(2 * w, 4 * w, 2)
        chans = (w, 2 * w, 4 * w)
        self.box = nn.ModuleList(nn.Conv2d(c, ANCHORS * 4, 1) for c in chans)
        self.cls = nn.ModuleList(nn.Conv2d(c, ANCHORS * 2, 1) for c in chans)
        self.ldm = nn.ModuleList(nn.Conv2d(c, ANCHORS * 10, 1) for c in chans)

    @staticmethod
    def _flat(x: torch.Tensor, k: int) -> torch.Tensor:
        # [B, A*k, H, W] -> [B, H*W*A, k]: row, column, then anchor (RetinaFace's order)
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, k)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3 = self.stem(x)
        p4 = self.down16(p3)
        p5 = self.down32(p4)
        feats = (p3, p4, p5)
        boxes = torch.cat([self._flat(h(f), 4) for h, f in zip(self.box, feats)], dim=1)
        logits = torch.cat([self._flat(h(f), 2) for h, f in zip(self.cls, feats)], dim=1)
        landmarks = torch.cat([self._flat(h(f), 10) for h, f in zip(self.ldm, feats)], dim=1)
        return boxes, logits, landmarks


def build() -> TinyDetector:
    """The factory ``--model-def examples/tiny_detector.py:build`` calls."""
    net = TinyDetector()
    net.spec = SPEC
    return net
