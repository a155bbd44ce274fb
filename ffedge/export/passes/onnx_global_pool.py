"""ONNX: global mean/max over H and W as GlobalAveragePool / GlobalMaxPool.

``ReduceMean``/``ReduceMax`` over axes (2, 3) with ``keepdims=1`` on a 4-D map is the same
value as the global pooling ops, which onnxruntime runs in its blocked NCHWc layout (no
reorder back to NCHW around each CBAM / attention gate) and OpenVINO maps to pooling.
"""

from __future__ import annotations

from ffedge.export.passes._onnx_graph import attr, initializer, static_shape

GLOBAL = {"ReduceMean": "GlobalAveragePool", "ReduceMax": "GlobalMaxPool"}


def _axes(graph, node) -> list[int] | None:
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = initializer(graph, node.input[1])
        axes = None if value is None else value.reshape(-1).tolist()
    return None if axes is None else sorted(int(a) for a in axes)


def to_global_pool(proto) -> int:
    """Rewrite in place; returns how many nodes changed."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    n = 0
    for i, node in enumerate(proto.graph.node):
        if node.op_type not in GLOBAL or attr(node, "keepdims", 1) != 1:
            continue
        shape = static_shape(inferred, node.input[0])
        if shape is None or len(shape) != 4 or _axes(proto.graph, node) not in ([2, 3], [-2, -1]):
            continue
        new = onnx.helper.make_node(GLOBAL[node.op_type], [node.input[0]], list(node.output),
                                    name=node.name)
        proto.graph.node[i].CopyFrom(new)
        n += 1
    return n
