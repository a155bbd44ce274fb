"""Shared fixtures: where ../shared is, and small synthetic data every test can make."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
V1_CHECKPOINT = SHARED / "checkpoints" / "featherface_v1_widerface.pth"
IMAGES = SHARED / "images"


def need_shared(*parts: str) -> Path:
    """Path under ../shared, or skip the test with the reason."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs ../shared/{'/'.join(parts)} (absent on this machine)")
    return p


@pytest.fixture
def v1_checkpoint() -> Path:
    return need_shared("checkpoints", "featherface_v1_widerface.pth")


@pytest.fixture
def shared_images() -> Path:
    return need_shared("images")


def synthetic_images(folder: Path, n: int, size=(200, 260), seed: int = 0) -> Path:
    """``n`` small PNGs (noise plus a bright disc) for calibration and gate tests."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = cv2.resize(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), size[::-1])
        cv2.circle(img, (size[1] // 2, size[0] // 2), 40, (180, 190, 220), -1)
        cv2.imwrite(str(folder / f"img_{i:02d}.png"), img)
    return folder


class ArrayCalibration:
    """The CalibrationDataset interface ORT's quantiser needs, over in-memory arrays."""

    def __init__(self, arrays):
        self.arrays = arrays

    def as_ort_reader(self, name):
        from onnxruntime.quantization import CalibrationDataReader

        arrays = self.arrays

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter(arrays)

            def get_next(self):
                x = next(self.it, None)
                return None if x is None else {name: x}

        return Reader()
