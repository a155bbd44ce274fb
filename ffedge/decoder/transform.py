"""Image -> model input, and model coordinates -> original image, side by side.

Every consumer (ffdetect, calibration, parity, WIDER FACE evaluation) calls
:func:`preprocess`; the :class:`Transform` it returns is the only way back to original
pixels, so the forward and inverse mappings cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ffedge.spec import DeploymentSpec

MODES = ("resize", "letterbox", "original")


@dataclass(frozen=True)
class Transform:
    """How an original image of ``original_size`` (H, W) became a tensor of ``input_size``.

    Input pixel = original pixel * scale + pad (padding is only bottom/right, so pad is 0
    today; kept for centred letterboxes).
    """

    original_size: tuple[int, int]
    input_size: tuple[int, int]
    scale_x: float
    scale_y: float
    pad_x: float = 0.0
    pad_y: float = 0.0
    mode: str = "letterbox"

    def boxes_to_original(self, boxes: np.ndarray, clip: bool = True) -> np.ndarray:
        """(N, 4) x1,y1,x2,y2 in input pixels -> original pixels."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (boxes[:, 1::2] - self.pad_y) / self.scale_y
        if clip:
            h, w = self.original_size
            np.clip(out[:, 0::2], 0, w, out=out[:, 0::2])
            np.clip(out[:, 1::2], 0, h, out=out[:, 1::2])
        return out

    def points_to_original(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) x,y in input pixels -> original pixels."""
        out = np.empty_like(points, dtype=np.float32)
        out[..., 0] = (points[..., 0] - self.pad_x) / self.scale_x
        out[..., 1] = (points[..., 1] - self.pad_y) / self.scale_y
        return out


def padded_size(height: int, width: int, divisor: int = 32) -> tuple[int, int]:
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def normalize(image_bgr: np.ndarray, spec: DeploymentSpec) -> np.ndarray:
    """HWC uint8 BGR -> CHW float32 in the spec's channel order and normalisation."""
    img = image_bgr if spec.channel_order == "BGR" else image_bgr[:, :, ::-1]
    x = img.astype(np.float32)
    x -= np.asarray(spec.mean, dtype=np.float32)
    if any(s != 1.0 for s in spec.std):
        x /= np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def geometry(image_bgr: np.ndarray, spec: DeploymentSpec, size: tuple[int, int] | None = None,
             mode: str | None = None) -> tuple[np.ndarray, Transform]:
    """Resize / letterbox / pad an HWC image to the model's input geometry (still uint8)."""
    mode = mode or spec.resize_mode
    if mode not in MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {MODES}")
    h, w = image_bgr.shape[:2]
    if mode == "original":
        th, tw = padded_size(h, w, spec.size_divisor)
        canvas = np.full((th, tw, 3), spec.pad_value, dtype=np.uint8)
        canvas[:h, :w] = image_bgr
        return canvas, Transform((h, w), (th, tw), 1.0, 1.0, mode=mode)
    th, tw = size or spec.input_size
    if mode == "resize":
        out = image_bgr if (h, w) == (th, tw) else cv2.resize(image_bgr, (tw, th), interpolation=cv2.INTER_LINEAR)
        return out, Transform((h, w), (th, tw), tw / w, th / h, mode=mode)
    scale = min(th / h, tw / w)
    nh, nw = max(1, min(th, round(h * scale))), max(1, min(tw, round(w * scale)))
    resized = image_bgr if (nh, nw) == (h, w) else cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((th, tw, 3), spec.pad_value, dtype=np.uint8)
    canvas[:nh, :nw] = resized
    return canvas, Transform((h, w), (th, tw), nw / w, nh / h, mode=mode)


def preprocess(image_bgr: np.ndarray, spec: DeploymentSpec, size: tuple[int, int] | None = None,
               mode: str | None = None) -> tuple[np.ndarray, Transform]:
    """One image -> (CHW float32 input, Transform back to the original image).

    ``mode``: ``"resize"`` (stretch), ``"letterbox"`` (keep aspect, pad bottom/right) or
    ``"original"`` (no scaling, pad to a multiple of 32); default: the spec's.
    """
    canvas, t = geometry(image_bgr, spec, size, mode)
    return normalize(canvas, spec), t


def preprocess_batch(images: list[np.ndarray], spec: DeploymentSpec,
                     size: tuple[int, int] | None = None, mode: str | None = None
                     ) -> tuple[np.ndarray, list[Transform]]:
    """Several images at one fixed size -> (N, 3, H, W) float32 and their transforms."""
    if mode == "original":
        raise ValueError("original-size inputs differ per image: preprocess them one by one")
    pairs = [preprocess(img, spec, size, mode) for img in images]
    return np.stack([p[0] for p in pairs]), [p[1] for p in pairs]
