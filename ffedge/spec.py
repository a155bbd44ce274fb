"""The deployment spec: everything a consumer needs to feed a model and decode its outputs.

Defined once per model family (see ``ffedge.models``) and carried, unchanged, into every
artifact's metadata; the decoder, the calibration pipeline and the runtimes read it from
there. Nobody re-types a mean or a stride. This module needs numpy only (no torch), so a
deployment machine can use it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

SPEC_VERSION = 1
#: Every zoo model's total stride: input sides must be multiples of it.
SIZE_DIVISOR = 32


@dataclass(frozen=True)
class PriorSpec:
    """RetinaFace-style anchors: one square prior per (cell, min size) on each level."""

    steps: tuple[int, ...] = (8, 16, 32)
    min_sizes: tuple[tuple[float, ...], ...] = ((16, 32), (64, 128), (256, 512))
    variances: tuple[float, float] = (0.1, 0.2)
    clip: bool = False

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.min_sizes):
            raise ValueError("prior spec: one min-size list per stride is required")
        if any(len(m) == 0 for m in self.min_sizes):
            raise ValueError("prior spec: every level needs at least one min size")

    @property
    def anchors_per_level(self) -> tuple[int, ...]:
        return tuple(len(m) for m in self.min_sizes)

    def feature_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Feature-map size per level, as the backbone's stride-2 convs (pad 1) produce it."""
        return [(-(-height // s), -(-width // s)) for s in self.steps]

    def num_priors(self, height: int, width: int) -> int:
        return sum(
            fh * fw * a
            for (fh, fw), a in zip(self.feature_shapes(height, width), self.anchors_per_level)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "min_sizes": [list(m) for m in self.min_sizes],
            "variances": list(self.variances),
            "clip": self.clip,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PriorSpec:
        return cls(
            steps=tuple(int(s) for s in d["steps"]),
            min_sizes=tuple(tuple(float(v) for v in m) for m in d["min_sizes"]),
            variances=(float(d["variances"][0]), float(d["variances"][1])),
            clip=bool(d.get("clip", False)),
        )


@dataclass(frozen=True)
class DecodeDefaults:
    """RetinaFace's post-processing defaults (the WIDER FACE evaluation setting)."""

    nms_threshold: float = 0.4
    top_k: int = 5000  # candidates into NMS
    max_detections: int = 750  # faces kept after NMS


DECODE = DecodeDefaults()


@dataclass(frozen=True)
class DeploymentSpec:
    """How to turn an image into the model's input, and its outputs back into faces.

    ``input_size`` is (height, width). Pixels are taken in ``channel_order``, then
    ``(pixel - mean) / std`` per channel, laid out NCHW float32. ``resize_mode`` says how an
    image of another size reaches ``input_size``: ``"resize"`` (stretch) or ``"letterbox"``
    (keep aspect, pad bottom/right with ``pad_value`` in raw pixel units).
    """

    input_size: tuple[int, int] = (640, 640)
    channel_order: str = "BGR"
    mean: tuple[float, float, float] = (104.0, 117.0, 123.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize_mode: str = "letterbox"
    pad_value: float = 0.0
    priors: PriorSpec = field(default_factory=PriorSpec)
    size_divisor: int = SIZE_DIVISOR
    layout: str = "NCHW"  # of the artifact's input tensor; preprocess always yields NCHW

    def __post_init__(self) -> None:
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be NCHW or NHWC, not {self.layout!r}")
        if self.channel_order not in ("BGR", "RGB"):
            raise ValueError(f"channel_order must be BGR or RGB, not {self.channel_order!r}")
        if self.resize_mode not in ("resize", "letterbox"):
            raise ValueError(f"resize_mode must be resize or letterbox, not {self.resize_mode!r}")
        h, w = self.input_size
        if h % self.size_divisor or w % self.size_divisor:
            raise ValueError(
                f"input size {h}x{w} must be divisible by {self.size_divisor}"
            )

    def with_input_size(self, height: int, width: int) -> DeploymentSpec:
        return replace(self, input_size=(int(height), int(width)))

    def with_layout(self, layout: str) -> DeploymentSpec:
        return replace(self, layout=layout)

    @property
    def num_priors(self) -> int:
        return self.priors.num_priors(*self.input_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["priors"] = self.priors.to_dict()
        d["dtype"] = "float32"
        d["spec_version"] = SPEC_VERSION
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeploymentSpec:
        return cls(
            input_size=(int(d["input_size"][0]), int(d["input_size"][1])),
            channel_order=str(d["channel_order"]),
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
            resize_mode=str(d.get("resize_mode", "letterbox")),
            pad_value=float(d.get("pad_value", 0.0)),
            priors=PriorSpec.from_dict(d["priors"]),
            size_divisor=int(d.get("size_divisor", SIZE_DIVISOR)),
            layout=str(d.get("layout", "NCHW")),
        )

    @classmethod
    def from_json(cls, text: str) -> DeploymentSpec:
        return cls.from_dict(json.loads(text))
