"""ONNX: drop Identity nodes, no-op Reshapes and Transposes; merge consecutive Transposes."""

from __future__ import annotations

from ffedge.export.passes._onnx_graph import attr, bypass, consumers, static_shape


def drop_noops(proto) -> int:
    """Remove Identity, shape-preserving Reshape and identity-permutation Transpose nodes
    (in place, after shape inference). Returns how many were removed."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    n = 0
    for node in list(proto.graph.node):
        noop = node.op_type == "Identity"
        if node.op_type == "Reshape":
            before = static_shape(inferred, node.input[0])
            noop = before is not None and before == static_shape(inferred, node.output[0])
        elif node.op_type == "Transpose":
            perm = attr(node, "perm")
            noop = perm is not None and list(perm) == sorted(perm)
        if noop:
            count = len(proto.graph.node)
            bypass(proto.graph, node, node.input[0])
            n += len(proto.graph.node) < count
    return n


def merge_transposes(proto) -> int:
    """``Transpose(p2)(Transpose(p1)(x))`` with a single consumer of the first becomes one
    ``Transpose`` (or nothing when the composition is the identity)."""
    n = 0
    changed = True
    while changed:
        changed = False
        uses = consumers(proto.graph)
        for first in list(proto.graph.node):
            if first.op_type != "Transpose" or len(uses[first.output[0]]) != 1:
                continue
            second = uses[first.output[0]][0]
            p1, p2 = attr(first, "perm"), attr(second, "perm")
            if second.op_type != "Transpose" or p1 is None or p2 is None:
                continue
            if first.output[0] in {o.name for o in proto.graph.output}:
                continue
            composed = [p1[i] for i in p2]
            for a in second.attribute:
                if a.name == "perm":
                    a.ints[:] = composed
            second.input[0] = first.input[0]
            proto.graph.node.remove(first)
            if composed == sorted(composed):
                bypass(proto.graph, second, second.input[0])
            n += 1
            changed = True
            break
    return n
