"""The graph every exporter traces: the model plus softmax, with fixed output names."""

from __future__ import annotations

import torch
from torch import nn


class DeployWrapper(nn.Module):
    """``images -> (boxes, scores, landmarks)`` with scores as probabilities.

    ``nhwc=True`` takes ``[B, H, W, 3]`` input (mobile camera layout) and transposes inside
    the graph, so the artifact's input is NHWC.
    """

    def __init__(self, model: nn.Module, nhwc: bool = False) -> None:
        super().__init__()
        self.model = model
        self.nhwc = nhwc

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.nhwc:
            images = images.permute(0, 3, 1, 2)
        boxes, logits, landmarks = self.model(images)
        if getattr(self.model, "emits_scores", False):  # graph passes folded the softmax in
            return boxes, logits, landmarks
        return boxes, torch.softmax(logits, dim=-1), landmarks
