"""The shared post-processor: priors, box/landmark decoding, score filter, NMS, mapping back."""

from ffedge.decoder.transform import Transform, preprocess, preprocess_batch

__all__ = ["Transform", "preprocess", "preprocess_batch"]
