"""Merge each level's class, box and landmark 1x1 heads into one conv, one NHWC permute and
one concat over levels, with the 2-class softmax folded into the conv.

Today every level runs three ``Conv1x1Head`` (conv, permute, reshape) and the three outputs
are concatenated per task: 9 convs, 9 transposes, 9 reshapes, 3 concats and a Softmax. The
merged form runs one conv per level whose output channels are laid out anchor-major as
``[box 4 | score 2 | landmark 10]``, one permute+reshape to ``[B, cells*anchors, 16]``, one
concat over levels and three slices. The class rows are replaced by their differences
(``W1 - W0``, ``W0 - W1``): ``softmax([a, b]) == sigmoid([a - b, b - a])``, so the Softmax
becomes a Sigmoid and the module emits probabilities (``emits_scores = True``, which the
deploy wrapper honours); module paths, hence ONNX node names, stay as they were.

The heads are found by probing: each ``Conv1x1Head`` is hooked, a small input is run, and the
heads that read the same tensor form a level. A ``ChannelShuffle`` whose every output feeds
only heads is folded into the heads' input channels (:mod:`.shuffle_fold`).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import torch
from torch import nn

from ffedge.models.heads import Conv1x1Head

ROLES = {4: "box", 2: "cls", 10: "lmk"}
MERGED_WIDTH = 16  # 4 box + 2 score + 10 landmark values per prior


@dataclass
class Level:
    """The three heads that read one feature map, in the order the model concatenates."""

    heads: dict[str, str] = field(default_factory=dict)  # role -> qualified module name
    source: int = -1  # id() of the feature tensor during the probe


def probe_levels(net: nn.Module, size: int = 64) -> tuple[list[Level], dict[int, str]]:
    """Run ``net`` once on a ``size``x``size`` input and group its heads by input tensor.

    Returns the levels (in box-head call order) and, for every head input that a
    ``ChannelShuffle`` produced, ``{id(tensor): qualified shuffle name}``."""
    from ffedge.models.shuffle import ChannelShuffle

    calls: list[tuple[str, int, int]] = []  # (name, per_anchor, id(input))
    shuffled: dict[int, str] = {}
    keep: list[torch.Tensor] = []  # keep probe tensors alive so ids stay unique
    hooks = []
    for name, m in net.named_modules():
        if isinstance(m, Conv1x1Head):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, n=name: (calls.append((n, mod.per_anchor, id(args[0]))),
                                           keep.append(args[0])) and None))
        elif isinstance(m, ChannelShuffle):
            hooks.append(m.register_forward_hook(
                lambda mod, args, out, n=name: (shuffled.__setitem__(id(out), n),
                                                keep.append(out)) and None))
    try:
        with torch.no_grad():
            net(torch.rand(1, 3, size, size) * 255)
    finally:
        for h in hooks:
            h.remove()
    levels: dict[int, Level] = {}
    for name, per_anchor, src in calls:
        role = ROLES.get(per_anchor)
        if role is None:
            raise ValueError(f"head {name} predicts {per_anchor} values per anchor")
        lvl = levels.setdefault(src, Level(source=src))
        if role in lvl.heads:
            raise ValueError(f"two {role} heads read the same tensor ({name})")
        lvl.heads[role] = name
    out = list(levels.values())
    for role in ROLES.values():
        order = [n for n, p, _ in calls if ROLES[p] == role]
        if order != [lvl.heads.get(role) for lvl in out]:
            raise ValueError(f"{role} heads are not called level by level in one order")
    return out, {k: v for k, v in shuffled.items() if k in levels}


def merged_conv(box: nn.Conv2d, cls: nn.Conv2d, lmk: nn.Conv2d) -> nn.Conv2d:
    """One 1x1 conv, anchor-major ``[box 4 | sigmoid-logit 2 | landmark 10]`` rows."""
    anchors = box.out_channels // 4
    if cls.out_channels != 2 * anchors or lmk.out_channels != 10 * anchors:
        raise ValueError("heads of one level disagree on the anchor count")
    rows, biases = [], []
    for a in range(anchors):
        cw, cb = cls.weight[2 * a:2 * a + 2], _bias(cls)[2 * a:2 * a + 2]
        rows += [box.weight[4 * a:4 * a + 4], (cw[0] - cw[1])[None], (cw[1] - cw[0])[None],
                 lmk.weight[10 * a:10 * a + 10]]
        biases += [_bias(box)[4 * a:4 * a + 4], (cb[0] - cb[1])[None], (cb[1] - cb[0])[None],
                   _bias(lmk)[10 * a:10 * a + 10]]
    conv = nn.Conv2d(box.in_channels, MERGED_WIDTH * anchors, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.cat(rows))
        conv.bias.copy_(torch.cat(biases))
    return conv


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    return conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)


class _Tap(nn.Module):
    """Stands in for a head: records the level's feature map (box head only) and returns an
    empty ``[B, 0, k]`` so the model's own concatenation still runs (and is dead code)."""

    def __init__(self, per_anchor: int, level: int, sink: dict[int, torch.Tensor] | None):
        super().__init__()
        self.per_anchor, self.level = per_anchor, level
        self.sink = sink

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sink is not None:
            self.sink[self.level] = x
        return x.new_zeros((x.shape[0], 0, self.per_anchor))


