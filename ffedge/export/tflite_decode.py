"""Decode-in-graph for mobile artifacts: priors baked in as constants, RetinaFace decode as
graph ops, so an app only thresholds the scores and runs NMS.

The formulas and their operation order are those of :mod:`ffedge.decoder.decode` (the
shared decoder), so the graph's boxes match the decoder's to float32 rounding. Outputs are
in coordinates normalised to the input size, which makes the app's mapping back to the
camera frame one multiply (or a letterbox scale) and keeps the model size-agnostic there.
"""

from __future__ import annotations

import torch
from torch import nn

from ffedge.spec import DeploymentSpec

#: What each decode-in-graph output means (written into the artifact's metadata).
DECODED_SEMANTICS: dict[str, str] = {
    "boxes": "[1,P,4] x1, y1, x2, y2 normalised to the input width/height (multiply by W, H)",
    "scores": "[1,P] face probability (softmax of the face class)",
    "landmarks": "[1,P,10] five (x, y) points normalised to the input width/height: left eye, "
    "right eye, nose, left and right mouth corner",
}


class DecodeInGraph(nn.Module):
    """``images -> {boxes, scores, landmarks}`` decoded, around a module that returns
    ``(box deltas [B,P,4], probabilities [B,P,2], landmark deltas [B,P,10])``.

    ``inner`` is :class:`~ffedge.export.wrapper.DeployWrapper` (float) or the PT2E-quantised
    graph of it; decoding stays in float either way (an int8 ``exp`` would wreck box sizes).
    """

    def __init__(self, inner: nn.Module, spec: DeploymentSpec) -> None:
        super().__init__()
        from ffedge.decoder.priors import generate_priors

        self.inner = inner
        priors = torch.from_numpy(generate_priors(spec.priors, *spec.input_size).copy())
        # [1, P, 2] each, used in exactly this shape by boxes and landmarks alike, so the
        # converter stores each once (P * 16 bytes in all) instead of one folded copy per
        # broadcast shape.
        self.register_buffer("centres", priors[None, :, :2].contiguous(), persistent=False)
        self.register_buffer("sizes", priors[None, :, 2:].contiguous(), persistent=False)
        self.v0 = float(spec.priors.variances[0])
        self.v1 = float(spec.priors.variances[1])

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        deltas, probs, lm = self.inner(images)
        c, s = self.centres, self.sizes
        wh = s * torch.exp(deltas[..., 2:] * self.v1)
        # Same order as the shared decoder: x1 = cx - w/2, then x2 = x1 + w.
        x1y1 = (c + deltas[..., :2] * self.v0 * s) - wh / 2
        boxes = torch.cat([x1y1, x1y1 + wh], dim=-1)
        b, p = lm.shape[0], lm.shape[1]
        # points first: [B*5, P, 2] meets the priors' [1, P, 2] by plain broadcasting
        d = lm.reshape(b, p, 5, 2).transpose(1, 2).reshape(b * 5, p, 2)
        points = (c + d * self.v0 * s).reshape(b, 5, p, 2).transpose(1, 2)
        return {"boxes": boxes, "scores": probs[..., 1], "landmarks": points.reshape(b, p, 10)}


class NamedOutputs(nn.Module):
    """The raw deployment graph with named outputs, so the ``.tflite`` signature says
    ``boxes``/``scores``/``landmarks`` instead of ``output_0``..."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        boxes, scores, landmarks = self.inner(images)
        return {"boxes": boxes, "scores": scores, "landmarks": landmarks}
