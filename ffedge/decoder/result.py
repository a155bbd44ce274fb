"""The decoder's answer for one image: plain numpy arrays plus a JSON form.

Arrays rather than a list of per-face objects, because every consumer (drawing, WIDER FACE
evaluation, parity checks) works column-wise and a 1,500-face crowd should not cost 1,500
Python objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def _as(a: Any, shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32).reshape(shape))


@dataclass(frozen=True, eq=False)
class Detections:
    """Faces found in one image, best first, in original-image pixels.

    ``boxes`` (N, 4) ``x1, y1, x2, y2`` float32; ``scores`` (N,) face probability;
    ``landmarks`` (N, 5, 2) ``x, y`` in :data:`LANDMARK_NAMES` order (left/right as seen
    in the image). ``image_size`` is the original (height, width) when known.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.float32))
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        n = int(np.asarray(self.scores).shape[0])
        object.__setattr__(self, "boxes", _as(self.boxes, (n, 4)))
        object.__setattr__(self, "scores", _as(self.scores, (n,)))
        object.__setattr__(self, "landmarks", _as(self.landmarks, (n, 5, 2)))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented
        return (self.image_size == other.image_size
                and np.array_equal(self.boxes, other.boxes)
                and np.array_equal(self.scores, other.scores)
                and np.array_equal(self.landmarks, other.landmarks))

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside: not hashable

    def __getitem__(self, index: Any) -> Detections:
        """Select faces with a slice, a boolean mask or indices (``dets[dets.scores > 0.9]``)."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        return Detections(self.boxes[idx], self.scores[idx], self.landmarks[idx], self.image_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: one entry per face with ``box``, ``score`` and ``landmarks``.

        float32 values become Python floats exactly, so :meth:`from_dict` gives back the
        same arrays bit for bit.
        """
        boxes = self.boxes.tolist()
        scores = self.scores.tolist()
        landmarks = self.landmarks.tolist()
        d: dict[str, Any] = {
            "count": len(self),
            "faces": [
                {"box": b, "score": s, "landmarks": lm}
                for b, s, lm in zip(boxes, scores, landmarks)
            ],
        }
        if self.image_size is not None:
            d["image_size"] = {"height": self.image_size[0], "width": self.image_size[1]}
        return d

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Detections:
        faces = d.get("faces", [])
        size = d.get("image_size")
        return cls(
            boxes=np.array([f["box"] for f in faces], dtype=np.float32).reshape(-1, 4),
            scores=np.array([f["score"] for f in faces], dtype=np.float32).reshape(-1),
            landmarks=np.array([f["landmarks"] for f in faces], dtype=np.float32).reshape(-1, 5, 2),
            image_size=(int(size["height"]), int(size["width"])) if size else None,
        )

    @classmethod
    def from_json(cls, text: str) -> Detections:
        return cls.from_dict(json.loads(text))
