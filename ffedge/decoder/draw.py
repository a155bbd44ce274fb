"""Drawing detections on a copy of an image (what ``ffdetect`` writes)."""

from __future__ import annotations

import cv2
import numpy as np

from ffedge.decoder.result import Detections

# BGR, in LANDMARK_NAMES order: eyes red / yellow, nose magenta, mouth corners green / blue
# (the RetinaFace demo's colours, so outputs look like what people already know).
LANDMARK_COLORS = ((0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 0, 0))
BOX_COLOR = (0, 255, 0)


def draw_detections(image_bgr: np.ndarray, dets: Detections, show_scores: bool = True) -> np.ndarray:
    """A copy of ``image_bgr`` with boxes, scores and the five landmarks drawn.

    Line width and text size follow the image size so crowds stay readable and large
    photos still show the marks.
    """
    out = image_bgr.copy()
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 500))
    font = max(0.35, max(h, w) / 1600)
    radius = max(1, thick + 1)
    for (x1, y1, x2, y2), score, pts in zip(dets.boxes, dets.scores, dets.landmarks):
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(out, p1, p2, BOX_COLOR, thick, cv2.LINE_AA)
        for (px, py), color in zip(pts, LANDMARK_COLORS):
            cv2.circle(out, (int(round(px)), int(round(py))), radius, color, -1, cv2.LINE_AA)
        if show_scores:
            cv2.putText(out, f"{score:.2f}", (p1[0], max(p1[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                        font, (255, 255, 255), thick + 1, cv2.LINE_AA)
            cv2.putText(out, f"{score:.2f}", (p1[0], max(p1[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                        font, (0, 0, 0), max(1, thick - 1) if thick > 1 else 1, cv2.LINE_AA)
    return out
