"""What every quantised target shares: the calibration set, the held-out gate images and
the FP32 reference they are judged against."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ffedge.errors import FFEdgeError
from ffedge.imageio import list_images

DEFAULT_NUM_EVAL = 50
PROBE_IMAGES = 8
PROBE_CALIB = 32


@dataclass
class CalibrationPlan:
    """Which images calibrate and which judge: disjoint unless the user says otherwise."""

    source: str
    calib_files: list[Path]
    eval_files: list[Path]
    seed: int
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {"source": self.source, "images": len(self.calib_files), "seed": self.seed,
                "eval_images": len(self.eval_files)}


def plan_calibration(calib: str | Path, num_images: int, seed: int,
                     eval_images: str | Path | None = None, num_eval: int = DEFAULT_NUM_EVAL
                     ) -> CalibrationPlan:
    from ffedge.calibration import open_source

    src = open_source(calib)
    calib_files = src.sample(num_images, seed)
    notes = []
    if eval_images is not None:
        eval_files = list_images(eval_images)
        overlap = {p.resolve() for p in eval_files} & {p.resolve() for p in calib_files}
        if overlap:
            notes.append(f"{len(overlap)} evaluation images were also used for calibration")
    else:
        eval_files = src.sample(num_eval, seed, exclude=calib_files)
        if not eval_files:
            raise FFEdgeError(
                f"no held-out images left in {calib} after taking {len(calib_files)} for "
                "calibration: lower --num-images or pass --eval-images DIR"
            )
    if not eval_files:
        raise FFEdgeError(f"no evaluation images found in {eval_images}")
    return CalibrationPlan(str(calib), calib_files, eval_files, seed, notes)


def log(msg: str) -> None:
    print(msg, file=sys.stderr)
