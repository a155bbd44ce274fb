"""Initialising a model's MobileNetV1 ``body`` from an ImageNet (or detector) checkpoint.

The ImageNet MobileNetV1-0.25 training checkpoint keeps its weights under ``state_dict``
with ``module.stage{1,2,3}.*`` keys plus a classifier ``fc.*``; detector checkpoints use
``body.stage*``. Either way the backbone part loads strictly, so a width mismatch (a pruned
Nano-B body) fails with the offending keys named instead of loading half the weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ffedge.errors import CheckpointError
from ffedge.models.checkpoint import load_strict, read_state_dict, unwrap_state_dict

BACKBONE_STAGES = ("stage1", "stage2", "stage3")


def backbone_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``stage*`` tensors of a checkpoint, keyed as in ``MobileNetV1`` (no ``body.``)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        k = key[len("body."):] if key.startswith("body.") else key
        if k.split(".", 1)[0] in BACKBONE_STAGES:
            out[k] = value
    return out


def load_backbone(
    model: nn.Module, checkpoint: str | Path | Mapping[str, torch.Tensor]
) -> int:
    """Load the backbone weights of ``checkpoint`` into ``model.body``; returns tensor count."""
    if isinstance(checkpoint, (str, Path)):
        source = str(checkpoint)
        state_dict = read_state_dict(checkpoint)
    else:
        source = "checkpoint"
        state_dict = unwrap_state_dict(checkpoint)
    body = getattr(model, "body", None)
    if not isinstance(body, nn.Module):
        raise CheckpointError(f"{type(model).__name__} has no MobileNetV1 'body' to initialise")
    weights = backbone_state_dict(state_dict)
    if not weights:
        raise CheckpointError(f"{source} holds no backbone (stage1/2/3) weights")
    load_strict(body, weights, f"{getattr(model, 'model_name', '') or 'model'}.body", source)
    return len(weights)
