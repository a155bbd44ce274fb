"""A QDQ linter for TensorRT, usable alone on any ONNX file.

TensorRT's explicit quantisation (the only kind from 10.1 on; 11 is strongly typed) accepts
Q/DQ graphs in one shape: int8 with zero-point 0, per-tensor activation scales, weights
per-channel on axis 0 (or per-tensor), biases left float (no int32 bias DequantizeLinear),
Q/DQ on both inputs of each quantised Conv/Gemm and on the residual input of an Add that
follows a quantised Conv (so the Add fuses into the Conv); deformable-conv offsets/masks and
GridSample grids stay float. On top, every op must be parsed by the target TensorRT version
(the vendored onnx-tensorrt table in :mod:`ffedge.export.trt_versions`).

Each violation is one :class:`LintError` naming the node. ``python -m ffedge.export.trt_lint
model.onnx --trt-version 10.3`` prints them, one per line, exit 1 when any.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ffedge.errors import FFEdgeError
from ffedge.export.trt_versions import TrtVersion, op_supported

QDQ = ("QuantizeLinear", "DequantizeLinear")
INT8 = 3  # onnx.TensorProto.INT8
INT32 = 6
# (op_type, input indices that must stay float)
FLOAT_ONLY_INPUTS = {"DeformConv": (2, 4), "ModulatedDeformConv2d": (1, 2), "GridSample": (1,)}


@dataclass(frozen=True)
class LintError:
    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return f"{self.node}: [{self.rule}] {self.message}"


class _Graph:
    def __init__(self, proto) -> None:
        from onnx import numpy_helper

        self.proto = proto
        self.nodes = list(proto.graph.node)
        self.inits = {i.name: i for i in proto.graph.initializer}
        self.producer = {o: n for n in self.nodes for o in n.output}
        for n in self.nodes:  # Constant nodes count as initializers
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.inits.setdefault(n.output[0], n.attribute[0].t)
        self._np = numpy_helper

    def array(self, name: str):
        t = self.inits.get(name)
        return None if t is None else self._np.to_array(t)

    def dtype(self, name: str) -> int | None:
        t = self.inits.get(name)
        return None if t is None else t.data_type

    def is_const(self, name: str) -> bool:
        return name in self.inits

    def from_dq(self, name: str) -> bool:
        p = self.producer.get(name)
        return p is not None and p.op_type == "DequantizeLinear"

    def dq_of_const(self, name: str) -> bool:
        p = self.producer.get(name)
        return p is not None and p.op_type == "DequantizeLinear" and self.is_const(p.input[0])


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return a.i if a.type == a.INT else a
    return default


def _check_qdq_node(g: _Graph, n) -> list[LintError]:
    errs: list[LintError] = []
    scale = g.array(n.input[1]) if len(n.input) > 1 else None
    zp_name = n.input[2] if len(n.input) > 2 else ""
    if not zp_name:
        if n.op_type == "QuantizeLinear":
            errs.append(LintError("dtype", n.name, "no zero-point: the output defaults to "
                                  "uint8; TensorRT needs int8 (zero-point of type int8, value 0)"))
    else:
        zp = g.array(zp_name)
        if zp is None:
            errs.append(LintError("zero-point", n.name, "zero-point is computed at run time; "
                                  "it must be a constant 0"))
        else:
            if g.dtype(zp_name) != INT8:
                errs.append(LintError("dtype", n.name, f"zero-point type is "
                                      f"{zp.dtype}, TensorRT needs int8"))
            if zp.size and abs(zp.astype("int64")).max() != 0:
                errs.append(LintError("zero-point", n.name, f"zero-point is not 0 "
                                      f"(max |zp| {int(abs(zp.astype('int64')).max())})"))
    if n.op_type == "DequantizeLinear" and g.dtype(n.input[0]) == INT32:
        errs.append(LintError("bias", n.name, "int32 DequantizeLinear (a quantised bias): "
                              "TensorRT wants biases float; quantise with QuantizeBias=False"))
    weight = n.op_type == "DequantizeLinear" and g.is_const(n.input[0])
    if scale is not None and scale.size > 1:
        if not weight:
            errs.append(LintError("per-tensor", n.name, f"activation scale has {scale.size} "
                                  "values; TensorRT needs one scale per activation tensor"))
        elif _attr(n, "axis", 1) not in (0, -4 if g.array(n.input[0]).ndim == 4 else 0):
            errs.append(LintError("axis", n.name, f"per-channel weight scale on axis "
                                  f"{_attr(n, 'axis', 1)}; TensorRT needs axis 0"))
    elif scale is None:
        errs.append(LintError("per-tensor", n.name, "scale is computed at run time; it must "
                              "be a constant"))
    return errs


def _check_placement(g: _Graph, n) -> list[LintError]:
    errs: list[LintError] = []
    if n.op_type in ("Conv", "Gemm") and len(n.input) >= 2:
        x_q, w_q = g.from_dq(n.input[0]), g.dq_of_const(n.input[1])
        if w_q and not x_q:
            errs.append(LintError("placement", n.name, f"{n.op_type} has quantised weights "
                                  "but a float input: put Q/DQ on its input"))
        if x_q and not w_q:
            errs.append(LintError("placement", n.name, f"{n.op_type} has a quantised input "
                                  "but float weights: put a DequantizeLinear on its weights"))
    if n.op_type == "Add" and len(n.input) == 2:
        for i in (0, 1):
            p = g.producer.get(n.input[i])
            other = n.input[1 - i]
            if (p is not None and p.op_type == "Conv" and g.from_dq(p.input[0])
                    and not g.is_const(other) and not g.from_dq(other)
                    and g.producer.get(other) is not None
                    and g.producer[other].op_type != "Conv"):
                errs.append(LintError("residual", n.name, f"residual input {other!r} of an Add "
                                      "after a quantised Conv has no Q/DQ; TensorRT then "
                                      "cannot fuse the Add into the Conv"))
                break
    for idx in FLOAT_ONLY_INPUTS.get(n.op_type, ()):
        if idx < len(n.input) and g.from_dq(n.input[idx]):
            errs.append(LintError("float-input", n.name, f"input {idx} ({n.input[idx]}) of "
                                  f"{n.op_type} is quantised; offsets, masks and sampling "
                                  "grids must stay float"))
    return errs


def lint_model(proto, version: TrtVersion | str | None = None) -> list[LintError]:
    """Every TensorRT violation in ``proto`` (an onnx.ModelProto), one per node and rule."""
    if isinstance(version, str):
        version = TrtVersion.parse(version)
    g = _Graph(proto)
    errs: list[LintError] = []
    for n in g.nodes:
        if n.op_type in QDQ:
            errs.extend(_check_qdq_node(g, n))
        errs.extend(_check_placement(g, n))
    if version is not None:
        errs.extend(_check_ops(g, version))
    return errs


def _check_ops(g: _Graph, version: TrtVersion) -> list[LintError]:
    errs: list[LintError] = []
    opset = next((o.version for o in g.proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset > version.max_opset:
        errs.append(LintError("opset", "<graph>", f"opset {opset}; TensorRT {version} parses "
                              f"opset <= {version.max_opset}"))
    for n in g.nodes:
        ok = op_supported(n.op_type, version)
        if ok is False:
            errs.append(LintError("op", n.name, f"{n.op_type} is not supported by TensorRT "
                                  f"{version.major}.{version.minor} (onnx-tensorrt operators.md)"))
        elif ok is None:
            errs.append(LintError("op", n.name, f"{n.op_type} is not in the vendored TensorRT "
                                  "operator table: check onnx-tensorrt docs/operators.md"))
    return errs


def lint_file(path: str | Path, version: TrtVersion | str | None = None) -> list[LintError]:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors have many types
        raise FFEdgeError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    return lint_model(proto, version)


def raise_on_errors(errors: list[LintError], what: str) -> None:
    if errors:
        shown = "; ".join(str(e) for e in errors[:5])
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        raise FFEdgeError(f"{what} breaks TensorRT's rules ({len(errors)} errors): {shown}{more}")


def main(argv: list[str] | None = None) -> int:
    import argparse

    from ffedge.export.trt_versions import resolve_version

    ap = argparse.ArgumentParser(prog="python -m ffedge.export.trt_lint",
                                 description="Check an ONNX file against TensorRT's Q/DQ and "
                                 "operator rules; one line per violation, exit 1 when any.")
    ap.add_argument("onnx")
    grp = ap.add_mutually_exclusive_group()
    grp.add_argument("--trt-version", help="target TensorRT X.Y[.Z] (operator/opset checks)")
    grp.add_argument("--jetpack", help="target JetPack (5.1, 6.0, 6.1, 6.2, 7)")
    args = ap.parse_args(argv)
    try:
        version = resolve_version(args.jetpack, args.trt_version)
        errors = lint_file(args.onnx, version)
    except FFEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for e in errors:
        print(e)
    print(f"{len(errors)} violation(s) for TensorRT {version}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
