"""Content hashes: where an artifact lives on a device, and the TensorRT engine cache key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ffedge.digest import file_sha256

# Never copied to a device: a TensorRT engine only runs on the GPU and TensorRT it was built by.
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def is_engine(path: Path) -> bool:
    return path.suffix.lower() in ENGINE_SUFFIXES


def bundle_files(folder: Path) -> list[Path]:
    """The files of a bundle folder that travel to a device (engines stay behind), sorted."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not is_engine(p) and not p.name.startswith("."))


def artifact_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's travelling files (names and contents)."""
    h = hashlib.sha256()
    if path.is_dir():
        for f in bundle_files(path):
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
            h.update(file_sha256(f).encode())
        return h.hexdigest()
    return file_sha256(path)




def engine_cache_key(artifact_sha: str, tensorrt: str, board: str, precision: str,
                     dla_core: int | None = None) -> str:
    """The name of a TensorRT engine built on a device: it is valid only for this artifact,
    TensorRT version, board, precision and DLA core (-1 / None: the GPU)."""
    fields = {"artifact": artifact_sha, "tensorrt": tensorrt, "board": board.strip(),
              "precision": precision.lower(), "dla": -1 if dla_core is None else int(dla_core)}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]
    dla = "gpu" if fields["dla"] < 0 else f"dla{fields['dla']}"
    return f"{artifact_sha[:12]}-trt{tensorrt}-{fields['precision']}-{dla}-{digest}"


def engine_cache_path(cache_root: Path, key: str) -> Path:
    """``<cache>/engines/<key>.engine`` (e.g. ``~/.cache/ffedge/engines/...``)."""
    return cache_root / "engines" / f"{key}.engine"
