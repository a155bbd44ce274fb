"""On-disk cache of preprocessed calibration tensors.

Decoding and resizing a few hundred JPEGs takes longer than many of the quantisers that
consume them, and the same calibration set is used again and again (ONNX INT8, then
OpenVINO, then TFLite; a rerun after a fidelity-gate failure). Each preprocessed image is
therefore stored once as ``<key>.npy`` — the exact float32 array :func:`preprocess`
returned — and a file that could not be read is remembered as ``<key>.skip`` (its reason),
so a second pass decodes nothing at all.

The key covers everything that changes the tensor: the file (absolute path, size,
modification time), the deployment spec's JSON, the input size, and the preprocessing code
itself (the source of ``ffedge/decoder/transform.py`` and ``ffedge/imageio.py``, and the
OpenCV version, whose resize may differ between releases). Editing an image, changing the
spec or upgrading OpenCV therefore never serves a stale tensor.

Writes go to a temporary file in the cache folder and are renamed into place, so an
interrupted run or two concurrent runs never leave a truncated ``.npy`` behind; a file that
is unreadable anyway (e.g. a disk error) is treated as a miss and rewritten.

Disk cost: 3 x H x W x 4 bytes per image, about 4.7 MiB at 640x640 (1.4 GiB for 300
images). :func:`clear_cache` empties the folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from ffedge.spec import DeploymentSpec

#: Bump when the cache layout (not the preprocessing) changes.
CACHE_FORMAT = 1
CACHE_ENV = "FFEDGE_CACHE"


def default_cache_dir() -> Path:
    """``$FFEDGE_CACHE/calib``, else ``$XDG_CACHE_HOME/ffedge/calib``, else ``~/.cache/ffedge/calib``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / "calib"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ffedge" / "calib"


@functools.cache
def preprocessing_fingerprint() -> str:
    """A digest of the code that turns a file into a tensor (so code changes invalidate)."""
    from ffedge import imageio
    from ffedge.decoder import transform

    h = hashlib.sha256()
    for module in (transform, imageio):
        src = getattr(module, "__file__", None)
        try:
            h.update(Path(src).read_bytes() if src else module.__name__.encode())
        except OSError:
            h.update(module.__name__.encode())
    h.update(cv2.__version__.encode())
    return h.hexdigest()[:16]


def tensor_key(file: Path, spec: DeploymentSpec, size: tuple[int, int]) -> str | None:
    """Cache key of ``file`` preprocessed for ``spec`` at ``size``; None when it cannot be stat'ed."""
    try:
        st = file.stat()
    except OSError:
        return None
    doc = {
        "format": CACHE_FORMAT,
        "file": os.path.abspath(file),
        "bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "spec": spec.to_json(),
        "size": [int(size[0]), int(size[1])],
        "code": preprocessing_fingerprint(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


class TensorCache:
    """A folder of ``<key>.npy`` tensors and ``<key>.skip`` reasons."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"TensorCache({str(self.root)!r})"

    def tensor_path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def skip_path(self, key: str) -> Path:
        return self.root / f"{key}.skip"

    def load(self, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The cached tensor, or None on a miss (absent, unreadable, or of another shape)."""
        path = self.tensor_path(key)
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if arr.dtype != np.float32 or arr.shape != tuple(shape):
            return None
        return arr

    def load_skip(self, key: str) -> str | None:
        """Why this file was skipped last time, or None when it was not."""
        try:
            return self.skip_path(key).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def _write_atomic(self, target: Path, write: Callable[[BinaryIO], object]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem[:16]}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def save(self, key: str, array: np.ndarray) -> None:
        """Store ``array`` under ``key`` atomically (temporary file, then rename)."""
        self._write_atomic(self.tensor_path(key),
                           lambda fh: np.save(fh, np.ascontiguousarray(array), allow_pickle=False))

    def save_skip(self, key: str, reason: str) -> None:
        self._write_atomic(self.skip_path(key), lambda fh: fh.write(reason.encode("utf-8")))

    def entries(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.suffix in (".npy", ".skip"))

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.entries())


def clear_cache(cache_dir: str | os.PathLike[str] | None = None) -> int:
    """Delete the cached tensors and skip records (and stray temporaries); returns bytes freed.

    Only files this cache writes are removed, so pointing ``cache_dir`` at a folder that
    holds anything else by mistake costs nothing but the cache.
    """
    cache = TensorCache(cache_dir)
    if not cache.root.is_dir():
        return 0
    freed = 0
    for p in cache.root.iterdir():
        if p.is_file() and (p.suffix in (".npy", ".skip") or p.name.endswith(".tmp")):
            freed += p.stat().st_size
            p.unlink(missing_ok=True)
    try:
        cache.root.rmdir()
    except OSError:
        pass
    return freed