def merged_forward(self: nn.Module, images: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``images -> (boxes, scores, landmarks)``, bound to the model by :func:`merge_heads`:
    the model's own forward computes the per-level features (its heads are taps, their
    outputs dead code the tracer drops), the merged convs predict everything at once."""
    sink = self.merged_head_sink
    sink.clear()
    type(self).forward(self, images)
    outs = []
    for i, conv in enumerate(self.merged_heads):
        y = conv(sink[i]).permute(0, 2, 3, 1)
        outs.append(y.reshape(y.shape[0], -1, MERGED_WIDTH))
    sink.clear()
    y = torch.cat(outs, dim=1)
    return y[..., :4], torch.sigmoid(y[..., 4:6]), y[..., 6:]


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def merge_heads(net: nn.Module, fold_shuffle: bool = True) -> nn.Module:
    """Rewrite ``net`` in place and return it: its heads become taps, ``net.merged_heads``
    holds one conv per level, ``net.forward`` is :func:`merged_forward` and
    ``net.emits_scores`` is True. Module paths (ONNX node names, INT8 scopes) are unchanged.
    Raises ``ValueError`` when the heads do not fit the pattern."""
    from ffedge.export.passes.shuffle_fold import shuffle_permutation

    levels, shuffled = probe_levels(net)
    if not levels or any(len(lvl.heads) != 3 for lvl in levels):
        raise ValueError("no class/box/landmark head triple per level")
    perms: dict[int, torch.Tensor] = {}
    if fold_shuffle and shuffled and len(shuffled) == len(levels):
        for i, lvl in enumerate(levels):
            channels = net.get_submodule(lvl.heads["box"]).conv1x1.in_channels
            perms[i] = shuffle_permutation(net.get_submodule(shuffled[lvl.source]), channels)
        for name in set(shuffled.values()):
            _set_module(net, name, nn.Identity())
    sink: dict[int, torch.Tensor] = {}
    convs = []
    for i, lvl in enumerate(levels):
        parts = {r: net.get_submodule(n).conv1x1 for r, n in lvl.heads.items()}
        conv = merged_conv(parts["box"], parts["cls"], parts["lmk"])
        if i in perms:
            with torch.no_grad():
                w = torch.empty_like(conv.weight)
                w[:, perms[i]] = conv.weight
                conv.weight.copy_(w)
        convs.append(conv)
        for role, name in lvl.heads.items():
            per_anchor = {"box": 4, "cls": 2, "lmk": 10}[role]
            _set_module(net, name, _Tap(per_anchor, i, sink if role == "box" else None))
    net.merged_heads = nn.ModuleList(convs)
    net.merged_head_sink = sink
    net.emits_scores = True
    net.forward = types.MethodType(merged_forward, net)
    return net
