"""One runner interface over every runtime (torch, onnxruntime, OpenVINO, TFLite, TensorRT).

A runner is created cheaply and loads its backend lazily on first use (``activate``).
``infer`` takes an NCHW float32 batch prepared by :func:`ffedge.decoder.preprocess` and
returns numpy ``(boxes_delta [B,P,4], scores [B,P,2], landmarks_delta [B,P,10])`` with
scores as *probabilities* (softmax applied) for every runtime, so the shared decoder treats
all of them alike.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ffedge.spec import DeploymentSpec

Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class ArtifactInfo:
    """What a runner knows about what it runs (read from the artifact's metadata)."""

    model: str
    spec: DeploymentSpec
    precision: str = "fp32"
    path: Path | None = None
    fixed_size: tuple[int, int] | None = None  # None: any size divisible by 32
    layout: str = "NCHW"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        if self.path is None:
            return 0
        p = Path(self.path)
        files = [p] + [p.with_suffix(".bin")] if p.suffix == ".xml" else [p]
        return sum(f.stat().st_size for f in files if f.exists())


def input_geometry(dims: list[int | None]) -> tuple[str, tuple[int, int] | None]:
    """(layout, fixed (H, W) or None) from an artifact's 4-D input dims (None = dynamic)."""
    layout = "NHWC" if len(dims) == 4 and dims[3] == 3 and dims[1] != 3 else "NCHW"
    hw = (dims[1], dims[2]) if layout == "NHWC" else (dims[2], dims[3]) if len(dims) == 4 else (None, None)
    return layout, ((int(hw[0]), int(hw[1])) if hw[0] and hw[1] else None)


def info_for(meta: Any, path: Path, dims: list[int | None],
             input_size: tuple[int, int] | None, **extra: Any) -> ArtifactInfo:
    """The :class:`ArtifactInfo` of an artifact: its metadata's spec at the size the file
    fixes (or ``input_size`` for a dynamic one), its layout from the input dims."""
    layout, fixed = input_geometry(dims)
    spec = meta.spec
    if fixed is not None:
        spec = spec.with_input_size(*fixed)
    elif input_size is not None:
        spec = spec.with_input_size(*input_size)
    return ArtifactInfo(model=meta.model, spec=spec, precision=meta.precision, path=path,
                        fixed_size=fixed, layout=layout, extra={"metadata": meta, **extra})


class Runner(ABC):
    """Base class: subclasses implement ``_activate`` and ``_infer``."""

    runtime: str = ""

    def __init__(self, info: ArtifactInfo, threads: int | None = None) -> None:
        self.info = info
        self.threads = threads
        self._active = False
        self.load_seconds = 0.0

    @property
    def spec(self) -> DeploymentSpec:
        return self.info.spec

    def activate(self) -> Runner:
        if not self._active:
            t0 = time.perf_counter()
            self._activate()
            self.load_seconds = time.perf_counter() - t0
            self._active = True
        return self

    def infer(self, batch: np.ndarray) -> Outputs:
        """Run one NCHW float32 batch; returns (boxes, scores-as-probabilities, landmarks)."""
        self.activate()
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1] != 3:
            from ffedge.errors import FFEdgeError

            raise FFEdgeError(f"expected an NCHW batch with 3 channels, got shape {batch.shape}")
        return self._infer(batch)

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> Outputs: ...

    def describe(self) -> str:
        where = self.info.path.name if self.info.path else self.info.model
        return f"{self.runtime}:{where}"
