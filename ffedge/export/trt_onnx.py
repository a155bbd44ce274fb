"""TensorRT-ready ONNX: static shape, constant-folded, deformable convs in the form the
target TensorRT parses.

- ``native``: ONNX ``DeformConv`` (opset 19), parsed natively from TensorRT 10.1 (the parser
  maps it onto the ModulatedDeformConv2d plugin; ``trt.init_libnvinfer_plugins`` first);
- ``plugin``: a custom node ``ModulatedDeformConv2d`` (domain ``trt``) with the plugin's
  inputs (x, offset, mask, weight, bias) and attributes stride/padding/dilation (INTS, 2
  values), group/deformable_group (INT), plugin_version "1", plugin_namespace "": the
  parser's fallback importer hands it to the plugin of that name (TensorRT 8.6; ONNX INTS
  and INT attributes become kINT32 plugin fields, which the plugin creator expects);
  the graph is retargeted to opset 17, the highest 8.6 parses;
- ``gridsample``: GridSample + MatMul (opset 17), parsed from TensorRT 8.5.

Models without deformable convs ignore the mode (recorded as ``none``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ffedge.errors import FFEdgeError
from ffedge.export.onnx_export import OnnxGraph, OnnxOptions, check, node_histogram, trace_to_onnx
from ffedge.export.trt_versions import TrtVersion, check_dcn_mode, default_dcn_mode
from ffedge.models.dcn import has_dcn

PLUGIN_OP = "ModulatedDeformConv2d"
PLUGIN_DOMAIN = "trt"
PLUGIN_ATTRS = ("stride", "padding", "dilation", "group", "deformable_group")
PLUGIN_OPSET = 17  # TensorRT 8.6 parses opset <= 17
# Ops whose opset-19 form is also valid at 13..17 when no newer attribute/input is used.
# (Opset 18/19 mostly added types; the names listed are what a node must not use.)
_RETARGET_SAFE = {"Pad": ("axes",), "Resize": ("antialias", "axes", "keep_aspect_ratio_policy"),
                  "QuantizeLinear": ("saturate",), "DequantizeLinear": (), "Constant": (),
                  "Reshape": (), "Identity": (), "Cast": ("saturate",), "Shape": (),
                  "AveragePool": ("dilations",)}


@dataclass
class TrtOnnx:
    """The graph TensorRT will parse, plus the one onnxruntime can run (they differ only
    in plugin mode, where the DeformConv nodes become plugin nodes)."""

    proto: object  # onnx.ModelProto for TensorRT
    ort_proto: object  # onnx.ModelProto onnxruntime runs (same numerics)
    dcn_mode: str  # "none", "native", "plugin", "gridsample"
    opset: int
    simplifier: str

    @property
    def histogram(self) -> dict[str, int]:
        return node_histogram(self.proto)


def resolve_dcn_mode(model_has_dcn: bool, version: TrtVersion, requested: str | None) -> str:
    if not model_has_dcn:
        return "none"
    if requested is None:
        return default_dcn_mode(version)
    check_dcn_mode(requested, version)
    return requested


def trace_for_trt(net, input_size: tuple[int, int], version: TrtVersion,
                  dcn_mode: str | None = None) -> TrtOnnx:
    """Trace ``net`` at a static ``input_size`` into the onnxruntime-runnable graph for the
    target; call :func:`finish_for_trt` on it (after quantisation, if any)."""
    mode = resolve_dcn_mode(has_dcn(net), version, dcn_mode)
    if mode == "native":
        opts = OnnxOptions(opset=19, dcn="native")
    elif mode == "plugin":
        opts = OnnxOptions(opset=19, dcn="native")  # rewritten into plugin nodes later
    else:
        opts = OnnxOptions(opset=min(17, version.max_opset), dcn="gridsample")
    if opts.opset > version.max_opset and mode != "plugin":
        raise FFEdgeError(f"TensorRT {version} parses ONNX opset <= {version.max_opset}, this "
                          f"graph needs {opts.opset}; target a newer TensorRT")
    graph: OnnxGraph = trace_to_onnx(net, input_size, opts)
    return TrtOnnx(graph.proto, graph.proto, mode, graph.opset, graph.simplifier)


def finish_for_trt(g: TrtOnnx) -> TrtOnnx:
    """The TensorRT graph from the onnxruntime one: plugin nodes + opset 17 in plugin mode."""
    import onnx

    if g.dcn_mode != "plugin":
        return TrtOnnx(g.ort_proto, g.ort_proto, g.dcn_mode, g.opset, g.simplifier)
    proto = onnx.ModelProto()
    proto.CopyFrom(g.ort_proto)
    n = to_plugin_nodes(proto)
    if n == 0:
        raise FFEdgeError("plugin mode: the graph has no DeformConv node to rewrite")
    retarget_opset(proto, PLUGIN_OPSET)
    check(proto)
    return TrtOnnx(proto, g.ort_proto, "plugin", PLUGIN_OPSET, g.simplifier)


def _ints(node, name: str, default: list[int]) -> list[int]:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints)
    return default


def _int(node, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def to_plugin_nodes(proto) -> int:
    """Rewrite every ONNX ``DeformConv`` (inputs X, W, offset, B, mask) into a
    ``ModulatedDeformConv2d`` plugin node (inputs x, offset, mask, weight, bias)."""
    from onnx import helper

    count = 0
    for node in proto.graph.node:
        if node.op_type != "DeformConv":
            continue
        ins = list(node.input) + [""] * (5 - len(node.input))
        x, w, offset, bias, mask = ins[:5]
        if not mask or not bias:
            raise FFEdgeError(f"DeformConv {node.name} lacks a mask or bias input; the "
                              f"{PLUGIN_OP} plugin needs both")
        pads = _ints(node, "pads", [0, 0, 0, 0])
        if pads[:2] != pads[2:]:
            raise FFEdgeError(f"DeformConv {node.name} has asymmetric pads {pads}")
        attrs = [
            helper.make_attribute("stride", _ints(node, "strides", [1, 1])),
            helper.make_attribute("padding", pads[:2]),
            helper.make_attribute("dilation", _ints(node, "dilations", [1, 1])),
            helper.make_attribute("group", _int(node, "group", 1)),
            helper.make_attribute("deformable_group", _int(node, "offset_group", 1)),
            helper.make_attribute("plugin_version", "1"),
            helper.make_attribute("plugin_namespace", ""),
        ]
        del node.input[:]
        node.input.extend([x, offset, mask, w, bias])
        del node.attribute[:]
        node.attribute.extend(attrs)
        node.op_type, node.domain = PLUGIN_OP, PLUGIN_DOMAIN
        count += 1
    if count and not any(o.domain == PLUGIN_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(PLUGIN_DOMAIN, 1))
    return count


def retarget_opset(proto, opset: int) -> None:
    """Lower the default-domain opset where the graph uses nothing newer (checked per node:
    only ops unchanged in between, or changed ops without their new inputs/attributes)."""
    from onnx import defs

    current = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current <= opset:
        return
    if opset < 18 <= current:
        _reduce_axes_to_attribute(proto)
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        new = defs.get_schema(node.op_type, current).since_version
        old = defs.get_schema(node.op_type, opset).since_version
        if new == old:
            continue
        newer = _RETARGET_SAFE.get(node.op_type, () if node.op_type in _REDUCE_18 else None)
        used = {a.name for a in node.attribute}
        if node.op_type == "Pad" and len(node.input) > 3 and node.input[3]:
            used.add("axes")
        for a in node.attribute:
            if a.name == "coordinate_transformation_mode" and a.s == b"half_pixel_symmetric":
                used.add("antialias")  # a mode added in opset 19
        if newer is None or used & set(newer):
            raise FFEdgeError(f"node {node.name} ({node.op_type}) uses opset {current} "
                              f"features; it cannot be lowered to opset {opset}")
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset


_REDUCE_18 = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


def _reduce_axes_to_attribute(proto) -> None:
    """Opset 18 moved the axes of most Reduce ops from an attribute to an input; put
    constant axes back into the attribute (the form opsets 13-17 and TensorRT 8.6 take)."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type not in _REDUCE_18 or len(node.input) < 2 or not node.input[1]:
            continue
        if node.input[1] not in inits:
            raise FFEdgeError(f"node {node.name} ({node.op_type}) has run-time axes; it "
                              "cannot be lowered below opset 18")
        axes = [int(a) for a in numpy_helper.to_array(inits[node.input[1]]).reshape(-1)]
        del node.input[1:]
        node.attribute.append(helper.make_attribute("axes", axes))
