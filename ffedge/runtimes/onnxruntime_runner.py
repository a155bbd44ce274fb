"""ONNX Runtime runner (CPU by default; other providers when the wheel has them)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ffedge.artifact.metadata import OUTPUT_NAMES, ArtifactMetadata
from ffedge.errors import FFEdgeError, require
from ffedge.runtimes.base import ArtifactInfo, Outputs, Runner, info_for


def _info_from_model(path: Path, model_name: str | None,
                     input_size: tuple[int, int] | None) -> ArtifactInfo:
    onnx = require("onnx", "onnx")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors have many types
        raise FFEdgeError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    if not proto.graph.node or not proto.graph.input:  # an empty file parses as an empty model
        raise FFEdgeError(f"{path} holds no ONNX graph (empty or truncated file); export it "
                          "again with `ffexport onnx`")
    meta = ArtifactMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    inp = proto.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if meta is None:
        if model_name is None:
            raise FFEdgeError(
                f"{path.name} carries no FeatherFace metadata; pass --model NAME to supply "
                "its deployment spec"
            )
        from ffedge.specs import spec_for

        meta = ArtifactMetadata(model=model_name, spec=spec_for(model_name), precision="unknown")
        _check_detector_outputs(path, proto, model_name)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return info_for(meta, path, dims, input_size, opset=opset)


def _check_detector_outputs(path: Path, proto, model_name: str) -> None:
    """A file without our metadata must at least look like a detector: one 4-D input and
    three outputs ending in 4 (boxes), 2 (scores) and 10 (landmarks) values per prior."""
    inputs = [i for i in proto.graph.input
              if i.name not in {t.name for t in proto.graph.initializer}]
    last = []
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        last.append(dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None)
    rank = len(inputs[0].type.tensor_type.shape.dim) if inputs else 0
    if len(inputs) != 1 or rank != 4 or sorted(x or 0 for x in last) not in ([2, 4, 10],
                                                                            [0, 0, 0]):
        raise FFEdgeError(
            f"{path.name} is not a {model_name} detector: it has {len(inputs)} input(s) and "
            f"{len(last)} output(s) (a FeatherFace export has one 4-D image input and three "
            "outputs: boxes x4, scores x2, landmarks x10 per prior); pass the artifact "
            "`ffexport` wrote, or the right --model"
        )


class OnnxRuntimeRunner(Runner):
    runtime = "onnxruntime"

    def __init__(self, path: str | Path, model_name: str | None = None,
                 input_size: tuple[int, int] | None = None, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        p = Path(path)
        super().__init__(_info_from_model(p, model_name, input_size), threads)
        self.providers = providers
        self.session = None

    def _activate(self) -> None:
        ort = require("onnxruntime", "onnx")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        # Idle worker threads spin by default and steal the cores that preprocessing,
        # decoding and the camera pipeline need: measured here, V1 ran 55 ms without spinning
        # vs 100 ms with, on a loaded 2-core machine. FFEDGE_ORT_SPIN=1 restores it.
        spin = "1" if os.environ.get("FFEDGE_ORT_SPIN") == "1" else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        providers = self.providers or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.info.path), so, providers=providers)
        except Exception as exc:  # ORT raises its own exception types
            raise FFEdgeError(f"onnxruntime cannot load {self.info.path.name}: "
                              f"{str(exc).splitlines()[0][:200]}") from None
        self._input = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]
        self._outputs = list(OUTPUT_NAMES) if set(OUTPUT_NAMES) <= set(names) else names[:3]

    def _infer(self, batch: np.ndarray) -> Outputs:
        if self.info.layout == "NHWC":
            batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        boxes, scores, landmarks = self.session.run(self._outputs, {self._input: batch})
        return boxes, scores, landmarks
