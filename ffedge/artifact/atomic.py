"""Never leave a half-written artifact: write next to the target, then rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ffedge.errors import FFEdgeError


def check_writable(path: str | Path) -> Path:
    """Fail early, with one line, when ``path`` cannot be written."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise FFEdgeError(f"output {p} is a directory; give a file name")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FFEdgeError(f"cannot create output folder {parent}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise FFEdgeError(f"output folder is not writable: {parent}")
    return p


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``."""
    target = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _default_mode())  # mkstemp makes 0600; artifacts are shared files
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextmanager
def atomic_files(paths: list[Path]) -> Iterator[list[Path]]:
    """Several files that belong together (e.g. OpenVINO .xml + .bin): all or none.

    Yields temporary paths in a private folder beside the first target; on success each
    is renamed over its target.
    """
    targets = [check_writable(p) for p in paths]
    tmpdir = Path(tempfile.mkdtemp(prefix=".ffedge-", dir=targets[0].parent))
    try:
        tmps = [tmpdir / t.name for t in targets]
        yield tmps
        missing = [t for t in tmps if not t.exists()]
        if missing:
            raise FFEdgeError(f"export produced no {missing[0].name}")
        for src, dst in zip(tmps, targets):
            os.replace(src, dst)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
