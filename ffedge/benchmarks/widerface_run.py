"""Run a detector over the WIDER FACE val images and write the kit's submission folder.

The scoring half of the protocol lives in :mod:`ffedge.benchmarks.widerface`; this module
produces what it scores. It is built for runs that take an hour on an edge CPU:

* images are visited in ground-truth order (``GroundTruth.image_relpath``), so a folder
  always holds a prefix-like set of files and ``--subset`` picks the same images each time;
* it is resumable: an image whose prediction file exists is skipped. ``write_predictions``
  writes through a temp file + rename, so an existing file is always complete; a file that
  still fails to parse (edited by hand) is redone. A marker file records the detector and
  the decoding settings, and a folder made with other settings is refused instead of
  silently mixing two detectors in one score;
* an unreadable image is counted, listed and left without a prediction file: the official
  kit scores an image without a file as "no detections" (its faces stay in the recall
  denominator), and a later run retries it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ffedge.benchmarks.latency import LatencyStats
from ffedge.benchmarks.widerface import (
    GroundTruth,
    PredictionFormatError,
    WiderFaceError,
    read_prediction_file,
    write_predictions,
)
from ffedge.decoder import Decoder, Transform, preprocess
from ffedge.errors import FFEdgeError
from ffedge.imageio import read_image
from ffedge.progress import Progress
from ffedge.runtimes.base import Runner
from ffedge.spec import DECODE

MARKER = ".ffedge-widerface.json"
ORIGINAL = "original"
Size = int | str | None  # None: the spec's input size and resize mode; N: letterbox to NxN


@dataclass(frozen=True)
class DetectSettings:
    """Decoding settings of the run. Defaults are RetinaFace's WIDER FACE evaluation ones:
    a low threshold (the kit sweeps its own thresholds), NMS 0.4, 5,000 candidates,
    750 faces at most."""

    score_threshold: float = 0.02
    nms_threshold: float = DECODE.nms_threshold
    top_k: int = DECODE.top_k
    max_detections: int = DECODE.max_detections
    size: Size = None

    def describe_size(self, runner: Runner) -> str:
        """What the input geometry was, for tables: ``original``, ``letterbox 640x640`` ..."""
        if self.size == ORIGINAL:
            return ORIGINAL
        if isinstance(self.size, int):
            return f"letterbox {self.size}x{self.size}"
        h, w = runner.spec.input_size
        return f"{runner.spec.resize_mode} {h}x{w}"


@dataclass
class RunSummary:
    """What one pass did: how many images were inferred, resumed and unreadable."""

    images: int = 0
    inferred: int = 0
    resumed: int = 0
    faces_written: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    latency: LatencyStats | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "inferred": self.inferred,
            "resumed": self.resumed,
            "faces_written": self.faces_written,
            "unreadable": dict(self.unreadable),
            "seconds": round(self.seconds, 3),
            "latency_ms": self.latency.to_dict() if self.latency else None,
        }


def find_images_root(root: str | os.PathLike[str]) -> Path:
    """The ``images`` folder, given the folder holding ``WIDER_val``, ``WIDER_val``, or
    ``images`` itself (people point at whichever they unpacked)."""
    base = Path(root)
    if not base.is_dir():
        raise WiderFaceError(f"WIDER FACE images folder not found: {base}")
    for candidate in (base / "WIDER_val" / "images", base / "images", base):
        if candidate.is_dir():
            return candidate
    return base  # pragma: no cover - base is a directory, so the loop returns


def check_images_root(images_root: Path, gt: GroundTruth) -> None:
    """Fail early when none of the ground truth's event folders is there (wrong --root)."""
    if gt.events and not any((images_root / e).is_dir() for e in gt.events):
        raise WiderFaceError(
            f"no WIDER FACE event folder (e.g. {gt.events[0]}) under {images_root}; "
            "--root takes the folder with WIDER_val, WIDER_val itself or its images/ folder"
        )


def check_size(runner: Runner, size: Size) -> None:
    """Refuse geometries the artifact cannot take, before any image is read."""
    fixed = runner.info.fixed_size
    where = runner.info.path.name if runner.info.path else runner.info.model
    if size == ORIGINAL and fixed is not None:
        raise WiderFaceError(
            f"--size original needs a model that takes any input size, but {where} is fixed "
            f"at {fixed[0]}x{fixed[1]}; export it with a dynamic size, or drop --size to "
            "letterbox to its input"
        )
    if isinstance(size, int) and fixed is not None and fixed != (size, size):
        raise WiderFaceError(
            f"--size {size}: {where} is fixed at {fixed[0]}x{fixed[1]}; drop --size or pass "
            f"--size {fixed[0]}"
        )


