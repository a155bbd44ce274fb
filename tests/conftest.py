"""Shared fixtures: where ../shared is, and small synthetic data every test can make."""

from __future__ import annotations

from pathlib import Path

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
