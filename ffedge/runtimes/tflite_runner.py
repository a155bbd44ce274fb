"""TFLite / LiteRT runner (``ai-edge-litert``): XNNPACK on by default, threads configurable.

It also owns the artifact's embedded metadata (a named ``Metadata`` buffer in the
flatbuffer, read with the schema shipped in ``ai_edge_litert``), so reading a ``.tflite``
needs the runtime package only, never the converter. Artifacts are NHWC and may have
integer I/O or decode-in-graph outputs; the runner hides both so every caller still gets
``(box deltas, probabilities, landmark deltas)`` like any other runtime:

* integer inputs are quantised, integer outputs dequantised with the tensor's own params;
* decode-in-graph outputs (normalised ``x1y1x2y2``, face score, normalised landmarks) are
  encoded back to deltas against the same priors (``ffedge.decoder.encode_*``, the exact
  inverse of the shared decoder), so ``ffdetect``/``ffbench`` treat them like raw artifacts.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from ffedge.artifact.formats import (
    read_tflite,
    tflite_schema,
)
from ffedge.artifact.metadata import INPUT_NAME, OUTPUT_NAMES, ArtifactMetadata, read_sidecar
from ffedge.errors import FFEdgeError, require
from ffedge.runtimes.base import ArtifactInfo, Outputs, Runner

TFLITE_IDENTIFIER = b"TFL3"  # the schema's file_identifier, bytes 4-8 of every .tflite


def _info(path: Path, model_name: str | None, input_size: tuple[int, int] | None) -> ArtifactInfo:
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise FFEdgeError(f"{path} is not a TFLite model (no {TFLITE_IDENTIFIER.decode()} "
                          "identifier: empty, truncated or another format); export one with "
                          "`ffexport tflite`")
    try:
        props = read_tflite(data)
    except struct.error:  # offsets pointing past the end: a damaged flatbuffer
        raise FFEdgeError(f"{path} is not a readable TFLite model (damaged)") from None
    meta = ArtifactMetadata.from_props(props) if props else None
    if meta is None:
        meta = read_sidecar(path)
    if meta is None:
        if model_name is None:
            raise FFEdgeError(f"{path.name} carries no FeatherFace metadata (embedded or "
                              "sidecar); pass --model NAME to supply its deployment spec")
        from ffedge.specs import spec_for

        meta = ArtifactMetadata(model=model_name, spec=spec_for(model_name), precision="unknown")
    fb = tflite_schema()
    try:
        graph = fb.Model.GetRootAs(data, 0).Subgraphs(0)
        shape = graph.Tensors(graph.Inputs(0)).ShapeAsNumpy().tolist()
    except (ValueError, IndexError, AttributeError, struct.error):
        raise FFEdgeError(f"{path} is not a readable TFLite model") from None
    layout = "NHWC" if len(shape) == 4 and shape[3] == 3 else "NCHW"
    fixed = (int(shape[1]), int(shape[2])) if layout == "NHWC" else (int(shape[2]), int(shape[3]))
    if input_size is not None and tuple(input_size) != fixed:
        raise FFEdgeError(f"{path.name} has a fixed input of {fixed[0]}x{fixed[1]}; "
                          f"--imgsz {input_size[0]} {input_size[1]} cannot change it")
    return ArtifactInfo(model=meta.model, spec=meta.spec.with_input_size(*fixed),
                        precision=meta.precision, path=path, fixed_size=fixed, layout=layout,
                        extra={"metadata": meta, **meta.extra})


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """TFLite's affine quantisation: ``q = clamp(round(x / scale) + zero_point)``."""
    info = np.iinfo(dtype)
    q = np.round(x / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


class TFLiteRunner(Runner):
    """Runs a ``.tflite`` with ai-edge-litert's Interpreter (XNNPACK unless ``xnnpack=False``)."""

    runtime = "tflite"

    def __init__(self, path: str | Path, model_name: str | None = None,
                 input_size: tuple[int, int] | None = None, threads: int | None = None,
                 xnnpack: bool = True) -> None:
        p = Path(path)
        if not p.is_file():
            raise FFEdgeError(f"artifact not found: {p}")
        super().__init__(_info(p, model_name, input_size), threads)
        self.xnnpack = xnnpack
        self.interpreter: Any = None

    @property
    def decoded(self) -> bool:
        """True for a decode-in-graph artifact (normalised boxes/landmarks, face scores)."""
        return bool(self.info.extra.get("decode_in_graph", False))

    def _activate(self) -> None:
        lite = require("ai_edge_litert.interpreter", "tflite")
        kwargs: dict[str, Any] = {"model_path": str(self.info.path)}
        if self.threads:
            kwargs["num_threads"] = int(self.threads)
        if not self.xnnpack:
            kwargs["experimental_op_resolver_type"] = \
                lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = lite.Interpreter(**kwargs)
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise FFEdgeError(f"ai-edge-litert cannot load {self.info.path.name}: "
                              f"{str(exc).splitlines()[0][:200]}") from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise FFEdgeError(f"{self.info.path.name}: expected one input, found {len(inputs)}")
        self._input = inputs[0]
        self._outputs = self._output_details()

    def _output_details(self) -> list[dict]:
        """Output details in (boxes, scores, landmarks) order, by signature name when present."""
        details = self.interpreter.get_output_details()
        sigs = self.interpreter.get_signature_list()
        if sigs:
            key = next(iter(sigs))
            runner = self.interpreter.get_signature_runner(key)
            by_name = runner.get_output_details()
            if set(OUTPUT_NAMES) <= set(by_name):
                index = {d["index"]: d for d in details}
                return [index[by_name[n]["index"]] for n in OUTPUT_NAMES]
        if len(details) != 3:
            raise FFEdgeError(f"{self.info.path.name}: expected 3 outputs, found {len(details)}")
        return details

    def _feed(self, nhwc: np.ndarray) -> np.ndarray:
        dtype = self._input["dtype"]
        if dtype == np.float32:
            return nhwc
        scale, zero = self._input["quantization"]
        return quantize(nhwc, scale, zero, dtype)

    def _fetch(self, detail: dict) -> np.ndarray:
        out = self.interpreter.get_tensor(detail["index"])
        if detail["dtype"] == np.float32:
            return out.astype(np.float32, copy=True)
        scale, zero = detail["quantization"]
        return dequantize(out, scale, zero)

    def _infer(self, batch: np.ndarray) -> Outputs:
        nhwc = np.ascontiguousarray(batch.transpose(0, 2, 3, 1)) if self.info.layout == "NHWC" \
            else batch
        results: list[tuple[np.ndarray, ...]] = []
        for k in range(nhwc.shape[0]):  # TFLite artifacts have a fixed batch of one
            self.interpreter.set_tensor(self._input["index"], self._feed(nhwc[k:k + 1]))
            self.interpreter.invoke()
            results.append(tuple(self._fetch(d) for d in self._outputs))
        boxes, scores, landmarks = (np.concatenate(parts, axis=0) for parts in zip(*results))
        if self.decoded:
            return self._encode(boxes, scores, landmarks)
        return boxes, scores, landmarks

    def _encode(self, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray) -> Outputs:
        """Decoded outputs -> the deltas/probabilities every runner returns."""
        from ffedge.decoder import encode_boxes, encode_landmarks, generate_priors

        spec = self.info.spec
        priors = generate_priors(spec.priors, *spec.input_size)
        face = scores.reshape(scores.shape[0], -1).astype(np.float32)
        probs = np.stack([1.0 - face, face], axis=-1).astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            deltas = encode_boxes(boxes, priors, spec.priors.variances)
        points = landmarks.reshape(*landmarks.shape[:-1], 5, 2)
        lm = encode_landmarks(points, priors, spec.priors.variances)
        return np.nan_to_num(deltas, nan=0.0, posinf=0.0, neginf=0.0), probs, lm

    def io_details(self) -> dict[str, Any]:
        """Name, shape, dtype and quantisation params of the input and each output."""
        self.activate()

        def one(d: dict) -> dict[str, Any]:
            scale, zero = d["quantization"]
            return {"name": d["name"], "shape": [int(v) for v in d["shape"]],
                    "dtype": np.dtype(d["dtype"]).name, "scale": float(scale),
                    "zero_point": int(zero)}

        return {INPUT_NAME: one(self._input),
                **{n: one(d) for n, d in zip(OUTPUT_NAMES, self._outputs)}}
