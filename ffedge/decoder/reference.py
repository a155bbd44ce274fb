"""The baseline we measure and verify against: RetinaFace's classic post-processing.

``py_cpu_nms`` keeps the classic per-kept-box Python loop (numpy IoU of one box against
the rest) on purpose: it is the implementation everyone ships, so it is the speed baseline
and, being obviously greedy, the correctness oracle for :func:`ffedge.decoder.nms.nms`.

Two deliberate, documented differences from the repository's ``py_cpu_nms``:

* the visiting order is a stable descending sort (ties by ascending index), where the
  classic ``scores.argsort()[::-1]`` visits tied boxes in an order that depends on the sort
  algorithm; with ties, "the same keep-set" is only defined for one fixed order;
* a pair whose union is zero has IoU 0 (the classic code divides 0 by 0 and its NaN then
  suppresses the box).

``plus_one=True`` is the classic convention (areas and overlaps in whole pixels, +1);
``plus_one=False`` is the continuous IoU that the fast NMS uses, in its exact float32
operation order, so keep-set comparisons compare like with like.
"""

from __future__ import annotations

import numpy as np

from ffedge.decoder.decode import decode_boxes, decode_landmarks, face_scores
from ffedge.decoder.nms import descending_order
from ffedge.decoder.priors import generate_priors
from ffedge.spec import DECODE, PriorSpec


def py_cpu_nms(dets: np.ndarray, thresh: float, plus_one: bool = True) -> list[int]:
    """Classic greedy NMS. ``dets`` (N, 5) ``x1, y1, x2, y2, score``; returns kept indices,
    best first."""
    dets = np.asarray(dets, dtype=np.float32)
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    one = np.float32(1.0 if plus_one else 0.0)
    zero = np.float32(0.0)
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    order = descending_order(scores)
    thr = np.float32(thresh)

    keep: list[int] = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        xx1 = np.maximum(x1[i], x1[rest])
        yy1 = np.maximum(y1[i], y1[rest])
        xx2 = np.minimum(x2[i], x2[rest])
        yy2 = np.minimum(y2[i], y2[rest])
        w = np.maximum(zero, xx2 - xx1 + one)
        h = np.maximum(zero, yy2 - yy1 + one)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            ovr = inter / union
        ovr[union == 0] = 0.0
        order = rest[~(ovr > thr)]
    return keep


def reference_postprocess(
    boxes_delta: np.ndarray,
    scores: np.ndarray,
    landmarks_delta: np.ndarray,
    priors_spec: PriorSpec,
    input_size: tuple[int, int],
    scores_are: str,
    score_threshold: float = 0.5,
    nms_threshold: float = DECODE.nms_threshold,
    top_k: int | None = DECODE.top_k,
    max_detections: int | None = DECODE.max_detections,
    plus_one: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image, the classic ``detect.py`` way: decode *all* priors, scale to input pixels,
    threshold, sort, top-k, ``py_cpu_nms``, keep the best ``max_detections``.

    Returns (boxes (N, 4), scores (N,), landmarks (N, 5, 2)) in input pixels.
    """
    h, w = input_size
    priors = generate_priors(priors_spec, h, w)
    scale = np.array([w, h, w, h], dtype=np.float32)
    all_boxes = decode_boxes(boxes_delta, priors, priors_spec.variances) * scale
    all_landms = decode_landmarks(landmarks_delta, priors, priors_spec.variances) * scale[:2]
    all_scores = face_scores(scores, scores_are)  # type: ignore[arg-type]

    inds = np.where(all_scores > np.float32(score_threshold))[0]
    b, lm, s = all_boxes[inds], all_landms[inds], all_scores[inds]
    order = descending_order(s)
    if top_k is not None:
        order = order[:top_k]
    b, lm, s = b[order], lm[order], s[order]

    dets = np.hstack((b, s[:, None])).astype(np.float32, copy=False)
    keep = np.asarray(py_cpu_nms(dets, nms_threshold, plus_one=plus_one), dtype=np.int64)
    if max_detections is not None:
        keep = keep[:max_detections]
    return b[keep], s[keep], lm[keep]
