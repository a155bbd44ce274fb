"""An onnxruntime session that also returns chosen intermediate tensors (for measuring
activation ranges and quantisation noise inside a graph)."""

from __future__ import annotations

from collections.abc import Sequence

from ffedge.errors import require


def session_with_outputs(proto, names: Sequence[str]):
    """An ORT session (no graph optimisation: every node stays as written) that returns
    ``names`` besides the graph outputs."""
    onnx = require("onnx", "onnx")
    ort = require("onnxruntime", "onnx")
    p = onnx.ModelProto()
    p.CopyFrom(proto)
    have = {o.name for o in p.graph.output}
    for n in names:
        if n not in have:
            p.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(p.SerializeToString(), so, providers=["CPUExecutionProvider"])
