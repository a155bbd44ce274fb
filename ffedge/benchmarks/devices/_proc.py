"""Small helpers to read files and run tools that may be absent (never raise)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def read_text(path: str | Path) -> str | None:
    """A small file's text (NULs stripped), or None when it cannot be read."""
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip() or None
    except OSError:
        return None


def run_text(argv: list[str], timeout: float = 10.0) -> str | None:
    """stdout of ``argv`` (stderr appended), or None when the tool is absent or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return (done.stdout + done.stderr).strip() or None
