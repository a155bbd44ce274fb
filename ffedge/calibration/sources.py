"""Where calibration images come from, and which of them are used.

Quantisation is only as good as the images it calibrates on, and a fidelity gate is only
honest when it evaluates on images the calibration did not see. This module turns a path
the user gives (a WIDER FACE tree, a RetinaFace ``label.txt``, any image folder, or a text
file of paths) into a :class:`CalibrationSource`, and draws seeded, reproducible samples
from it:

* **Deterministic.** The order of the candidates is a hash of ``(seed, path relative to the
  source)``, not of the file system's listing order nor of a library's random generator,
  so the same tree and seed select the same images on every machine and Python version,
  and moving the tree elsewhere changes nothing.
* **Even across events.** WIDER FACE has 61 event folders of very different sizes (Parade,
  Meeting, ...); sampling uniformly over files would over-represent the large events.
  Files are taken round-robin over the (seed-shuffled) groups instead, so every event
  contributes ``n / 61`` images, give or take one.
* **Disjoint held-out sets.** :meth:`CalibrationSource.split` returns a calibration set and
  an evaluation set that never share a file; the calibration set is the same one
  :meth:`CalibrationSource.sample` returns for that seed, so adding an evaluation set never
  changes what was calibrated on.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ffedge.errors import FFEdgeError
from ffedge.imageio import IMAGE_SUFFIXES, list_images

#: Source layouts, as accepted by ``kind=``.
SOURCE_KINDS = ("widerface", "label", "folder", "list")
DEFAULT_NUM_IMAGES = 300

#: WIDER FACE event folder names: ``0--Parade`` ... ``61--Street_Battle``.
EVENT_DIR = re.compile(r"^\d+--\S+$")
LABEL_FILE = "label.txt"

PathLike = str | os.PathLike[str]


def _abspath(p: PathLike) -> Path:
    """Absolute, without resolving symlinks: the path the user sees, in every report."""
    return Path(os.path.abspath(os.fspath(p)))


def _event_dirs(folder: Path) -> list[Path] | None:
    """The event folders of a WIDER ``images/`` folder, or None when ``folder`` is not one.

    A folder qualifies when it has at least one event-named subfolder and no other
    (non-hidden) subfolder: a general photo folder that happens to hold one ``1--x``
    directory is not mistaken for WIDER FACE.
    """
    if not folder.is_dir():
        return None
    subdirs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
    events = [d for d in subdirs if EVENT_DIR.match(d.name)]
    if not events or len(events) != len(subdirs):
        return None
    return sorted(events, key=lambda d: d.name)


def _wider_images_root(folder: Path) -> Path | None:
    """``folder/images`` or ``folder`` itself, whichever holds the event folders."""
    for candidate in (folder / "images", folder):
        if _event_dirs(candidate) is not None:
            return candidate
    return None


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise FFEdgeError(f"cannot read calibration list {path}: {exc}") from None


def _is_number_line(line: str) -> bool:
    parts = line.split()
    if not parts:
        return False
    try:
        [float(x) for x in parts]
    except ValueError:
        return False
    return True


def _looks_like_label_file(path: Path) -> bool:
    """RetinaFace ``label.txt``: ``# image.jpg`` headers, each followed by lines of numbers.

    A path list may also hold ``#`` comments, so the name ``label.txt`` or at least one
    numeric box line is what tells the two apart.
    """
    if path.name == LABEL_FILE:
        return True
    has_header = has_numbers = False
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for i, raw in enumerate(fh):
            line = raw.strip()
            if line.startswith("#"):
                has_header |= Path(line[1:].strip()).suffix.lower() in IMAGE_SUFFIXES
            elif line:
                if not _is_number_line(line):
                    return False
                has_numbers = True
            if (has_header and has_numbers) or i > 200:
                break
    return has_header and has_numbers


def detect_source_kind(path: PathLike) -> str:
    """Which layout ``path`` is, one of :data:`SOURCE_KINDS`.

    * a file with an image suffix: ``folder`` (a one-image source);
    * a ``.txt`` file: ``label`` when it is a RetinaFace annotation file, else ``list``;
    * a folder holding ``label.txt``: ``label`` (the RetinaFace ``train/`` layout);
    * a folder with ``images/<event>`` subfolders, or event folders itself: ``widerface``;
    * any other folder: ``folder`` (walked recursively).
    """
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() in IMAGE_SUFFIXES:
            return "folder"
        return "label" if _looks_like_label_file(p) else "list"
    if not p.is_dir():
        raise FFEdgeError(f"calibration source not found: {p}")
    if (p / LABEL_FILE).is_file():
        return "label"
    if _wider_images_root(p) is not None:
        return "widerface"
    return "folder"


def _group_key(rel: str) -> str:
    parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
    return parent


@dataclass(frozen=True)
class CalibrationSource:
    """The candidate images of one source, grouped for even sampling.

    ``groups`` maps a group name (a WIDER event folder; ``""`` for a flat source) to its
    files, sorted. ``root`` is what the ordering hash is relative to. ``missing`` lists the
    files a ``label.txt`` or path list names that do not exist (they are dropped, with a
    warning, rather than failing late in the middle of a calibration run).
    """

    path: Path
    kind: str
    root: Path
    groups: dict[str, tuple[Path, ...]]
    missing: tuple[Path, ...] = field(default=())

    @property
    def files(self) -> list[Path]:
        """Every candidate, sorted."""
        return sorted((f for g in self.groups.values() for f in g), key=lambda f: f.as_posix())

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups.values())

    def _rel(self, f: Path) -> str:
        try:
            return f.relative_to(self.root).as_posix()
        except ValueError:
            return f.as_posix()

    def _rank(self, seed: int, name: str) -> str:
        return hashlib.sha256(f"{seed}\0{name}".encode()).hexdigest()

    def ordering(self, seed: int = 0, exclude: Iterable[PathLike] = ()) -> list[Path]:
        """All candidates (minus ``exclude``) in the seeded round-robin order.

        A sample of ``n`` is the first ``n`` of this list: groups are visited in a seeded
        order, one file from each per round, each group's files in a seeded order.
        """
        excluded = {_abspath(e) for e in exclude}
        queues = []
        for name in sorted(self.groups, key=lambda g: self._rank(seed, "group:" + g)):
            files = [f for f in self.groups[name] if f not in excluded]
            files.sort(key=lambda f: self._rank(seed, self._rel(f)))
            if files:
                queues.append(files)
        out: list[Path] = []
        depth = max((len(q) for q in queues), default=0)
        for i in range(depth):
            out.extend(q[i] for q in queues if i < len(q))
        return out

    def sample(self, num_images: int = DEFAULT_NUM_IMAGES, seed: int = 0,
               exclude: Iterable[PathLike] = ()) -> list[Path]:
        """Up to ``num_images`` files, evenly over the groups, never one in ``exclude``."""
        if num_images < 0:
            raise FFEdgeError(f"number of calibration images must be >= 0, not {num_images}")
        order = self.ordering(seed, exclude)
        if not order:
            raise FFEdgeError(f"no images left to sample in {self.path} ({self.kind} source)")
        if len(order) < num_images:
            warnings.warn(
                f"{self.path} has {len(order)} usable candidates, fewer than the "
                f"{num_images} asked for: using all of them",
                stacklevel=2,
            )
        return order[:num_images]

    def split(self, n_calib: int = DEFAULT_NUM_IMAGES, n_eval: int = 0,
              seed: int = 0) -> tuple[list[Path], list[Path]]:
        """A calibration sample and a disjoint held-out sample, both even over the groups.

        The calibration part equals ``sample(n_calib, seed)``. When the source is too small
        for both, the calibration set is served first and a warning says so.
        """
        if n_calib < 0 or n_eval < 0:
            raise FFEdgeError("split sizes must be >= 0")
        order = self.ordering(seed)
        if len(order) < n_calib + n_eval:
            warnings.warn(
                f"{self.path} has {len(order)} candidates, fewer than {n_calib} calibration "
                f"+ {n_eval} evaluation images: the evaluation set gets "
                f"{max(0, len(order) - n_calib)}",
                stacklevel=2,
            )
        return order[:n_calib], order[n_calib:n_calib + n_eval]


def _from_files(path: Path, kind: str, root: Path, files: Iterable[Path],
                missing: Iterable[Path] = (), group_by_folder: bool = False) -> CalibrationSource:
    groups: dict[str, set[Path]] = {}
    for f in files:
        rel = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.as_posix()
        groups.setdefault(_group_key(rel) if group_by_folder else "", set()).add(f)
    missing = tuple(sorted(set(missing), key=lambda f: f.as_posix()))
    if missing:
        warnings.warn(
            f"{path}: {len(missing)} listed image(s) do not exist and are ignored "
            f"(first: {missing[0]})",
            stacklevel=3,
        )
    if not groups:
        raise FFEdgeError(f"no images found in calibration source {path} ({kind} layout)")
    return CalibrationSource(
        path=path,
        kind=kind,
        root=root,
        groups={g: tuple(sorted(fs, key=lambda f: f.as_posix())) for g, fs in sorted(groups.items())},
        missing=missing,
    )


def _widerface(path: Path) -> CalibrationSource:
    root = _wider_images_root(path)
    if root is None:
        raise FFEdgeError(
            f"{path} is not a WIDER FACE tree: expected images/<event>/ folders named like "
            "0--Parade"
        )
    groups = {e.name: tuple(_abspath(f) for f in list_images(e)) for e in _event_dirs(root) or []}
    groups = {name: files for name, files in groups.items() if files}
    if not groups:
        raise FFEdgeError(f"no images found in the event folders of {root}")
    return CalibrationSource(path=_abspath(path), kind="widerface", root=_abspath(root),
                             groups=groups)


def _label(path: Path) -> CalibrationSource:
    label = path / LABEL_FILE if path.is_dir() else path
    if not label.is_file():
        raise FFEdgeError(f"no {LABEL_FILE} in {path}")
    base = label.parent
    images_dir = base / "images"
    found: list[Path] = []
    missing: list[Path] = []
    for raw in _read_lines(label):
        line = raw.strip()
        if not line.startswith("#"):
            continue
        rel = line[1:].strip()
        if not rel:
            continue
        # RetinaFace's loader reads ``<dir of label.txt>/images/<rel>``; some re-packings
        # drop the ``images/`` level, so accept that too rather than fail.
        candidates = [images_dir / rel, base / rel]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            missing.append(_abspath(candidates[0]))
        else:
            found.append(_abspath(hit))
    root = _abspath(images_dir if images_dir.is_dir() else base)
    return _from_files(_abspath(path), "label", root, found, missing, group_by_folder=True)


def _list(path: Path) -> CalibrationSource:
    if not path.is_file():
        raise FFEdgeError(f"calibration list not found: {path}")
    base = path.parent
    found: list[Path] = []
    missing: list[Path] = []
    for raw in _read_lines(path):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        f = _abspath(p if p.is_absolute() else base / p)
        (found if f.is_file() else missing).append(f)
    return _from_files(_abspath(path), "list", _abspath(base), found, missing)


def _folder(path: Path) -> CalibrationSource:
    files = [_abspath(f) for f in list_images(path)]
    root = _abspath(path.parent if path.is_file() else path)
    return _from_files(_abspath(path), "folder", root, files)


def open_source(path: PathLike, kind: str | None = None) -> CalibrationSource:
    """Read the candidate images of ``path``; ``kind`` forces a layout, default: detected.

    Raises :class:`FFEdgeError` for a missing path, an unknown kind, a forced layout that
    does not match, or a source without a single image.
    """
    p = _abspath(Path(path).expanduser())
    if kind is None:
        kind = detect_source_kind(p)
    if kind not in SOURCE_KINDS:
        raise FFEdgeError(f"unknown calibration source kind {kind!r}; choose one of {SOURCE_KINDS}")
    if not p.exists():
        raise FFEdgeError(f"calibration source not found: {p}")
    if kind == "widerface":
        src = _widerface(p)
    elif kind == "label":
        src = _label(p)
    elif kind == "list":
        src = _list(p)
    else:
        src = _folder(p)
    return src


def _as_source(source: PathLike | CalibrationSource, kind: str | None) -> CalibrationSource:
    if isinstance(source, CalibrationSource):
        return source
    return open_source(source, kind)


def sample_source(source: PathLike | CalibrationSource, num_images: int = DEFAULT_NUM_IMAGES,
                  seed: int = 0, *, kind: str | None = None,
                  exclude: Iterable[PathLike] = ()) -> list[Path]:
    """``num_images`` files from ``source`` (a path or an opened source), seeded.

    Pass the calibration files as ``exclude`` to draw a held-out evaluation sample from
    the same source.
    """
    return _as_source(source, kind).sample(num_images, seed, exclude)


def split_source(source: PathLike | CalibrationSource, n_calib: int = DEFAULT_NUM_IMAGES,
                 n_eval: int = 0, seed: int = 0, *,
                 kind: str | None = None) -> tuple[list[Path], list[Path]]:
    """Disjoint (calibration, evaluation) samples of ``source``; see :meth:`CalibrationSource.split`."""
    return _as_source(source, kind).split(n_calib, n_eval, seed)
