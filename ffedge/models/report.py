"""Parameter tables and deployment specs of the model zoo, rendered as markdown.

docs/models.md embeds one generated block per model between ``<!-- generated:NAME -->``
markers; ``python -m ffedge.models.report --write docs/models.md`` refreshes them, and
tests/test_models_zoo.py fails when the file no longer contains what the code computes.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from ffedge.spec import DeploymentSpec

REPORTED_MODELS: tuple[str, ...] = ("v1", "v2_ca", "eca_cbam", "v2_ultra", "nano_b")
FAMILY_BLOCK = "family"
# Where each model's architecture (and weights, when it has them) comes from.
SOURCES: dict[str, str] = {
    "v1": "FeatherFace (MIT), `weights/mobilenet0.25_Final.pth`",
    "v2_ca": "FeatherFace (MIT), `weights/v2/featherface_v2_final.pth`",
    "eca_cbam": "FeatherFace (MIT), `weights/eca_cbam/featherface_eca_cbam_final.pth`",
    "v2_ultra": "built from the V2 Ultra architecture card",
    "nano_b": "built from the Nano-B architecture card",
}
HEAD_CHILDREN = ("ClassHead", "BboxHead", "LandmarkHead")
REPORT_SIZES: tuple[tuple[int, int], ...] = ((640, 640), (320, 320), (480, 640))

# component -> (what it is, what the card/README states for it)
COMPONENT_NOTES: dict[str, dict[str, tuple[str, str]]] = {
    "v1": {
        "body": ("MobileNetV1-0.25 backbone", "213,072"),
        "bifpn": ("2 BiFPN cells, 56 ch", "77,916"),
        "ssh": ("3 deformable SSH, 56->56", "192,555"),
        "shuffle": ("channel shuffle, 2 groups", "0"),
        "heads": ("1x1 class/box/landmark heads, 2 anchors", "5,472"),
    },
    "v2_ultra": {
        "body": ("MobileNetV1-0.25 backbone", "213K"),
        "backbone_cbam": ("CBAM_Plus on P3/P4/P5, reduction 32", "1.2K"),
        "bifpn": ("BiFPN_Light, 32 ch, 2 layers, shared DW-separable convs", "18.4K"),
        "bifpn_cbam": ("one CBAM_Plus shared by F3/F4/F5, reduction 8", "1.2K"),
        "innovations": ("innovations 1-5 (only 5 has weights)", "8K / <1K"),
        "ssh": ("3 SSH_Grouped, 32->32, groups 4", "12.3K"),
        "shuffle": ("channel shuffle, 4 groups", "0"),
        "heads": ("3 SharedMultiHead, 32->16 shared, 2 anchors", "11.5K"),
    },
    "v2_ca": {
        "body": ("MobileNetV1-0.25 backbone", "213,072"),
        "bifpn": ("2 BiFPN cells, 56 ch", "77,916"),
        "ssh": ("3 deformable SSH, 56->56", "192,555"),
        "ca": ("coordinate attention after each SSH, 56->8->56", "4,080"),
        "shuffle": ("channel shuffle, 2 groups", "0"),
        "heads": ("1x1 class/box/landmark heads, 2 anchors", "5,472"),
    },
    "eca_cbam": {
        "body": ("MobileNetV1-0.25 backbone", "213,072"),
        "backbone_attention": ("ECA (k 3/5/5) + CBAM spatial 7x7 on P3/P4/P5", "~100 each"),
        "bifpn": ("3 BiFPN cells, 52 ch", "93K"),
        "bifpn_attention": ("ECA (k 3) + CBAM spatial 7x7 on each BiFPN output", "~100 each"),
        "ssh": ("3 deformable SSH, 52->52", "~150K"),
        "shuffle": ("channel shuffle, 2 groups", "0"),
        "heads": ("1x1 class/box/landmark heads, 2 anchors", "5.5K"),
    },
    "nano_b": {
        "body": ("B-FPGM-pruned MobileNetV1-0.25 (27/50/87 out)", "~58,000"),
        "scale_decoupling": ("ScaleDecoupling on P3 (backbone width)", "~1,500 / ~8,800"),
        "backbone_cbam": ("CBAM on P3/P4/P5 (27/50/87), reduction 16", "~1,080"),
        "bifpn": ("BiFPN_Light, 32 ch, 1 layer", "~8,200"),
        "mse_fpn": ("MSE-FPN semantic injection, 3 levels", "~4,000"),
        "assn": ("ASSN scale-sequence attention on P3", "~2,000"),
        "output_cbam": ("final CBAM on P4/P5, 32 ch", "~440"),
        "ssh": ("3 standard SSH, 32->32", "~12,000"),
        "shuffle": ("channel shuffle, 4 groups", "0"),
        "heads": ("1x1 heads 32->6/12/30, 3 anchors", "~1,600 / 4,608"),
    },
}
CARD_TOTALS = {
    "v1": "489,015", "v2_ca": "493,095", "eca_cbam": "476,345 (also \"~449K\")",
    "v2_ultra": "244,483 (also \"248K\")", "nano_b": "120,000-180,000",
}


def _component_of(child: str) -> str:
    if child in HEAD_CHILDREN:
        return "heads"
    return re.sub(r"(_p)?_?\d+$", "", child)  # ssh1 -> ssh, ca_p3 -> ca, x_attention_0 -> x


def component_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters per component: top-level children, ``ssh1..3`` and the three heads merged."""
    out: dict[str, int] = {}
    for name, child in model.named_children():
        comp = _component_of(name)
        out[comp] = out.get(comp, 0) + sum(p.numel() for p in child.parameters())
    return out


