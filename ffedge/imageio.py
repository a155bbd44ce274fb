"""Reading images the way every tool here needs them: 8-bit, 3-channel BGR."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ffedge.errors import FFEdgeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Convert grayscale, BGRA and 16-bit/float images to 8-bit 3-channel BGR."""
    img = image
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        scale = 255.0 if float(np.nanmax(img) if img.size else 0.0) <= 1.0 else 1.0
        img = np.clip(np.nan_to_num(img) * scale, 0, 255).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise FFEdgeError(f"unsupported image shape {image.shape}")
    return np.ascontiguousarray(img)


def read_image(path: str | Path) -> np.ndarray:
    """Read ``path`` as 8-bit BGR; a missing or undecodable file raises FFEdgeError."""
    p = Path(path)
    if not p.is_file():
        raise FFEdgeError(f"image not found: {p}")
    data = np.fromfile(str(p), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None or img.size == 0:
        raise FFEdgeError(f"cannot decode image: {p}")
    return to_bgr8(img)


def list_images(root: str | Path) -> list[Path]:
    """All image files below ``root`` (recursively), sorted for determinism."""
    r = Path(root)
    if r.is_file():
        return [r]
    if not r.is_dir():
        raise FFEdgeError(f"image folder not found: {r}")
    return sorted(p for p in r.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def random_images(n: int, input_size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Deterministic noise images with some structure (blurred blobs), uint8 BGR."""
    rng = np.random.default_rng(seed)
    h, w = input_size
    out = []
    for _ in range(n):
        img = rng.integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8)
        out.append(cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC))
    return out
