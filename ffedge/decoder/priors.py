"""RetinaFace-style priors (anchors) for a :class:`~ffedge.spec.PriorSpec` and an input size.

The order of the priors is the order of the model's outputs (level, row, column, min size),
so prior ``p`` decodes output row ``p``; any other order would silently pair a delta with
the wrong anchor. Priors depend only on hashable arguments, so they are computed once per
(spec, size) and shared read-only by every call.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ffedge.spec import PriorSpec


@lru_cache(maxsize=32)
def generate_priors(spec: PriorSpec, height: int, width: int) -> np.ndarray:
    """(P, 4) float32 priors ``cx, cy, w, h`` normalised by the input width/height.

    For each level k (step s, min sizes m), each row i, each column j, each min size:
    ``((j + 0.5) * s / W, (i + 0.5) * s / H, m / W, m / H)``; feature sizes are
    ``spec.feature_shapes`` (ceil division), clipped to [0, 1] when ``spec.clip``.
    The returned array is read-only because it is cached and shared.
    """
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"input size must be positive, got {height}x{width}")
    levels = []
    for (fh, fw), step, sizes in zip(spec.feature_shapes(height, width), spec.steps, spec.min_sizes):
        a = len(sizes)
        cx = (np.arange(fw, dtype=np.float64) + 0.5) * step / width
        cy = (np.arange(fh, dtype=np.float64) + 0.5) * step / height
        level = np.empty((fh, fw, a, 4), dtype=np.float64)
        level[..., 0] = cx[None, :, None]
        level[..., 1] = cy[:, None, None]
        level[..., 2] = np.asarray(sizes, dtype=np.float64) / width
        level[..., 3] = np.asarray(sizes, dtype=np.float64) / height
        levels.append(level.reshape(-1, 4))
    priors = np.concatenate(levels).astype(np.float32)
    if spec.clip:
        np.clip(priors, 0.0, 1.0, out=priors)
    priors.flags.writeable = False
    return priors



@lru_cache(maxsize=32)
def generate_priors_t(spec: PriorSpec, height: int, width: int) -> np.ndarray:
    """The same priors coordinate-first: (4, P) rows ``cx, cy, w, h``, contiguous, read-only.

    The fast decoder gathers candidates from these rows (four contiguous gathers instead
    of one interleaved one)."""
    priors_t = np.ascontiguousarray(generate_priors(spec, height, width).T)
    priors_t.flags.writeable = False
    return priors_t
