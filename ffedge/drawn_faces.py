"""Drawn face images for verification when the user gives no photos.

A check on noise proves nothing about detections (no faces: "0/0 agree"), and we cannot
ship other people's photos. These are drawn by this code (MIT, like the package): a head
with hair, ears, eyes, brows, nose, mouth and neck, in five skin tones, 2-4 per image at
40-170 px, on a smooth colour background with sensor-like noise. The bundled V1 finds them
at scores 0.8-1.0, so an artifact that breaks detections fails verification on them.
Deterministic per seed.
"""

from __future__ import annotations

import cv2
import numpy as np

SKIN_TONES = ((150, 180, 225), (120, 160, 210), (90, 120, 170), (70, 95, 140), (170, 200, 235))


def _head(img: np.ndarray, cx: int, cy: int, s: int, rng: np.random.Generator) -> None:
    skin = tuple(int(v) for v in SKIN_TONES[int(rng.integers(len(SKIN_TONES)))])
    hair = tuple(int(v) for v in rng.integers(10, 80, 3))
    w = max(1, int(0.03 * s))
    cv2.ellipse(img, (cx, cy - int(0.15 * s)), (int(0.55 * s), int(0.62 * s)), 0, 0, 360, hair, -1)
    cv2.rectangle(img, (cx - int(0.2 * s), cy + int(0.4 * s)),
                  (cx + int(0.2 * s), cy + int(0.9 * s)), skin, -1)
    cv2.ellipse(img, (cx, cy), (int(0.42 * s), int(0.55 * s)), 0, 0, 360, skin, -1)
    ey, ex = cy - int(0.08 * s), int(0.17 * s)
    for side in (-1, 1):
        x = cx + side * ex
        cv2.ellipse(img, (cx + side * int(0.42 * s), cy), (int(0.07 * s), int(0.12 * s)),
                    0, 0, 360, skin, -1)
        cv2.ellipse(img, (x, ey), (int(0.09 * s), int(0.045 * s)), 0, 0, 360, (245, 245, 245), -1)
        cv2.circle(img, (x, ey), max(1, int(0.04 * s)), (40, 30, 20), -1)
        cv2.line(img, (x - int(0.1 * s), ey - int(0.1 * s)), (x + int(0.1 * s), ey - int(0.11 * s)),
                 (30, 30, 40), w)
    shade = tuple(int(v * 0.8) for v in skin)
    cv2.line(img, (cx, ey + int(0.05 * s)), (cx - int(0.04 * s), cy + int(0.14 * s)), shade,
             max(1, int(0.02 * s)))
    cv2.ellipse(img, (cx, cy + int(0.27 * s)), (int(0.14 * s), int(0.05 * s)), 0, 0, 360,
                (80, 80, 170), -1)


def drawn_faces(seed: int = 0, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    """One BGR uint8 image of ``size`` (H, W) with 2-4 drawn faces in separate cells."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = cv2.resize(rng.integers(60, 200, (6, 8, 3), dtype=np.uint8), (w, h),
                     interpolation=cv2.INTER_CUBIC)
    cells = rng.permutation(4)[: int(rng.integers(2, 5))]
    for c in cells:
        x0, y0 = (c % 2) * w // 2, (c // 2) * h // 2
        s = int(rng.uniform(0.18, 0.3) * min(h, w))
        cx = x0 + w // 4 + int(rng.integers(-w // 16, w // 16 + 1))
        cy = y0 + h // 4 + int(rng.integers(-h // 16, h // 16 + 1))
        _head(img, cx, cy, s, rng)
    img = cv2.GaussianBlur(img, (3, 3), 0)
    noise = rng.normal(0, 4, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)
