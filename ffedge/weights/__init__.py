"""Trained weights shipped with the package (see README.md here for provenance)."""

from __future__ import annotations

from pathlib import Path

from ffedge.digest import file_sha256
from ffedge.errors import CheckpointError

_HERE = Path(__file__).resolve().parent
BUNDLED: dict[str, str] = {
    "v1": "featherface_v1_widerface.pth",
    "v2_ca": "featherface_v2_ca_widerface.pth",
    "eca_cbam": "featherface_eca_cbam_widerface.pth",
}
# sha256 of each bundled file as published (README.md here): a damaged install fails loudly.
BUNDLED_SHA256: dict[str, str] = {
    "v1": "3271e30763c069c9dcad6368ae048c53b6be2acf60179240e6b147e6359ef80d",
    "v2_ca": "c1fb500ec124812fd2d28cd31695bb94b361e1c94282b82dd2dff0e513345111",
    "eca_cbam": "81cdeffd35c13e2123d63080c9bd16a9eebe6f8e0579994ad6322b6393a10666",
}
_VERIFIED: set[Path] = set()




def bundled_checkpoint(model: str, verify: bool = True) -> Path | None:
    """The shipped checkpoint of ``model``, or None when it has none.

    With ``verify`` (the default) the file's sha256 must be the published one (checked once
    per process); a damaged file raises :class:`~ffedge.errors.CheckpointError`.
    """
    name = BUNDLED.get(model)
    if name is None:
        return None
    p = _HERE / name
    if not p.is_file():
        return None
    if verify and p not in _VERIFIED:
        if file_sha256(p) != BUNDLED_SHA256[model]:
            raise CheckpointError(
                f"the bundled {model} weights ({p}) are damaged (sha256 mismatch); reinstall "
                "ffedge or pass --checkpoint PATH"
            )
        _VERIFIED.add(p)
    return p
