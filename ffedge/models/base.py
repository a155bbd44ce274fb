"""The contract every FeatherFace model follows."""

from __future__ import annotations

from torch import nn

from ffedge.spec import DeploymentSpec


class FaceDetector(nn.Module):
    """Base class: ``forward(images) -> (boxes_delta, class_logits, landmarks_delta)``.

    Shapes are ``[B, P, 4]``, ``[B, P, 2]`` and ``[B, P, 10]`` where ``P`` is
    ``self.spec.priors.num_priors(H, W)``; priors are ordered level by level, then row, column
    and anchor, exactly as :mod:`ffedge.decoder` generates them.
    """

    model_name: str = ""
    # Denormal weights zeroed when a checkpoint was loaded (ffedge.models.checkpoint.load_strict).
    denormals_flushed: int = 0

    def __init__(self, spec: DeploymentSpec) -> None:
        super().__init__()
        self.spec = spec

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def component_parameters(self) -> dict[str, int]:
        """Parameters per top-level child, for docs/models.md."""
        return {
            name: sum(p.numel() for p in child.parameters())
            for name, child in self.named_children()
        }
