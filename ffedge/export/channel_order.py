"""Serve a model in the other channel order (BGR <-> RGB) at zero cost.

The zoo's models take BGR; phone cameras, MediaPipe and the TFLite metadata schema speak
RGB. When the input goes straight into one 3-channel convolution, reversing that conv's
input-channel axis makes it take RGB exactly: ``conv(W, flip(x)) == conv(flip_in(W), x)``
(a permutation of the summands, no arithmetic added), and the per-channel mean/std are
reversed with it. A model whose input feeds anything else gets the flip as an op in front
instead (still exact).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ffedge.spec import DeploymentSpec

ORDERS = ("RGB", "BGR")
#: The folded model must agree with "flip, then the original" to this (scale-relative).
FOLD_TOLERANCE = 1e-4


class ChannelFlip(nn.Module):
    """``model(x.flip(1))``: an NCHW model served in the other channel order; ``spec`` is
    the flipped spec (a :class:`~ffedge.runtimes.torch_runner.TorchRunner` reads it)."""

    def __init__(self, model: nn.Module, spec: DeploymentSpec) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.emits_scores = bool(getattr(model, "emits_scores", False))

    def forward(self, images: torch.Tensor) -> Any:
        return self.model(images.flip(1))


def flipped_spec(spec: DeploymentSpec, order: str) -> DeploymentSpec:
    """``spec`` taking ``order`` pixels: mean and std reversed when the order changes."""
    if order == spec.channel_order:
        return spec
    return replace(spec, channel_order=order, mean=tuple(spec.mean[::-1]),
                   std=tuple(spec.std[::-1]))


def input_conv(net: nn.Module, spec: DeploymentSpec) -> nn.Conv2d | None:
    """The plain 3-channel conv the (NCHW) input goes straight into, or None."""
    x = torch.zeros(1, 3, *spec.input_size)
    hits: list[nn.Module] = []

    def hook(m: nn.Module, args: tuple, _out: Any) -> None:
        if args and args[0] is x and type(m) is nn.Conv2d:
            hits.append(m)

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    try:
        with torch.no_grad():
            net.eval()(x)
    finally:
        for h in handles:
            h.remove()
    convs = {id(m): m for m in hits}
    if len(convs) != 1:
        return None
    (conv,) = convs.values()
    ok = conv.in_channels == 3 and conv.groups == 1 and conv.padding_mode == "zeros"
    return conv if ok else None


def _agrees(a: Any, b: Any) -> bool:
    for u, v in zip(a, b):
        scale = max(1.0, float(u.abs().max()))
        if float((u - v).abs().max()) > FOLD_TOLERANCE * scale:
            return False
    return True


def fold_channel_flip(net: nn.Module, spec: DeploymentSpec) -> nn.Module | None:
    """A copy of ``net`` taking the other channel order, the flip folded into its input
    conv's weights; None when the input does not go straight into one plain conv (or the
    folded copy does not match flip-then-``net`` on a random input)."""
    if input_conv(net, spec) is None:
        return None
    folded = copy.deepcopy(net).eval()
    conv = input_conv(folded, spec)
    assert conv is not None
    with torch.no_grad():
        conv.weight.copy_(conv.weight.flip(1))
        x = torch.randn(1, 3, *spec.input_size, generator=torch.Generator().manual_seed(0)) * 60
        if not _agrees(net.eval()(x.flip(1)), folded(x)):
            return None
    return folded


def serve_in_order(net: nn.Module, spec: DeploymentSpec, order: str
                   ) -> tuple[nn.Module, DeploymentSpec, str]:
    """(module taking ``order`` pixels, its spec, how: "as trained" | "folded into the
    first conv" | "flip op in the graph"). ``net`` itself is never modified."""
    order = order.upper()
    if order not in ORDERS:
        raise ValueError(f"channel order must be one of {ORDERS}, not {order!r}")
    if order == spec.channel_order:
        return net, spec, "as trained"
    new_spec = flipped_spec(spec, order)
    folded = fold_channel_flip(net, spec)
    if folded is not None:
        return folded, new_spec, "folded into the first conv"
    return ChannelFlip(net, new_spec), new_spec, "flip op in the graph"
