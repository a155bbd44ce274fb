"""Small helpers shared by the ONNX-level passes (consumers, constants, bypassing a node)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def consumers(graph) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            if name:
                out[name].append(node)
    return out


def initializer(graph, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
    return None


def set_initializer(graph, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper

    for i, init in enumerate(graph.initializer):
        if init.name == name:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
            return
    raise KeyError(name)


def attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def bypass(graph, node, keep_input: str) -> None:
    """Remove ``node`` (one output), wiring its consumers to ``keep_input``. When the output
    is a graph output, the producer of ``keep_input`` is renamed to keep the output name."""
    out = node.output[0]
    graph_outputs = {o.name for o in graph.output}
    if out in graph_outputs:
        graph_inputs = {i.name for i in graph.input}
        if keep_input in graph_inputs or keep_input in graph_outputs:
            return  # cannot rename a graph input/output: leave the node
        for other in graph.node:
            other.output[:] = [out if o == keep_input else o for o in other.output]
            if other is not node:
                other.input[:] = [out if i == keep_input else i for i in other.input]
    else:
        for other in graph.node:
            other.input[:] = [keep_input if i == out else i for i in other.input]
    graph.node.remove(node)


def static_shape(proto, name: str) -> list[int] | None:
    """The fully static shape of value ``name`` after shape inference, else ``None``."""
    for vi in list(proto.graph.value_info) + list(proto.graph.output) + list(proto.graph.input):
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            if any(not d.HasField("dim_value") for d in dims):
                return None
            return [d.dim_value for d in dims]
    return None


def prune_unused_initializers(graph) -> None:
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
