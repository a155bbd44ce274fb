"""One image in, faces out: preprocess, run, decode. What ``ffdetect`` and Python users call.

Any object with ``infer(nchw_float32) -> (boxes, scores, landmarks)`` returning
probabilities and a ``spec`` works as the runner (see :class:`ffedge.runtimes.Runner`); this
module imports no runtime, so the decoder stays usable without torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ffedge.decoder.postprocess import Decoder
from ffedge.decoder.result import Detections
from ffedge.decoder.transform import preprocess
from ffedge.errors import FFEdgeError
from ffedge.spec import DECODE


def detect_image(
    runner: Any,
    image_bgr: np.ndarray,
    score_threshold: float = 0.5,
    nms_threshold: float = DECODE.nms_threshold,
    size: tuple[int, int] | None = None,
    mode: str | None = None,
    top_k: int | None = DECODE.top_k,
    max_detections: int | None = DECODE.max_detections,
) -> Detections:
    """Faces in one HWC uint8 BGR image, in its own pixel coordinates.

    ``size`` (H, W) defaults to the runner's spec input size; ``mode`` is ``"letterbox"``,
    ``"resize"`` or ``"original"`` (the image's own size padded to a multiple of 32),
    default the spec's ``resize_mode``.
    """
    spec = runner.spec
    info = getattr(runner, "info", None)
    fixed = getattr(info, "fixed_size", None)
    if fixed is not None:
        if mode == "original":
            raise FFEdgeError(
                f"{runner.describe() if hasattr(runner, 'describe') else 'this artifact'} has a "
                f"fixed input size {fixed[0]}x{fixed[1]}; original-size detection needs a "
                "dynamic-size artifact or model"
            )
        if size is not None and tuple(size) != tuple(fixed):
            raise FFEdgeError(
                f"input size {size[0]}x{size[1]} requested, but the artifact is fixed at "
                f"{fixed[0]}x{fixed[1]}"
            )
    x, transform = preprocess(image_bgr, spec, size, mode)
    boxes, scores, landmarks = runner.infer(x[None])
    decoder = Decoder(spec, score_threshold=score_threshold, nms_threshold=nms_threshold,
                      top_k=top_k, max_detections=max_detections)
    return decoder(boxes, scores, landmarks, [transform], scores_are="probabilities")[0]
