"""Edits of a converted ``.tflite`` flatbuffer, through the schema's object API.

litert-torch decides the I/O types of a statically quantised model by itself (here: int8
input, int8 boxes/landmarks, float scores) and names every tensor after its full module
path (about half the file of a small INT8 model). An app wants one clear contract, so:

* :func:`retype_io` makes the I/O all float, all int8 or all uint8 by adding QUANTIZE /
  DEQUANTIZE ops at the boundary (TFLite's own requantise kernels; XNNPACK runs them);
* :func:`strip_names` drops internal tensor names (kept with ``--keep-names``);
* :func:`io_contract` reads back the names, shapes, dtypes and quantisation params an app
  needs (also written into the metadata).
"""

from __future__ import annotations

from typing import Any

from ffedge.artifact.formats import tflite_schema as schema
from ffedge.artifact.tflite_pack import pack_model, read_model
from ffedge.errors import FFEdgeError

IO_TYPES = ("float", "int8", "uint8")
#: Quantisation of a probability in [0, 1]: TFLite's fixed softmax output params.
PROB_QPARAMS = {"int8": (1.0 / 256.0, -128), "uint8": (1.0 / 256.0, 0)}


def read(data: bytes) -> Any:
    return read_model(data)


def write(model: Any) -> bytes:
    """Serialise with repeated vectors/tables shared (:mod:`ffedge.artifact.tflite_pack`)."""
    return pack_model(model)


def _dtype_codes() -> dict[str, int]:
    t = schema().TensorType
    return {"float32": t.FLOAT32, "int8": t.INT8, "uint8": t.UINT8, "float16": t.FLOAT16,
            "int32": t.INT32}


def _dtype_name(code: int) -> str:
    names = {v: k for k, v in _dtype_codes().items()}
    return names.get(code, str(code))


