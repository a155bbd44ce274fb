"""Numerical verification of an artifact against the PyTorch reference."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ffedge.decoder.transform import preprocess
from ffedge.imageio import list_images, random_images, read_image
from ffedge.runtimes.base import Outputs, Runner
from ffedge.runtimes.compare import Comparator, ParityReport
from ffedge.spec import DeploymentSpec

PARITY_SCORE_THRESHOLD = 0.5
DRAWN_FACE_IMAGES = 4
CALIB_VERIFY_IMAGES = 4


def parity_decoder(spec: DeploymentSpec, score_threshold: float = PARITY_SCORE_THRESHOLD):
    """(outputs, transforms) -> [(boxes, scores)] per image, via the shared decoder."""
    from ffedge.decoder import Decoder

    decoder = Decoder(spec, score_threshold=score_threshold)

    def decode(outputs: Outputs, transforms) -> list[tuple[np.ndarray, np.ndarray]]:
        dets = decoder(*outputs, transforms=transforms, scores_are="probabilities")
        return [(d.boxes, d.scores) for d in dets]

    return decode


def batches_of(spec: DeploymentSpec, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, list]]:
    """Batches of one, preprocessed with the transform that maps back."""
    batches = []
    for img in images:
        x, t = preprocess(img, spec)
        batches.append((x[None], [t]))
    return batches


def photo_batches(spec: DeploymentSpec, paths: Sequence[str | Path]) -> list:
    return batches_of(spec, [read_image(f) for p in paths for f in list_images(p)])


def verification_batches(spec: DeploymentSpec, images: Sequence[str | Path] = (),
                         n_random: int = 2, seed: int = 0) -> list[tuple[np.ndarray, list]]:
    """Batches of one: ``n_random`` structured-noise images plus the given photos."""
    return batches_of(spec, random_images(n_random, spec.input_size, seed)) + photo_batches(
        spec, images)


def verification_images(spec: DeploymentSpec, trained: bool, photos: Sequence[str | Path] = (),
                        calibration=None) -> tuple[list, str]:
    """What a float export is verified on, and a phrase saying so.

    Trained weights: the user's photos, else photos from the calibration source, else drawn
    faces (:mod:`ffedge.drawn_faces`) — always images with faces, so detections are checked.
    Random weights: structured noise plus any photos (only raw outputs are gated).
    """
    if photos:
        return photo_batches(spec, photos), f"{len(photos)} given photo path(s)"
    if trained and calibration is not None:
        from ffedge.calibration import open_source

        files = open_source(calibration.source).ordering(calibration.seed)[-CALIB_VERIFY_IMAGES:]
        return photo_batches(spec, files), f"{len(files)} photos from {calibration.source}"
    if trained:
        from ffedge.drawn_faces import drawn_faces

        imgs = [drawn_faces(i, (480, 640)) for i in range(DRAWN_FACE_IMAGES)]
        return batches_of(spec, imgs), f"{len(imgs)} drawn-face images"
    return verification_batches(spec, (), 2), "2 noise images (random weights)"


def verify_runner(reference: Runner, candidate: Runner, batches) -> ParityReport:
    comparator = Comparator(reference, parity_decoder(reference.spec))
    return comparator.run([candidate], batches)[0]
