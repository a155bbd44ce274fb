"""The shared post-processor: priors, box/landmark decoding, score filter, NMS, mapping back.

Numpy (and OpenCV for resizing) only, never torch: a deployment machine that runs an ONNX,
OpenVINO or TFLite artifact uses exactly this code. Typical use::

    dets = Decoder(spec, score_threshold=0.5)(boxes, scores, landmarks, transforms,
                                              scores_are="probabilities")
"""

from ffedge.decoder.decode import (
    decode_boxes,
    decode_landmarks,
    encode_boxes,
    encode_landmarks,
    face_scores,
)
from ffedge.decoder.nms import non_max_suppression
from ffedge.decoder.pipeline import detect_image
from ffedge.decoder.postprocess import Decoder
from ffedge.decoder.priors import generate_priors
from ffedge.decoder.result import LANDMARK_NAMES, Detections
from ffedge.decoder.transform import Transform, preprocess, preprocess_batch

__all__ = [
    "LANDMARK_NAMES",
    "Decoder",
    "Detections",
    "Transform",
    "decode_boxes",
    "decode_landmarks",
    "detect_image",
    "encode_boxes",
    "encode_landmarks",
    "face_scores",
    "generate_priors",
    "non_max_suppression",
    "preprocess",
    "preprocess_batch",
]
