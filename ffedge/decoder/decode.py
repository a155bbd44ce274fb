"""Model outputs -> boxes, landmarks and face scores; and ``encode``, the exact inverse.

The formulas are RetinaFace's (``layers/functions/prior_box.py`` / ``utils/box_utils.py``),
with the same operation order, so numbers agree with the classic repository to float32
rounding. Everything works on any leading shape ``(..., 4)``, so the fast path can decode
only the few hundred candidates that pass the score threshold instead of all priors.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

ScoresAre = Literal["probabilities", "logits"]
SCORE_KINDS: tuple[str, ...] = ("probabilities", "logits")


def decode_boxes(deltas: np.ndarray, priors: np.ndarray, variances: tuple[float, float]) -> np.ndarray:
    """(..., 4) regression deltas + (..., 4) priors ``cx, cy, w, h`` -> ``x1, y1, x2, y2``.

    ``c = prior_c + d[:2] * v0 * prior_wh``, ``wh = prior_wh * exp(d[2:] * v1)``; output in
    the priors' units (normalised for :func:`~ffedge.decoder.priors.generate_priors`).
    """
    d = np.asarray(deltas, dtype=np.float32)
    p = np.asarray(priors, dtype=np.float32)
    shape = np.broadcast_shapes(d.shape, p.shape)
    dt = np.ascontiguousarray(np.moveaxis(np.broadcast_to(d, shape), -1, 0))
    pt = np.ascontiguousarray(np.moveaxis(np.broadcast_to(p, shape), -1, 0))
    return np.moveaxis(decode_boxes_t(dt, pt, variances), 0, -1)


def decode_boxes_t(dt: np.ndarray, pt: np.ndarray, variances: tuple[float, float]) -> np.ndarray:
    """:func:`decode_boxes` on coordinate-first arrays: (4, ...) deltas and priors -> (4, ...).

    Every decode goes through here with contiguous rows, so one long SIMD loop runs per
    operation (interleaved (N, 4) columns run ~10x slower) and every caller, fast path or
    reference, gets bit-identical numbers from the same kernels.
    """
    v0, v1 = np.float32(variances[0]), np.float32(variances[1])
    out = np.empty(np.broadcast_shapes(dt.shape, pt.shape), dtype=np.float32)
    pwh = pt[2:]
    wh = pwh * np.exp(dt[2:] * v1)
    # Same order as RetinaFace: x1 = cx - w/2, then x2 = x1 + w.
    np.subtract(pt[:2] + dt[:2] * v0 * pwh, wh / 2, out=out[:2])
    np.add(out[:2], wh, out=out[2:])
    return out


def encode_boxes(boxes: np.ndarray, priors: np.ndarray, variances: tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`decode_boxes`: ``x1, y1, x2, y2`` -> regression deltas."""
    v0, v1 = np.float64(variances[0]), np.float64(variances[1])
    b = np.asarray(boxes, dtype=np.float64)
    p = np.asarray(priors, dtype=np.float64)
    c = (b[..., :2] + b[..., 2:]) / 2
    wh = b[..., 2:] - b[..., :2]
    d = np.concatenate([(c - p[..., :2]) / (v0 * p[..., 2:]), np.log(wh / p[..., 2:]) / v1], axis=-1)
    return d.astype(np.float32)


def decode_landmarks(deltas: np.ndarray, priors: np.ndarray, variances: tuple[float, float]) -> np.ndarray:
    """(..., 10) landmark deltas -> (..., 5, 2) points ``prior_c + d * v0 * prior_wh``.

    Point order is RetinaFace's: left eye, right eye, nose, left and right mouth corner
    (left/right as seen in the image).
    """
    v0 = np.float32(variances[0])
    d = np.asarray(deltas, dtype=np.float32)
    p = np.asarray(priors, dtype=np.float32)
    d = d.reshape(*d.shape[:-1], 5, 2)
    # coordinate-first, contiguous: (2, ..., 5) deltas against (2, ..., 1) centres/sizes
    dt = np.ascontiguousarray(np.moveaxis(d, -1, 0))
    c = np.moveaxis(p[..., :2], -1, 0)[..., None]
    wh = np.moveaxis(p[..., 2:], -1, 0)[..., None]
    out = c + dt * v0 * wh
    return np.moveaxis(out, 0, -1)


def encode_landmarks(points: np.ndarray, priors: np.ndarray, variances: tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`decode_landmarks`: (..., 5, 2) points -> (..., 10) deltas."""
    v0 = np.float64(variances[0])
    pts = np.asarray(points, dtype=np.float64)
    p = np.asarray(priors, dtype=np.float64)
    d = (pts - p[..., None, :2]) / (v0 * p[..., None, 2:])
    return d.reshape(*d.shape[:-2], 10).astype(np.float32)


def check_scores_are(scores_are: str) -> str:
    if scores_are not in SCORE_KINDS:
        raise ValueError(f"scores_are must be one of {SCORE_KINDS}, not {scores_are!r}")
    return scores_are


def face_scores(scores: np.ndarray, scores_are: ScoresAre) -> np.ndarray:
    """(..., 2) background/face class outputs -> (...) face probability, float32.

    ``scores_are`` must say what the model produced: runners return ``"probabilities"``
    (softmax applied); a raw head gives ``"logits"``. It is never guessed, because a wrong
    guess still "works" and quietly moves every threshold.
    """
    check_scores_are(scores_are)
    s = np.asarray(scores)
    if s.shape[-1] != 2:
        raise ValueError(f"class scores must have 2 columns (background, face), got shape {s.shape}")
    if scores_are == "probabilities":
        return s[..., 1].astype(np.float32, copy=False)
    return logits_to_face_probability(s[..., 0], s[..., 1])


def logits_to_face_probability(background: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Two-class softmax, face column: ``1 / (1 + exp(bg - face))`` without overflow warnings."""
    z = np.asarray(background, dtype=np.float32) - np.asarray(face, dtype=np.float32)
    with np.errstate(over="ignore", under="ignore"):
        return (np.float32(1.0) / (np.float32(1.0) + np.exp(z))).astype(np.float32, copy=False)
