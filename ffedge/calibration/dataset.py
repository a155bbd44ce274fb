"""One calibration dataset for every quantisation backend.

In the spirit of ``nncf.Dataset(source, transform_fn)``: the images are chosen once
(:mod:`ffedge.calibration.sources`), preprocessed once with the deployment spec through
:func:`ffedge.decoder.transform.preprocess` — the very function inference uses, so a
quantiser never sees a tensor the deployed model would not — and then handed to each
backend in the shape it wants:

* ONNX Runtime: :meth:`CalibrationDataset.as_ort_reader` (a ``CalibrationDataReader``);
* OpenVINO / NNCF: :meth:`CalibrationDataset.as_nncf_dataset` (an ``nncf.Dataset``);
* TFLite / LiteRT: :meth:`CalibrationDataset.representative_dataset` (NHWC generator);
* TensorRT and anything else: :meth:`CalibrationDataset.batches`.

Images that cannot be used are skipped with a reason rather than aborting a long export;
a set with no usable image at all is an error. Tensors live in an on-disk cache
(:mod:`ffedge.calibration.cache`) instead of memory: 300 images at 640x640 are 1.4 GiB of
float32, more than an edge build machine may want resident, and the second export over the
same set then decodes nothing.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ffedge.artifact.metadata import INPUT_NAME
from ffedge.calibration.cache import TensorCache, tensor_key
from ffedge.calibration.sources import DEFAULT_NUM_IMAGES, CalibrationSource, open_source
from ffedge.decoder.transform import preprocess
from ffedge.errors import FFEdgeError, require
from ffedge.imageio import read_image
from ffedge.progress import Progress
from ffedge.spec import DeploymentSpec

PathLike = str | os.PathLike[str]

#: What a broken image may raise on its way through decoding and preprocessing.
_READ_ERRORS = (FFEdgeError, cv2.error, OSError, ValueError, MemoryError)


@dataclass(frozen=True)
class SkippedImage:
    """A calibration file that was left out, and why (one line, for reports)."""

    path: Path
    reason: str


@dataclass
class _Item:
    path: Path
    key: str | None
    array: np.ndarray | None  # kept only when the tensor is not in the disk cache


class CalibrationDataset:
    """Preprocessed calibration tensors ``[1, 3, H, W]`` float32, one per usable image.

    ``files``: the images, in the order they will be served. ``spec``: the deployment spec
    (input size, channel order, mean/std, resize mode) — the same one written into the
    artifact. ``size``: (H, W) to calibrate at, default ``spec.input_size``.
    ``cache_dir``: where tensors are cached (default :func:`default_cache_dir`);
    ``cache=False`` keeps them in memory instead. ``progress``: show a bar on stderr
    (default: when stderr is a terminal).

    All images are read when the dataset is built, so ``len()``, :attr:`files` and
    :attr:`skipped` are known up front. :attr:`decoded` counts the images actually decoded
    (not served from the cache) and :attr:`cache_hits` the others. Each access returns a
    fresh array: a consumer that normalises in place cannot corrupt the set.
    """

    def __init__(self, files: Iterable[PathLike], spec: DeploymentSpec,
                 size: tuple[int, int] | None = None, *, cache_dir: PathLike | None = None,
                 cache: bool = True, progress: bool | None = None) -> None:
        if isinstance(files, (str, os.PathLike)):
            raise FFEdgeError(
                f"CalibrationDataset takes a list of image files, not {os.fspath(files)!r}; "
                "use CalibrationDataset.from_source(path, spec) for a folder or list file"
            )
        self.spec = spec
        h, w = size or spec.input_size
        self.size: tuple[int, int] = (int(h), int(w))
        self.requested: list[Path] = [Path(os.path.abspath(os.fspath(f))) for f in files]
        self.skipped: list[SkippedImage] = []
        self.decoded = 0
        self.cache_hits = 0
        self.source: CalibrationSource | None = None
        self.seed: int | None = None
        self._cache = TensorCache(cache_dir) if cache else None
        self._items: list[_Item] = []
        self._load(progress)

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_source(cls, source: PathLike | CalibrationSource, spec: DeploymentSpec,
                    num_images: int = DEFAULT_NUM_IMAGES, seed: int = 0, *,
                    kind: str | None = None, exclude: Iterable[PathLike] = (),
                    size: tuple[int, int] | None = None, cache_dir: PathLike | None = None,
                    cache: bool = True, progress: bool | None = None) -> CalibrationDataset:
        """Sample ``num_images`` from ``source`` (see :func:`sample_source`) and load them.

        ``kind`` forces the source layout; ``exclude`` keeps files out (e.g. an evaluation
        set drawn first).
        """
        src = source if isinstance(source, CalibrationSource) else open_source(source, kind)
        files = src.sample(num_images, seed, exclude)
        ds = cls(files, spec, size, cache_dir=cache_dir, cache=cache, progress=progress)
        ds.source, ds.seed = src, seed
        return ds

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The shape of every item: ``(1, 3, H, W)``."""
        return (1, 3, self.size[0], self.size[1])

    def _decode(self, path: Path) -> np.ndarray:
        self.decoded += 1
        x, _ = preprocess(read_image(path), self.spec, self.size)
        if x.shape != self.shape[1:] or x.dtype != np.float32:
            raise FFEdgeError(f"preprocessing gave {x.shape} {x.dtype}, expected {self.shape[1:]}")
        return x[None]

    def _store(self, key: str | None, x: np.ndarray) -> np.ndarray | None:
        """Write ``x`` to the cache; returns it when it must stay in memory instead."""
        if self._cache is None or key is None:
            return x
        try:
            self._cache.save(key, x)
        except OSError as exc:
            warnings.warn(
                f"calibration cache {self._cache.root} is not writable ({exc.strerror or exc}); "
                "keeping tensors in memory",
                stacklevel=4,
            )
            self._cache = None
            return x
        return None

    def _load(self, progress: bool | None) -> None:
        if not self.requested:
            raise FFEdgeError("no calibration images given")
        bar = Progress(len(self.requested), "reading calibration images", progress)
        try:
            for path in self.requested:
                self._load_one(path)
                bar.update()
        finally:
            bar.close()
        if not self._items:
            first = self.skipped[0]
            raise FFEdgeError(
                f"no usable calibration images: all {len(self.requested)} failed "
                f"(first: {first.path}: {first.reason})"
            )
        if self.skipped:
            first = self.skipped[0]
            warnings.warn(
                f"skipped {len(self.skipped)} of {len(self.requested)} calibration images that "
                f"could not be read (first: {first.path}: {first.reason}); see .skipped",
                stacklevel=3,
            )

    def _load_one(self, path: Path) -> None:
        if not path.is_file():
            self.skipped.append(SkippedImage(path, "file not found"))
            return
        key = tensor_key(path, self.spec, self.size) if self._cache is not None else None
        if self._cache is not None and key is not None:
            if self._cache.load(key, self.shape) is not None:
                self.cache_hits += 1
                self._items.append(_Item(path, key, None))
                return
            reason = self._cache.load_skip(key)
            if reason is not None:
                self.cache_hits += 1
                self.skipped.append(SkippedImage(path, reason))
                return
        try:
            x = self._decode(path)
        except _READ_ERRORS as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            self.skipped.append(SkippedImage(path, reason))
            if self._cache is not None and key is not None:
                try:
                    self._cache.save_skip(key, reason)
                except OSError:
                    pass
            return
        self._items.append(_Item(path, key, self._store(key, x)))

    # -- access -------------------------------------------------------------------------

    @property
    def files(self) -> list[Path]:
        """The usable images, in serving order (``self[i]`` is ``files[i]``)."""
        return [it.path for it in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> np.ndarray:
        item = self._items[index]
        if item.array is not None:
            return item.array.copy()
        assert self._cache is not None and item.key is not None
        x = self._cache.load(item.key, self.shape)
        if x is None:
            # Cleared (or damaged) behind our back: the file is still the source of truth.
            x = self._decode(item.path)
            item.array = self._store(item.key, x)
        return x

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self._items)):
            yield self[i]

    def __repr__(self) -> str:
        h, w = self.size
        return (f"CalibrationDataset({len(self)} images at {h}x{w}, "
                f"{len(self.skipped)} skipped, spec {self.spec.channel_order}/"
                f"{self.spec.resize_mode})")

    def arrays(self) -> np.ndarray:
        """Every tensor stacked: ``(N, 3, H, W)`` float32 (N x 4.7 MiB at 640x640)."""
        return np.concatenate(list(self), axis=0)

    def batches(self, batch_size: int = 1, drop_last: bool = False) -> Iterator[np.ndarray]:
        """``(B, 3, H, W)`` batches in order; the last one is smaller unless ``drop_last``.

        TensorRT calibrators need every batch at the engine's batch size: pass
        ``drop_last=True`` there.
        """
        if batch_size < 1:
            raise FFEdgeError(f"batch size must be >= 1, not {batch_size}")
        buf: list[np.ndarray] = []
        for x in self:
            buf.append(x)
            if len(buf) == batch_size:
                yield np.concatenate(buf, axis=0)
                buf = []
        if buf and not drop_last:
            yield np.concatenate(buf, axis=0)

    def representative_dataset(self, nhwc: bool = True) -> Iterator[list[np.ndarray]]:
        """TFLite's representative dataset: one ``[array]`` per image, ``[1, H, W, 3]`` by default.

        A generator method with defaults, so ``converter.representative_dataset =
        dataset.representative_dataset`` works as is. TFLite models converted from
        PyTorch usually take NHWC; pass ``nhwc=False`` for an NCHW input.
        """
        for x in self:
            yield [np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nhwc else x]

    def as_ort_reader(self, input_name: str = INPUT_NAME) -> Any:
        """An ONNX Runtime ``CalibrationDataReader`` feeding ``{input_name: [1,3,H,W]}``.

        ``get_next()`` returns None when the set is exhausted and ``rewind()`` starts over,
        so one reader can serve several calibration passes; ``set_range`` supports ORT's
        ``CalibStridedMinMax`` option.
        """
        return _ort_reader_class()(self, input_name)

    def as_nncf_dataset(self, input_name: str | None = None) -> Any:
        """An ``nncf.Dataset`` over this set (needs the ``openvino`` extra).

        Items are the ``[1,3,H,W]`` arrays an OpenVINO model takes; give ``input_name`` for
        an ONNX model, whose NNCF backend wants ``{input_name: array}`` instead.
        """
        nncf = require("nncf", "openvino")
        if input_name is None:
            return nncf.Dataset(self, _identity)
        return nncf.Dataset(self, functools.partial(_as_feed, input_name))

    def to_dict(self) -> dict[str, Any]:
        """What an artifact report records about its calibration set."""
        return {
            "num_images": len(self),
            "input_size": list(self.size),
            "source": str(self.source.path) if self.source else None,
            "source_kind": self.source.kind if self.source else None,
            "seed": self.seed,
            "files": [str(f) for f in self.files],
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
        }


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _as_feed(input_name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    return {input_name: x}


@functools.cache
def _ort_reader_class() -> type:
    """Build the reader class on first use, so onnxruntime is imported only when needed.

    It subclasses ORT's ``CalibrationDataReader`` when onnxruntime is installed (ORT checks
    ``isinstance``), and is a plain class with the same protocol otherwise.
    """
    try:
        from onnxruntime.quantization import CalibrationDataReader as base
    except ImportError:
        base = object

    class OrtCalibrationReader(base):  # type: ignore[misc, valid-type]
        """``get_next() -> {input_name: array} | None``, ``rewind()``, ``set_range()``."""

        def __init__(self, dataset: CalibrationDataset, input_name: str) -> None:
            self.dataset = dataset
            self.input_name = input_name
            self._start, self._end = 0, len(dataset)
            self._pos = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._pos >= self._end:
                return None
            x = self.dataset[self._pos]
            self._pos += 1
            return {self.input_name: x}

        def rewind(self) -> None:
            self._pos = self._start

        def set_range(self, start_index: int, end_index: int) -> None:
            n = len(self.dataset)
            self._start = max(0, min(start_index, n))
            self._end = max(self._start, min(end_index, n))
            self._pos = self._start

        def __len__(self) -> int:
            return len(self.dataset)

        def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
            return self

        def __next__(self) -> dict[str, np.ndarray]:
            feed = self.get_next()
            if feed is None:
                raise StopIteration
            return feed

    return OrtCalibrationReader