def _name(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _opcode(model: Any, builtin: int) -> int:
    """Index of ``builtin`` in the model's operator codes, added (version 2) when absent."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    for i, oc in enumerate(model.operatorCodes):
        if fu.get_builtin_code_from_operator_code(oc) == builtin:
            return i
    oc = schema().OperatorCodeT()
    oc.builtinCode = builtin
    oc.deprecatedBuiltinCode = min(builtin, 127)
    oc.version = 2
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def _qparams(tensor: Any) -> tuple[float, int] | None:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        return None
    return float(q.scale[0]), int(q.zeroPoint[0])


def _new_tensor(model: Any, sg: Any, like: Any, dtype: int, qparams: tuple[float, int] | None,
                name: str) -> int:
    fb = schema()
    t = fb.TensorT()
    t.shape = [int(v) for v in like.shape]
    if like.shapeSignature is not None:
        t.shapeSignature = [int(v) for v in like.shapeSignature]
    t.type = dtype
    t.name = name
    buf = fb.BufferT()
    model.buffers.append(buf)
    t.buffer = len(model.buffers) - 1
    if qparams is not None:
        q = fb.QuantizationParametersT()
        q.scale = [float(qparams[0])]
        q.zeroPoint = [int(qparams[1])]
        q.quantizedDimension = 0
        t.quantization = q
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _op(model: Any, builtin: int, src: int, dst: int) -> Any:
    op = schema().OperatorT()
    op.opcodeIndex = _opcode(model, builtin)
    op.inputs = [src]
    op.outputs = [dst]
    return op


def _retarget_signatures(model: Any, old: int, new: int, outputs: bool) -> None:
    for sig in model.signatureDefs or []:
        for entry in (sig.outputs if outputs else sig.inputs) or []:
            if entry.tensorIndex == old:
                entry.tensorIndex = new


def retype_io(data: bytes, io: str, keep_float_outputs: bool = False) -> bytes:
    """Make every input and output ``io`` ("float", "int8" or "uint8").

    Integer tensors keep their scale and take zero point + 128 as uint8. A float output
    becomes integer only when it is the probability output (``scores``), with TFLite's fixed
    softmax params; ``keep_float_outputs`` leaves all outputs as they are (decoded
    coordinates need float precision) and retypes the input only.
    """
    if io not in IO_TYPES:
        raise FFEdgeError(f"unknown --io {io!r}; choose one of {IO_TYPES}")
    fb = schema()
    codes = _dtype_codes()
    ops = fb.BuiltinOperator
    model = read(data)
    sg = model.subgraphs[0]
    head: list[Any] = []
    tail: list[Any] = []
    for pos, idx in enumerate(list(sg.inputs)):
        t = sg.tensors[idx]
        qp = _qparams(t)
        if io == "float" and t.type in (codes["int8"], codes["uint8"]) and qp:
            new = _new_tensor(model, sg, t, codes["float32"], None, _name(t.name))
            head.append(_op(model, ops.QUANTIZE, new, idx))
        elif io == "uint8" and t.type == codes["int8"] and qp:
            new = _new_tensor(model, sg, t, codes["uint8"], (qp[0], qp[1] + 128), _name(t.name))
            head.append(_op(model, ops.QUANTIZE, new, idx))
        elif io != "float" and t.type == codes["float32"]:
            raise FFEdgeError(f"--io {io}: the model's input is float; integer input needs a "
                              "statically quantised model (--precision int8)")
        else:
            continue
        t.name = _name(t.name) + "_q"
        sg.inputs[pos] = new
        _retarget_signatures(model, idx, new, outputs=False)
    names = _output_names(model)
    for pos, idx in enumerate(list(sg.outputs)):
        if keep_float_outputs:
            break
        t = sg.tensors[idx]
        qp = _qparams(t)
        if io == "float" and t.type in (codes["int8"], codes["uint8"]) and qp:
            new = _new_tensor(model, sg, t, codes["float32"], None, _name(t.name))
            tail.append(_op(model, ops.DEQUANTIZE, idx, new))
        elif io == "uint8" and t.type == codes["int8"] and qp:
            new = _new_tensor(model, sg, t, codes["uint8"], (qp[0], qp[1] + 128), _name(t.name))
            tail.append(_op(model, ops.QUANTIZE, idx, new))
        elif io != "float" and t.type == codes["float32"]:
            if names.get(idx) != "scores":
                raise FFEdgeError(f"--io {io}: output {names.get(idx, idx)} is float and has no "
                                  "quantisation params")
            new = _new_tensor(model, sg, t, codes[io], PROB_QPARAMS[io], _name(t.name))
            tail.append(_op(model, ops.QUANTIZE, idx, new))
        else:
            continue
        t.name = _name(t.name) + "_raw"
        sg.outputs[pos] = new
        _retarget_signatures(model, idx, new, outputs=True)
    sg.operators = head + list(sg.operators) + tail
    return write(model)


def _output_names(model: Any) -> dict[int, str]:
    """Tensor index -> signature output name."""
    out: dict[int, str] = {}
    for sig in model.signatureDefs or []:
        for entry in sig.outputs or []:
            out[entry.tensorIndex] = _name(entry.name)
    return out


def strip_names(data: bytes) -> bytes:
    """Internal tensor names removed (graph inputs and outputs keep theirs).

    litert-torch names each tensor after its full module path: half the bytes of a small
    INT8 model; even cut to the last components they cost ~8 KB on nano_b. An app needs
    only the I/O names (and the signature), so the shipped file carries nothing else."""
    model = read(data)
    for sg in model.subgraphs:
        io = set(sg.inputs) | set(sg.outputs)
        for i, t in enumerate(sg.tensors):
            if i not in io:
                t.name = None  # optional in the schema: no string, no offset
    return write(model)


def io_contract(data: bytes) -> dict[str, Any]:
    """``{"input": {...}, "outputs": [{...}, ...]}``: name (signature name), tensor name,
    shape, dtype and, for integer tensors, scale and zero point, in graph order."""
    model = read(data)
    sg = model.subgraphs[0]
    sig = model.signatureDefs[0] if model.signatureDefs else None
    in_names = {e.tensorIndex: _name(e.name) for e in (sig.inputs or [])} if sig else {}
    out_names = _output_names(model)

    def one(idx: int, names: dict[int, str]) -> dict[str, Any]:
        t = sg.tensors[idx]
        d: dict[str, Any] = {"name": names.get(idx, _name(t.name)), "tensor": _name(t.name),
                             "shape": [int(v) for v in t.shape], "dtype": _dtype_name(t.type)}
        qp = _qparams(t)
        if qp is not None and d["dtype"] in ("int8", "uint8"):
            d["scale"], d["zero_point"] = qp
        return d

    return {"input": one(int(sg.inputs[0]), in_names),
            "outputs": [one(int(i), out_names) for i in sg.outputs]}


def op_histogram(data: bytes) -> dict[str, int]:
    from collections import Counter

    from ai_edge_litert.tools import flatbuffer_utils as fu

    fb = schema()
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    model = read(data)
    counts = Counter(
        names.get(fu.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex]), "?")
        for sg in model.subgraphs for op in sg.operators)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))



def int8_float_weights(data: bytes) -> bytes:
    """In an INT8 model, the convs litert-torch leaves in float get int8 weights.

    PT2E leaves some convs unannotated (nano_b: the channel-attention MLPs after
    REDUCE_MAX/MEAN and one depthwise block behind a transpose, ~21 KB of float32 weights).
    Their weights become int8, symmetric per output channel (CONV_2D/FULLY_CONNECTED axis 0,
    DEPTHWISE_CONV_2D axis 3), activations stay float: TFLite's hybrid kernels, which XNNPACK
    runs too. Measured on nano_b 640: file -16 KB, raw outputs move by <= 1.3e-3, latency
    unchanged. The fidelity gate judges the result like any other INT8 change.
    """
    import numpy as np
    from ai_edge_litert.tools import flatbuffer_utils as fu

    fb = schema()
    model = read(data)
    sg = model.subgraphs[0]
    ops = fb.BuiltinOperator
    axes = {ops.CONV_2D: 0, ops.FULLY_CONNECTED: 0, ops.DEPTHWISE_CONV_2D: 3}
    changed = False
    for op in sg.operators:
        axis = axes.get(fu.get_builtin_code_from_operator_code(
            model.operatorCodes[op.opcodeIndex]))
        if axis is None or len(op.inputs) < 2 or op.inputs[1] < 0:
            continue
        t = sg.tensors[op.inputs[1]]
        raw = model.buffers[t.buffer].data
        if t.type != fb.TensorType.FLOAT32 or raw is None or len(raw) == 0:
            continue
        w = np.frombuffer(bytes(raw), dtype="<f4").reshape([int(v) for v in t.shape])
        axis = axis if axis < w.ndim else 0
        rest = tuple(a for a in range(w.ndim) if a != axis)
        scale = (np.maximum(np.abs(w).max(axis=rest), 1e-12) / 127.0).astype(np.float32)
        q = np.clip(np.round(w / np.expand_dims(scale, rest)), -127, 127).astype(np.int8)
        model.buffers[t.buffer].data = np.frombuffer(q.tobytes(), dtype=np.uint8)
        t.type = fb.TensorType.INT8
        qp = fb.QuantizationParametersT()
        qp.scale = scale
        qp.zeroPoint = np.zeros(len(scale), dtype=np.int64)
        qp.quantizedDimension = axis
        t.quantization = qp
        changed = True
    return write(model) if changed else data
