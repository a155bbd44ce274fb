"""The fast decoder: raw outputs of any runtime -> :class:`Detections` in original pixels.

Order of work, chosen for speed without changing any result of the classic pipeline
(:func:`ffedge.decoder.reference.reference_postprocess`):

1. score filter over all priors first (one comparison per prior), so only the few hundred
   candidates are ever decoded; with logits, a cheap pre-filter on the logit difference
   picks the candidates and the exact softmax is computed for those only;
2. stable sort by descending score, top-k;
3. decode boxes of the candidates, scaled to input pixels (NMS thresholds mean pixels);
4. exact greedy NMS (:func:`ffedge.decoder.nms.nms`), at most ``max_detections`` kept;
5. decode landmarks of the kept faces only, then map everything to the original image
   through the :class:`~ffedge.decoder.transform.Transform` that made the input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ffedge.decoder.decode import (
    check_scores_are,
    decode_boxes_t,
    decode_landmarks,
    logits_to_face_probability,
)
from ffedge.decoder.nms import descending_order, nms_ranked_t
from ffedge.decoder.priors import generate_priors, generate_priors_t
from ffedge.decoder.result import Detections
from ffedge.decoder.transform import Transform
from ffedge.errors import FFEdgeError
from ffedge.spec import DECODE, DeploymentSpec, PriorSpec


def _logit_slack(t: float) -> float:
    """Margin for the logit-space pre-filter: far above what float32 rounding of the
    softmax can move a score near ``t`` (that error grows as 1 / (t (1 - t))), far below
    anything that lets many extra priors through."""
    return 1e-3 + 1e-5 / (t * (1.0 - t))


@dataclass(frozen=True)
class Decoder:
    """Priors, decoding, score threshold, top-k, NMS and mapping back, for one model spec.

    ``spec`` is the model's :class:`~ffedge.spec.DeploymentSpec` (its ``input_size`` is the
    default input size) or a bare :class:`~ffedge.spec.PriorSpec` (then every call needs a
    transform or ``input_size``). ``top_k`` candidates at most go into NMS and
    ``max_detections`` faces at most come out (``None``: no limit). ``clip`` clips boxes to
    the original image.
    """

    spec: DeploymentSpec | PriorSpec
    score_threshold: float = 0.5
    nms_threshold: float = DECODE.nms_threshold
    top_k: int | None = DECODE.top_k
    max_detections: int | None = DECODE.max_detections
    clip: bool = True

    def __post_init__(self) -> None:
        if self.nms_threshold < 0:
            raise ValueError(f"nms_threshold must be >= 0, got {self.nms_threshold}")
        for name in ("top_k", "max_detections"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {v}")

    @property
    def priors_spec(self) -> PriorSpec:
        return self.spec.priors if isinstance(self.spec, DeploymentSpec) else self.spec

    def __call__(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        landmarks: np.ndarray,
        transforms: Sequence[Transform | None] | Transform | None = None,
        *,
        scores_are: str,
        input_size: tuple[int, int] | None = None,
    ) -> list[Detections]:
        """Batched outputs ``[B, P, 4]``, ``[B, P, 2]``, ``[B, P, 10]`` -> one
        :class:`Detections` per image. ``transforms``: one per image (or one for all);
        ``None`` leaves coordinates in input pixels. ``scores_are``: ``"probabilities"``
        (what every runner returns) or ``"logits"``."""
        check_scores_are(scores_are)
        boxes, scores, landmarks = np.asarray(boxes), np.asarray(scores), np.asarray(landmarks)
        if boxes.ndim != 3 or scores.ndim != 3 or landmarks.ndim != 3:
            raise ValueError(
                "expected batched outputs [B, P, 4], [B, P, 2], [B, P, 10]; got shapes "
                f"{boxes.shape}, {scores.shape}, {landmarks.shape} (use decode_one for one image)"
            )
        b = boxes.shape[0]
        if transforms is None or isinstance(transforms, Transform):
            per_image: Sequence[Transform | None] = [transforms] * b
        else:
            per_image = list(transforms)
            if len(per_image) != b:
                raise ValueError(f"{len(per_image)} transforms for a batch of {b} images")
        return [
            self.decode_one(boxes[k], scores[k], landmarks[k], per_image[k],
                            scores_are=scores_are, input_size=input_size)
            for k in range(b)
        ]

    def decode_one(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        landmarks: np.ndarray,
        transform: Transform | None = None,
        *,
        scores_are: str,
        input_size: tuple[int, int] | None = None,
    ) -> Detections:
        """One image's outputs ``[P, 4]``, ``[P, 2]``, ``[P, 10]`` -> :class:`Detections`."""
        check_scores_are(scores_are)
        h, w = self._input_size(transform, input_size)
        pspec = self.priors_spec
        priors = generate_priors(pspec, h, w)
        p = priors.shape[0]
        if boxes.shape != (p, 4) or scores.shape != (p, 2) or landmarks.shape != (p, 10):
            raise FFEdgeError(
                f"model outputs {tuple(boxes.shape)}, {tuple(scores.shape)}, "
                f"{tuple(landmarks.shape)} do not fit {p} priors at input {h}x{w} "
                f"(expected ({p}, 4), ({p}, 2), ({p}, 10)): wrong input size or prior spec?"
            )
        original = transform.original_size if transform is not None else (h, w)

        idx, face = self._candidates(scores, scores_are)
        if idx.size == 0:
            return Detections(image_size=original)
        order = descending_order(face)
        if self.top_k is not None:
            order = order[: self.top_k]
        cand = idx[order]
        face = face[order]

        # Coordinate-first (4, n) rows from here on: contiguous, SIMD-friendly.
        scale = np.array([w, h, w, h], dtype=np.float32)
        xyxy = decode_boxes_t(np.ascontiguousarray(boxes[cand].T, dtype=np.float32),
                              generate_priors_t(pspec, h, w)[:, cand], pspec.variances)
        xyxy *= scale[:, None]
        keep = nms_ranked_t(xyxy, self.nms_threshold, self.max_detections)
        px_boxes = np.ascontiguousarray(xyxy[:, keep].T)
        kept = cand[keep]
        points = decode_landmarks(landmarks[kept], priors[kept], pspec.variances) * scale[:2]
        if transform is not None:
            px_boxes = transform.boxes_to_original(px_boxes, clip=self.clip)
            points = transform.points_to_original(points)
        elif self.clip:
            np.clip(px_boxes[:, 0::2], 0, w, out=px_boxes[:, 0::2])
            np.clip(px_boxes[:, 1::2], 0, h, out=px_boxes[:, 1::2])
        return Detections(px_boxes, face[keep], points, original)

    def _input_size(self, transform: Transform | None, input_size: tuple[int, int] | None
                    ) -> tuple[int, int]:
        if transform is not None:
            return transform.input_size
        if input_size is not None:
            return int(input_size[0]), int(input_size[1])
        if isinstance(self.spec, DeploymentSpec):
            return self.spec.input_size
        raise ValueError("a bare PriorSpec needs a transform or input_size to place the priors")

    def _candidates(self, scores: np.ndarray, scores_are: str) -> tuple[np.ndarray, np.ndarray]:
        """Indices of priors whose face probability exceeds the threshold, and those
        probabilities (float32), indices ascending."""
        thr = np.float32(self.score_threshold)
        if scores_are == "probabilities":
            col = scores[:, 1]
            idx = np.flatnonzero(col > thr)
            return idx, col[idx].astype(np.float32, copy=False)
        bg, fg = scores[:, 0], scores[:, 1]
        if 0.0 < self.score_threshold < 1.0:
            t = float(self.score_threshold)
            logit = math.log(t / (1.0 - t))
            idx = np.flatnonzero((fg - bg) > np.float32(logit - _logit_slack(t)))
        else:
            idx = np.arange(scores.shape[0])
        prob = logits_to_face_probability(bg[idx], fg[idx])
        keep = prob > thr
        return idx[keep], prob[keep]
