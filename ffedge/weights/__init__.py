"""Trained weights shipped with the package (see README.md here for provenance)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
BUNDLED: dict[str, str] = {"v1": "featherface_v1_widerface.pth"}


def bundled_checkpoint(model: str) -> Path | None:
    """The shipped checkpoint of ``model``, or None when it has none."""
    name = BUNDLED.get(model)
    if name is None:
        return None
    p = _HERE / name
    return p if p.is_file() else None
