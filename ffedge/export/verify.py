"""Numerical verification of an artifact against the PyTorch reference."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ffedge.decoder.transform import preprocess
from ffedge.export.onnx_export import random_images
from ffedge.imageio import list_images, read_image
from ffedge.runtimes.base import Outputs, Runner
from ffedge.runtimes.compare import Comparator, ParityReport
from ffedge.spec import DeploymentSpec

# fp32 acceptance: max abs error per output, and every face found by both.
FP32_TOLERANCES = {"boxes": 1e-4, "scores": 1e-5, "landmarks": 1e-4}
FP32_MIN_AGREEMENT = 1.0
PARITY_SCORE_THRESHOLD = 0.5


def parity_decoder(spec: DeploymentSpec, score_threshold: float = PARITY_SCORE_THRESHOLD):
    """(outputs, transforms) -> [(boxes, scores)] per image, via the shared decoder."""
    from ffedge.decoder import Decoder

    decoder = Decoder(spec, score_threshold=score_threshold)

    def decode(outputs: Outputs, transforms) -> list[tuple[np.ndarray, np.ndarray]]:
        dets = decoder(*outputs, transforms=transforms, scores_are="probabilities")
        return [(d.boxes, d.scores) for d in dets]

    return decode


def verification_batches(spec: DeploymentSpec, images: Sequence[str | Path] = (),
                         n_random: int = 2, seed: int = 0) -> list[tuple[np.ndarray, list]]:
    """Batches of one: ``n_random`` structured-noise images plus the given photos."""
    arrays = random_images(n_random, spec.input_size, seed)
    for p in images:
        for f in list_images(p):
            arrays.append(read_image(f))
    batches = []
    for img in arrays:
        x, t = preprocess(img, spec)
        batches.append((x[None], [t]))
    return batches


def verify_runner(reference: Runner, candidate: Runner, batches) -> ParityReport:
    comparator = Comparator(reference, parity_decoder(reference.spec))
    return comparator.run([candidate], batches)[0]
