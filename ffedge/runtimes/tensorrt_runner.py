"""TensorRT runner: a serialized engine (``.engine`` / ``.plan``) plus its ``.json`` sidecar.

Written against TensorRT's Python API as documented for 8.6, 10.x and 11.x:
``trt.Runtime(logger).deserialize_cuda_engine(bytes)``, the engine's I/O tensors by name
(``num_io_tensors``, ``get_tensor_name``, ``get_tensor_mode``, ``get_tensor_shape``),
``IExecutionContext.set_tensor_address`` + ``execute_async_v3(stream)``. CUDA buffers come
from cuda-python (``cuda.bindings.runtime``, or the older ``cuda.cudart``), imported lazily.

Engines are not portable: the sidecar records the TensorRT version, GPU name and compute
capability of the build, and a mismatch is refused with one line before deserialising.
NMS stays in the shared decoder (TensorRT's EfficientNMS plugins drop landmarks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ffedge.artifact.metadata import OUTPUT_NAMES, read_sidecar, sidecar_path
from ffedge.errors import FFEdgeError, MissingDependencyError
from ffedge.runtimes.base import ArtifactInfo, Outputs, Runner, input_geometry

ENGINE_SUFFIXES = (".engine", ".plan")
INSTALL_HINT = ("on a Jetson it ships with JetPack (sudo apt install nvidia-jetpack; Python "
                "bindings: python3-libnvinfer), on an x86 NVIDIA GPU: pip install tensorrt "
                "cuda-python; it cannot run on a machine without an NVIDIA GPU")


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependencyError(f"TensorRT is not installed: {INSTALL_HINT}") from None
    return trt


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise MissingDependencyError(
                "cuda-python is not installed (TensorRT needs it for device buffers here): "
                "pip install cuda-python") from None
    return cudart


def cuda_check(result: tuple) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise FFEdgeError(f"CUDA call failed: {err}")
    return rest[0] if len(rest) == 1 else (rest or None)


def device_identity() -> dict[str, Any]:
    """This machine's TensorRT version, GPU name and compute capability."""
    trt = import_tensorrt()
    cudart = import_cudart()
    prop = cuda_check(cudart.cudaGetDeviceProperties(0))
    name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return {"tensorrt": trt.__version__, "device": name,
            "compute_capability": f"{prop.major}.{prop.minor}"}


def check_engine_identity(built: dict[str, Any], here: dict[str, Any], path: Path) -> None:
    """Refuse an engine built with another TensorRT or on another GPU, in one line."""
    same_trt = str(built.get("tensorrt")) == str(here["tensorrt"])
    same_cc = str(built.get("compute_capability")) == str(here["compute_capability"])
    if not (same_trt and same_cc):
        raise FFEdgeError(
            f"{path.name} was built with TensorRT {built.get('tensorrt')} on "
            f"{built.get('device')} (sm {built.get('compute_capability')}); this machine has "
            f"TensorRT {here['tensorrt']} on {here['device']} (sm {here['compute_capability']}): "
            "engines are not portable, rebuild it here from its bundle "
            "(python -m ffedge.export.trt_build BUNDLE)")


def read_engine_sidecar(path: Path) -> tuple[Any, dict[str, Any]]:
    meta = read_sidecar(path)
    if meta is None:
        raise FFEdgeError(f"{path.name} has no {sidecar_path(path).name} sidecar (TensorRT "
                          "version, device, spec); build engines with python -m "
                          "ffedge.export.trt_build")
    built = meta.extra.get("tensorrt", {})
    if isinstance(built, str):
        built = json.loads(built)
    return meta, built


class EngineSession:
    """A deserialised engine with device buffers for its static-shape I/O tensors."""

    def __init__(self, engine_bytes: bytes, dla_core: int | None = None) -> None:
        trt = import_tensorrt()
        self.cudart = import_cudart()
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        runtime = trt.Runtime(logger)
        if dla_core is not None:
            runtime.DLA_core = int(dla_core)
        self.engine = runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise FFEdgeError("TensorRT could not deserialise the engine (another TensorRT "
                              "version or GPU built it?)")
        self.context = self.engine.create_execution_context()
        self.stream = cuda_check(self.cudart.cudaStreamCreate())
        self.tensors: dict[str, tuple[tuple[int, ...], Any, bool]] = {}
        self.device: dict[str, int] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise FFEdgeError(f"engine tensor {name} has a dynamic shape {shape}; our "
                                  "bundles build static engines")
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            self.tensors[name] = (shape, dtype, is_input)
            nbytes = int(np.prod(shape)) * dtype.itemsize
            self.device[name] = cuda_check(self.cudart.cudaMalloc(nbytes))
            self.context.set_tensor_address(name, int(self.device[name]))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cud = self.cudart
        h2d = cud.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cud.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, (shape, dtype, is_input) in self.tensors.items():
            if is_input:
                x = np.ascontiguousarray(feeds[name], dtype=dtype).reshape(shape)
                cuda_check(cud.cudaMemcpyAsync(self.device[name], x.ctypes.data, x.nbytes, h2d,
                                               self.stream))
        if not self.context.execute_async_v3(int(self.stream)):
            raise FFEdgeError("TensorRT execute_async_v3 failed")
        outs = {}
        for name, (shape, dtype, is_input) in self.tensors.items():
            if not is_input:
                y = np.empty(shape, dtype=dtype)
                cuda_check(cud.cudaMemcpyAsync(y.ctypes.data, self.device[name], y.nbytes, d2h,
                                               self.stream))
                outs[name] = y
        cuda_check(cud.cudaStreamSynchronize(self.stream))
        return outs

    def input_names(self) -> list[str]:
        return [n for n, (_, _, i) in self.tensors.items() if i]

    def close(self) -> None:
        for ptr in self.device.values():
            self.cudart.cudaFree(ptr)
        self.device.clear()


class TensorRTRunner(Runner):
    """Runs a ``.engine``/``.plan`` built by :mod:`ffedge.export.trt_build` (batch 1)."""

    runtime = "tensorrt"

    def __init__(self, path: str | Path, model_name: str | None = None,
                 input_size: tuple[int, int] | None = None, threads: int | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            raise FFEdgeError(f"{p} is a bundle: build its engine on the device first "
                              f"(python -m ffedge.export.trt_build {p}), then pass the .engine")
        meta, built = read_engine_sidecar(p)
        layout, fixed = input_geometry(list(built.get("input_shape", [1, 3, *meta.spec.input_size])))
        spec = meta.spec.with_input_size(*fixed) if fixed else meta.spec
        super().__init__(ArtifactInfo(model=meta.model, spec=spec, precision=meta.precision,
                                      path=p, fixed_size=fixed, layout=layout,
                                      extra={"metadata": meta, "tensorrt": built}), threads)
        self.session: EngineSession | None = None

    def _activate(self) -> None:
        path = self.info.path
        built = self.info.extra["tensorrt"]
        check_engine_identity(built, device_identity(), path)
        self.session = EngineSession(path.read_bytes(), built.get("dla_core"))
        self._input = self.session.input_names()[0]

    def _infer(self, batch: np.ndarray) -> Outputs:
        assert self.session is not None
        results = []
        for i in range(batch.shape[0]):  # static batch-1 engines
            out = self.session.run({self._input: batch[i:i + 1]})
            results.append([out[n].astype(np.float32) for n in OUTPUT_NAMES])
        boxes, scores, landmarks = (np.concatenate([r[k] for r in results]) for k in range(3))
        return boxes, scores, landmarks