def prepare(image: np.ndarray, runner: Runner, size: Size) -> tuple[np.ndarray, Transform]:
    """Image -> (NCHW batch of one, Transform back), as ``size`` asks."""
    if size == ORIGINAL:
        x, t = preprocess(image, runner.spec, mode=ORIGINAL)
    elif isinstance(size, int):
        x, t = preprocess(image, runner.spec, size=(size, size), mode="letterbox")
    else:
        x, t = preprocess(image, runner.spec)
    return x[None], t


def make_decoder(runner: Runner, settings: DetectSettings) -> Decoder:
    return Decoder(runner.spec, score_threshold=settings.score_threshold,
                   nms_threshold=settings.nms_threshold, top_k=settings.top_k,
                   max_detections=settings.max_detections)


def run_identity(runner: Runner, settings: DetectSettings) -> dict[str, Any]:
    """What the marker records: predictions from another detector or settings differ."""
    info = runner.info
    return {
        "model": info.model,
        "runtime": runner.runtime,
        "artifact": info.path.name if info.path else None,
        "precision": info.precision,
        "input_size": list(runner.spec.input_size),
        "settings": asdict(settings),
    }


def open_prediction_folder(pred_dir: Path, identity: dict[str, Any]) -> None:
    """Create or reuse ``pred_dir``: same identity, or a fresh folder; clean stale temps."""
    marker = pred_dir / MARKER
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous != identity:
            raise WiderFaceError(
                f"{pred_dir} holds predictions of another run ({_difference(previous, identity)}); "
                "pass another --out or delete the folder"
            )
    elif pred_dir.is_dir() and any(pred_dir.glob("*/*.txt")):
        raise WiderFaceError(
            f"{pred_dir} already holds prediction files not written by ffbench widerface; "
            "pass another --out"
        )
    pred_dir.mkdir(parents=True, exist_ok=True)
    for stale in pred_dir.glob("*/.*.tmp"):  # a temp file of a killed write_predictions
        stale.unlink(missing_ok=True)
    if not marker.is_file():
        marker.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")


def _difference(previous: Any, current: dict[str, Any]) -> str:
    if not isinstance(previous, dict):
        return "unreadable marker"
    flat_prev = {**previous, **previous.get("settings", {})}
    flat_cur = {**current, **current["settings"]}
    diffs = [f"{k}: {flat_prev.get(k)!r} -> {v!r}" for k, v in flat_cur.items()
             if k != "settings" and flat_prev.get(k) != v]
    return ", ".join(diffs) or "different marker"


def is_done(path: Path) -> bool:
    """A prediction file counts as done when it exists and parses (writes are atomic)."""
    if not path.is_file():
        return False
    try:
        read_prediction_file(path)
    except (PredictionFormatError, OSError):
        return False
    return True


def run_detector(
    runner: Runner,
    gt: GroundTruth,
    images_root: str | os.PathLike[str],
    pred_dir: str | os.PathLike[str],
    settings: DetectSettings | None = None,
    progress: bool | None = None,
    on_image: Callable[[str], None] | None = None,
) -> RunSummary:
    """Detect faces on every ground-truth image and write ``pred_dir/<event>/<image>.txt``.

    Images with a complete prediction file are skipped (resume). ``on_image`` is called
    with the relative path of each image actually inferred.
    """
    settings = settings or DetectSettings()
    root, out = Path(images_root), Path(pred_dir)
    check_size(runner, settings.size)
    check_images_root(root, gt)
    open_prediction_folder(out, run_identity(runner, settings))
    decoder = make_decoder(runner, settings)
    runner.activate()  # load before timing: the first image's latency is inference only
    summary = RunSummary(images=gt.num_images)
    samples: list[float] = []
    bar = Progress(gt.num_images, "widerface", progress)
    t0 = time.perf_counter()
    try:
        for i, (event, image) in enumerate(gt.image_keys):
            bar.update()
            if is_done(out / event / f"{image}.txt"):
                summary.resumed += 1
                continue
            rel = gt.image_relpath(i)
            try:
                picture = read_image(root / rel)
            except FFEdgeError as exc:
                summary.unreadable[rel] = str(exc)
                continue
            batch, transform = prepare(picture, runner, settings.size)
            t1 = time.perf_counter()
            outputs = runner.infer(batch)
            samples.append(time.perf_counter() - t1)
            dets = decoder(*outputs, transforms=[transform], scores_are="probabilities")[0]
            write_predictions(out, event, image, dets.boxes, dets.scores)
            summary.inferred += 1
            summary.faces_written += len(dets)
            if on_image is not None:
                on_image(rel)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - t0
        summary.latency = LatencyStats.from_samples(samples) if samples else None
    return summary