def _fmt_tuple(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _fmt_sizes(sizes: Sequence[Sequence[float]]) -> str:
    return " / ".join("[" + ", ".join(f"{v:g}" for v in level) + "]" for level in sizes)


def render_spec(spec: DeploymentSpec) -> str:
    """The prior spec and input conventions as a few markdown bullet lines."""
    p = spec.priors
    counts = ", ".join(f"{h}x{w}: {p.num_priors(h, w):,}" for h, w in REPORT_SIZES)
    return "\n".join([
        f"- Priors: steps {'/'.join(str(s) for s in p.steps)}, min sizes "
        f"{_fmt_sizes(p.min_sizes)}, variances {p.variances[0]:g}/{p.variances[1]:g}, "
        f"clip {str(p.clip).lower()}; anchors per cell "
        f"{'/'.join(str(a) for a in p.anchors_per_level)}.",
        f"- Prior counts: {counts}.",
        f"- Input: {spec.channel_order}, mean {_fmt_tuple(spec.mean)}, "
        f"std {_fmt_tuple(spec.std)}, {spec.resize_mode} to "
        f"{spec.input_size[0]}x{spec.input_size[1]}, sides divisible by {spec.size_divisor}.",
    ])


def render_model(name: str) -> str:
    """The generated markdown block (table + spec) for one registered model."""
    from ffedge.models.registry import create_model

    model = create_model(name, pretrained=False)  # sizes only: no weights needed
    notes = COMPONENT_NOTES.get(name, {})
    lines = [
        f"<!-- generated:{name} -->",
        "| Component | What it is | Parameters | Card says |",
        "|---|---|---:|---:|",
    ]
    for comp, n in component_parameters(model).items():
        what, card = notes.get(comp, ("", ""))
        lines.append(f"| `{comp}` | {what} | {n:,} | {card} |")
    lines.append(
        f"| **total** | | **{model.num_parameters():,}** | {CARD_TOTALS.get(name, '')} |"
    )
    lines += ["", render_spec(model.spec), f"<!-- /generated:{name} -->"]
    return "\n".join(lines)


def count_macs(model: nn.Module, height: int = 640, width: int = 640) -> int:
    """Multiply-accumulates of one forward pass at ``height`` x ``width``.

    Counted: every Conv1d/Conv2d (``output elements x kernel taps x in-channels/groups``) and
    each deformable conv's kernel, which runs as one MatMul over the sampled taps. Not
    counted: bilinear sampling, BN, activations, pooling, attention gating (element-wise).
    """
    import torch

    from ffedge.models.dcn import DeformableConv2d

    total = 0

    def hook(module: nn.Module, _inputs, output) -> None:
        nonlocal total
        weight = module.regular_conv.weight if isinstance(module, DeformableConv2d) \
            else module.weight
        total += output.numel() * weight[0].numel()

    kinds = (nn.Conv1d, nn.Conv2d, DeformableConv2d)
    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, height, width))
    finally:
        for h in hooks:
            h.remove()
    return total


def render_family(names: Sequence[str] = REPORTED_MODELS) -> str:
    """The family overview: size, cost, priors, weights and source of every zoo model."""
    from ffedge.models.registry import create_model
    from ffedge.weights import bundled_checkpoint

    lines = [
        f"<!-- generated:{FAMILY_BLOCK} -->",
        "| Model | Parameters | GMAC at 640x640 | Priors at 640x640 | Trained weights | Source |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name in names:
        model = create_model(name, pretrained=False)
        weights = "yes (bundled)" if bundled_checkpoint(name, verify=False) else "no"
        lines.append(
            f"| `{name}` | {model.num_parameters():,} | {count_macs(model) / 1e9:.3f} | "
            f"{model.spec.priors.num_priors(640, 640):,} | {weights} | {SOURCES.get(name, '')} |"
        )
    lines.append(f"<!-- /generated:{FAMILY_BLOCK} -->")
    return "\n".join(lines)


def render_all(names: Sequence[str] = REPORTED_MODELS) -> dict[str, str]:
    blocks = {FAMILY_BLOCK: render_family(names)}
    blocks.update({n: render_model(n) for n in names})
    return blocks


def update_document(text: str, blocks: dict[str, str]) -> str:
    """Replace each ``<!-- generated:NAME -->`` ... ``<!-- /generated:NAME -->`` block."""
    for name, block in blocks.items():
        pattern = re.compile(
            rf"<!-- generated:{re.escape(name)} -->.*?<!-- /generated:{re.escape(name)} -->",
            re.DOTALL,
        )
        if not pattern.search(text):
            raise ValueError(f"no generated block for {name!r} in the document")
        text = pattern.sub(lambda _m, b=block: b, text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the model zoo's parameter tables.")
    parser.add_argument("--write", type=Path, help="refresh the generated blocks of this file")
    args = parser.parse_args(argv)
    blocks = render_all()
    if args.write:
        args.write.write_text(update_document(args.write.read_text(), blocks))
    else:
        sys.stdout.write("\n\n".join(blocks.values()) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
