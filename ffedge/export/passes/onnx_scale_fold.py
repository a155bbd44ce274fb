"""ONNX: fold constant scales (BiFPN fast-normalised fusion weights) into the producing conv.

At deploy time ``relu(w) / (sum(relu(w)) + eps)`` is a constant, so each fusion input is
``Mul(x, c)``. When ``x`` comes from a Conv whose output has no other consumer - directly or
through nearest-neighbour Resize or MaxPool (both commute with a scale ``c >= 0``) - the scale
moves into the conv's weights and bias and the Mul disappears. Per-channel constants
(``[C]``, ``[C,1,1]``, ``[1,C,1,1]``) fold the same way (MaxPool only when every ``c >= 0``).
"""

from __future__ import annotations

import numpy as np

from ffedge.export.passes._onnx_graph import attr, bypass, consumers, initializer

PASSTHROUGH = ("Resize", "MaxPool")


def _channel_scale(c: np.ndarray, channels: int) -> np.ndarray | None:
    if c.size == 1:
        return np.full(channels, float(c.reshape(())), dtype=np.float32)
    squeezed = c.reshape(-1) if c.size == channels else None
    if squeezed is None or (c.ndim >= 3 and c.shape[-2:] != (1, 1)):
        return None
    if c.ndim == 4 and c.shape[0] != 1:
        return None
    return squeezed.astype(np.float32)


def _producer_chain(graph, name: str, uses, producers) -> list | None:
    """[conv, passthrough...] ending at ``name``, every link single-consumer; else None."""
    chain = []
    outputs = {o.name for o in graph.output}
    while True:
        node = producers.get(name)
        if node is None or len(uses[name]) != 1 or name in outputs:
            return None
        chain.append(node)
        if node.op_type == "Conv":
            return chain[::-1]
        if node.op_type not in PASSTHROUGH:
            return None
        if node.op_type == "Resize" and attr(node, "mode", b"nearest") != b"nearest":
            return None
        name = node.input[0]


def _scale_conv(graph, conv, scale: np.ndarray) -> bool:
    from onnx import numpy_helper

    w = initializer(graph, conv.input[1])
    if w is None or w.shape[0] != scale.size:
        return False
    b = initializer(graph, conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
    b = np.zeros(w.shape[0], np.float32) if b is None else b
    wname, bname = conv.output[0] + "_w_scaled", conv.output[0] + "_b_scaled"
    graph.initializer.append(numpy_helper.from_array(
        (w * scale.reshape(-1, 1, 1, 1)).astype(np.float32), wname))
    graph.initializer.append(numpy_helper.from_array((b * scale).astype(np.float32), bname))
    conv.input[:] = [conv.input[0], wname, bname]
    return True


def fold_scales(proto) -> int:
    """Fold in place; returns the number of Mul nodes removed."""
    from ffedge.export.passes._onnx_graph import prune_unused_initializers

    graph = proto.graph
    n = 0
    for mul in list(graph.node):
        if mul.op_type != "Mul":
            continue
        uses = consumers(graph)
        producers = {o: node for node in graph.node for o in node.output}
        for const_i in (1, 0):
            c = initializer(graph, mul.input[const_i])
            if c is None or c.dtype != np.float32:
                continue
            chain = _producer_chain(graph, mul.input[1 - const_i], uses, producers)
            if chain is None:
                continue
            w = initializer(graph, chain[0].input[1])
            scale = None if w is None else _channel_scale(c, w.shape[0])
            if scale is None or (any(x.op_type == "MaxPool" for x in chain) and scale.min() < 0):
                continue
            if _scale_conv(graph, chain[0], scale):
                bypass(graph, mul, mul.input[1 - const_i])
                n += 1
            break
    prune_unused_initializers(graph)
    return n
