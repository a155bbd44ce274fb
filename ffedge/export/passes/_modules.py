"""Swap modules of one exact type in place, the way every torch-level pass does."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def replace_modules(net: nn.Module, kind: type, make: Callable[[nn.Module], nn.Module]) -> int:
    """Replace every child whose type is exactly ``kind`` by ``make(child)``; returns how many."""
    n = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is kind:
                setattr(parent, name, make(child))
                n += 1
    return n
