"""The upstream FeatherFace V2-CA research class, exported by ffedge from its own files.

A worked "bring your own model" example (docs/models.md): the model code is the upstream
repository's (``upstream_featherface/v2_ca``: ``FeatherFaceV2Simple``), untouched; this file
only builds it::

    ffexport onnx --model-def examples/upstream_v2_ca.py:build \\
        --checkpoint ../shared/checkpoints/featherface_v2_ca_widerface.pth

Where the upstream code is: ``$FEATHERFACE_UPSTREAM`` (the folder holding ``v2_ca/``), else
``../shared/upstream_featherface`` next to this checkout.

torchvision: the upstream files import it for two things, ``IntermediateLayerGetter`` and
``torchvision.ops.deform_conv2d``. When torchvision is installed it is used as is. When it is
not (it does not install with the torch ffedge pins), a minimal stand-in is put in
``sys.modules`` while the upstream files import: a layer getter (named children, same
state_dict keys) and ``deform_conv2d`` adapted to ffedge's DCNv2
(:func:`ffedge.models.dcn.deform_conv2d`: bilinear sampling by grid_sample, zero outside the
map, torchvision's semantics), which traces to portable ONNX ops (GridSample + MatMul).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from collections import OrderedDict
from pathlib import Path

from torch import nn

from ffedge.models import wrap_user_model

DEFAULT_UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream_featherface"


def upstream_root() -> Path:
    return Path(os.environ.get("FEATHERFACE_UPSTREAM", DEFAULT_UPSTREAM))


# --- a torchvision stand-in, used only when torchvision is not installed ------------------

class LayerGetter(nn.ModuleDict):
    """torchvision's IntermediateLayerGetter: the children up to the last one returned."""

    def __init__(self, model: nn.Module, return_layers: dict) -> None:
        layers, left = OrderedDict(), set(return_layers)
        for name, child in model.named_children():
            layers[name] = child
            left.discard(name)
            if not left:
                break
        super().__init__(layers)
        self.return_layers = dict(return_layers)

    def forward(self, x):
        out = OrderedDict()
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


def _square(v) -> int:
    if isinstance(v, int):
        return v
    if v[0] != v[1]:
        raise ValueError(f"this stand-in handles square stride/padding/dilation only, not {v}")
    return int(v[0])


def deform_conv2d(input, offset, weight, bias=None, stride=1, padding=0, dilation=1,
                  mask=None):
    """torchvision.ops.deform_conv2d's signature over ffedge's DCNv2 (offset groups 1)."""
    import torch

    from ffedge.models.dcn import deform_conv2d as ours

    if mask is None:
        k = weight.shape[-2] * weight.shape[-1]
        mask = torch.ones(offset.shape[0], k, *offset.shape[-2:], dtype=input.dtype)
    return ours(input, offset, mask, weight, bias, _square(stride), _square(padding),
                _square(dilation))


def torchvision_stand_in() -> dict[str, types.ModuleType]:
    names = ("torchvision", "torchvision.models", "torchvision.models._utils",
             "torchvision.models.detection", "torchvision.models.detection.backbone_utils",
             "torchvision.ops")
    mods = {n: types.ModuleType(n) for n in names}
    mods["torchvision.models._utils"].IntermediateLayerGetter = LayerGetter
    mods["torchvision.ops"].deform_conv2d = deform_conv2d
    for name, mod in mods.items():  # parent.child attributes, as a real package has
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(mods[parent], child, mod)
    return mods


# --- one export fix: directional pooling with a static shape ----------------------------

class MeanPool(nn.Module):
    """``AdaptiveAvgPool2d((None, 1))`` / ``((1, None))`` as a mean over one axis: the same
    numbers, but a shape the TorchScript ONNX exporter can write (the adaptive form asks for
    the input's size at trace time and fails: "... because it is not constant")."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.mean(self.dim, keepdim=True)


def static_pools(net: nn.Module) -> int:
    """Swap every directional adaptive average pool for :class:`MeanPool` (no weights
    change: pools have none); returns how many were swapped."""
    swapped = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            size = getattr(child, "output_size", None)
            if isinstance(child, nn.AdaptiveAvgPool2d) and size in ((None, 1), (1, None)):
                setattr(parent, name, MeanPool(3 if size == (None, 1) else 2))
                swapped += 1
    return swapped


# --- the factory ------------------------------------------------------------------------

def build():
    """Upstream ``FeatherFaceV2Simple(cfg_v2, phase='train')`` (raw logits), V1's spec."""
    src = upstream_root() / "v2_ca"
    if not (src / "featherface_v2_simple.py").is_file():
        raise FileNotFoundError(f"upstream V2-CA code not found in {src} "
                                "(set FEATHERFACE_UPSTREAM to the upstream_featherface folder)")
    shim = {} if importlib.util.find_spec("torchvision") else torchvision_stand_in()
    saved = {k: sys.modules.get(k) for k in (*shim, "models")}
    before = set(sys.modules)
    try:
        sys.modules.update(shim)
        pkg = types.ModuleType("models")  # upstream imports its files as models.<file>
        pkg.__path__ = [str(src)]
        sys.modules["models"] = pkg
        config = importlib.import_module("models.config")
        upstream = importlib.import_module("models.featherface_v2_simple")
        cfg = dict(config.cfg_v2, pretrain=False)  # never read ./weights/ from the CWD
        # phase 'train' returns raw class logits (phase 'test' applies softmax: that would
        # need scores="probabilities")
        net = upstream.FeatherFaceV2Simple(cfg, phase="train")
    finally:  # the built module keeps what it needs; the names go back as they were
        for k in set(sys.modules) - before:
            if k == "models" or k.startswith("models."):
                sys.modules.pop(k, None)
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    static_pools(net)  # coordinate attention's pool_h / pool_w (6 modules)
    # upstream trained with RetinaFace's conventions: V1's spec (BGR, mean 104/117/123,
    # 16,800 priors at 640)
    return wrap_user_model(net, spec="v1", name="upstream_v2_ca")
