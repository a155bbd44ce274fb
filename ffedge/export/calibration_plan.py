"""Which images calibrate and which judge a quantised artifact: disjoint unless the user
says otherwise, and a small folder is split rather than refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ffedge.errors import FFEdgeError
from ffedge.imageio import list_images

DEFAULT_NUM_IMAGES = 300
DEFAULT_NUM_EVAL = 50
MIN_IMAGES = 4  # 2 to calibrate on, 2 to judge with: anything less proves nothing
SMALL_EVAL_SHARE = 0.3  # of a small folder, held out for the gate


@dataclass(frozen=True)
class Calibration:
    """What the user asked for: a source (WIDER FACE, label.txt, folder, list) and sizes."""

    source: str | Path
    num_images: int = DEFAULT_NUM_IMAGES
    seed: int = 0
    eval_images: str | Path | None = None
    num_eval: int = DEFAULT_NUM_EVAL
    cache_dir: str | Path | None = None


@dataclass
class CalibrationPlan:
    source: str
    calib_files: list[Path]
    eval_files: list[Path]
    seed: int
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {"source": self.source, "images": len(self.calib_files), "seed": self.seed,
                "eval_images": len(self.eval_files)}


def plan_calibration(req: Calibration) -> CalibrationPlan:
    """Sample the calibration set and a disjoint held-out set from ``req.source``.

    When the source holds fewer than ``num_images + num_eval`` images, ~30 % (at least 2)
    are held out and the rest calibrate, and a note says so. Fewer than 4 images fail
    with the flag that fixes it.
    """
    from ffedge.calibration import open_source

    src = open_source(req.source)
    if req.eval_images is not None:
        eval_files = list_images(req.eval_images)
        if not eval_files:
            raise FFEdgeError(f"no evaluation images found in {req.eval_images}")
        calib_files = src.ordering(req.seed)[:req.num_images]
        overlap = {p.resolve() for p in eval_files} & {p.resolve() for p in calib_files}
        notes = [f"{len(overlap)} evaluation images were also used for calibration"] if overlap else []
        return CalibrationPlan(str(req.source), calib_files, eval_files, req.seed, notes)
    order = src.ordering(req.seed)
    n = len(order)
    if n < min(MIN_IMAGES, req.num_images + req.num_eval):
        raise FFEdgeError(
            f"{req.source} has {n} usable image(s); calibration needs at least {MIN_IMAGES} "
            "(2 to calibrate, 2 to judge): add photos, or pass --eval-images DIR with "
            "held-out photos")
    notes = []
    n_calib, n_eval = req.num_images, req.num_eval
    if n < n_calib + n_eval:
        n_eval = min(n_eval, max(2, round(n * SMALL_EVAL_SHARE)))
        n_calib = min(n_calib, n - n_eval)
        notes.append(f"{req.source} has {n} images, fewer than {req.num_images} + "
                     f"{req.num_eval} asked for: {n_calib} calibrate, {n_eval} held out for "
                     "the gate (more photos or --eval-images DIR give a stronger check)")
    calib_files = order[:n_calib]
    eval_files = order[n_calib:n_calib + n_eval]
    return CalibrationPlan(str(req.source), calib_files, eval_files, req.seed, notes)
