"""INT8 for TFLite after conversion: ai-edge-quantizer on the FP32 ``.tflite``.

Why not PT2E for every model: on V1 (and the other DCN models) the PT2E-quantised graph
never reaches a ``.tflite`` with litert-torch 0.10 — its NCHW->NHWC layout pass inserts
TRANSPOSEs between tensors of different scales (``'tfl.transpose' op quantization parameters
violate the same scale constraint``) or fails to broadcast. Quantising the converted FP32
flatbuffer sidesteps both passes: the layout is already NHWC, and every op is quantised
with its own calibrated input/output parameters by ai-edge-quantizer (static, int8
activations, int8 weights per channel or per tensor), calibrated by running the float
model in the LiteRT interpreter.

What stays float is chosen by scope (the op's output tensor names, which litert-torch sets
to the torch module path; names are stripped only afterwards):

* the DCN sampling block (:class:`~ffedge.export.tflite_dcn.Sampler`: positions, bilinear
  fractions and masks need more than 8 bits),
* the backbone's first stage (MobileNetV1 ``stage1``, six convs at strides 2-8): measured on
  V1 at 640 (6 held-out shared photos, after the target's cross-layer equalisation,
  :mod:`ffedge.export.tflite_equalize`), F1 vs FP32 is 0.934 with only the sampler float
  and no other single block recovers it (stage2 0.954, stage3 0.947, each BiFPN cell ~0.946,
  each SSH ~0.94, the first dw block alone 0.967); stage1 float gives 0.9935,
* in-graph decoding (``DecodeInGraph``, :data:`DECODE_SCOPE`: coordinates need float),
  added by the target when it decodes in the graph,
* any ``keep_float`` scope the caller adds.

Ops ai-edge-quantizer has no int8 rule for stay float with QUANTIZE/DEQUANTIZE around them.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ffedge.errors import FFEdgeError

#: Scopes (regular expressions over op output names) kept float in every AEQ INT8 model.
FLOAT_SCOPES = (r"tflite_dcn\.Sampler_", r"MobileNetV1_body/[^;]*Sequential_stage1/")
#: Fuse ``DEQUANTIZE -> LEAKY_RELU -> QUANTIZE`` into int8 LEAKY_RELU (:func:`fuse_float_islands`).
#: Off: on V1 at 640 it saved no measurable time on XNNPACK here (fused/unfused p50 0.88-1.03
#: over three alternating runs) and the gate's F1 went 0.9935 -> 0.9806 (one face of 77).
FUSE_ISLANDS = False
#: Ops outside the deployment wrapper: the in-graph decoding (and its float outputs); not
#: the graph input (its scope is its own name), which ``--io int8|uint8`` needs quantised.
DECODE_SCOPE = r"^(?!serving_default_images)(?!.*DeployWrapper_inner)"


def _recipe(quantizer: Any, per_channel: bool, float_scopes: Sequence[str]) -> None:
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ops = qtyping.TFLOperationName
    gran = (qtyping.QuantGranularity.CHANNELWISE if per_channel
            else qtyping.QuantGranularity.TENSORWISE)
    quantizer.add_static_config(".*", ops.ALL_SUPPORTED, activation_num_bits=8,
                                weight_num_bits=8, weight_granularity=gran)
    manager = quantizer._recipe_manager  # the public API has no "leave this scope float"
    for scope in float_scopes:
        manager.add_quantization_config(scope, ops.ALL_SUPPORTED,
                                        algorithm_key=AlgorithmName.NO_QUANTIZE)


def quantize_float_tflite(float_model: bytes, samples: Iterable[np.ndarray],
                          per_channel: bool = True, keep_float: Sequence[str] = (),
                          threads: int | None = None) -> bytes:
    """Static INT8 of a float ``.tflite`` (tensor names kept) calibrated on ``samples``
    (``[1, H, W, 3]`` float32 inputs); returns the quantised flatbuffer, integer I/O."""
    from ai_edge_quantizer import quantizer as aeq

    scopes = list(FLOAT_SCOPES) + [re.escape(s) if not _is_regex(s) else s for s in keep_float]
    q = aeq.Quantizer(bytearray(float_model))
    _recipe(q, per_channel, scopes)
    data = [{"images": np.ascontiguousarray(x, dtype=np.float32)} for x in samples]
    if not data:
        raise FFEdgeError("no calibration images for int8; pass --calib with photos")
    try:
        with _quiet():
            result = q.calibrate({"serving_default": data}, num_threads=threads or 2)
            return bytes(q.quantize(result).quantized_model)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise FFEdgeError(f"ai-edge-quantizer could not quantise the model: {first[:300]}"
                          ) from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ai-edge-quantizer prints sizes on stdout and progress bars on stderr."""
    if os.environ.get("FFEDGE_VERBOSE"):
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _is_regex(scope: str) -> bool:
    return any(ch in scope for ch in "^$*+?[]()|\\")


def fuse_float_islands(data: bytes, kinds: Sequence[str] = ("LEAKY_RELU",)) -> bytes:
    """``DEQUANTIZE -> op -> QUANTIZE`` becomes the int8 op for each op in ``kinds``.

    ai-edge-quantizer has no int8 rule for LEAKY_RELU, so it leaves every one float between a
    DEQUANTIZE and a QUANTIZE (V1: 2 extra ops, a float round trip and an XNNPACK partition
    boundary per activation). TFLite's int8 LEAKY_RELU takes its own input and output scales,
    so the op can read the int8 tensor and write the requantised one directly: the same
    arithmetic (one requantisation) without the float tensors. Only islands whose float
    tensors have no other reader are fused.
    """
    from ai_edge_litert.tools import flatbuffer_utils as fu

    from ffedge.export import tflite_flatbuffer as tfb

    fb = tfb.schema()
    ops = fb.BuiltinOperator
    want = {getattr(ops, k) for k in kinds}
    model = tfb.read(data)
    sg = model.subgraphs[0]

    def code(op: Any) -> int:
        return fu.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])

    producer = {t: op for op in sg.operators for t in op.outputs}
    readers: dict[int, list[Any]] = {}
    for op in sg.operators:
        for t in op.inputs:
            readers.setdefault(int(t), []).append(op)
    graph_io = set(sg.inputs) | set(sg.outputs)
    drop: set[int] = set()
    for op in sg.operators:
        if code(op) not in want or len(op.inputs) != 1:
            continue
        x, y = int(op.inputs[0]), int(op.outputs[0])
        dq, qs = producer.get(x), readers.get(y, [])
        if (dq is None or code(dq) != ops.DEQUANTIZE or len(readers.get(x, [])) != 1
                or len(qs) != 1 or code(qs[0]) != ops.QUANTIZE or {x, y} & graph_io):
            continue
        src, dst = sg.tensors[int(dq.inputs[0])], sg.tensors[int(qs[0].outputs[0])]
        if src.type != fb.TensorType.INT8 or dst.type != fb.TensorType.INT8:
            continue
        op.inputs, op.outputs = [int(dq.inputs[0])], [int(qs[0].outputs[0])]
        drop.update((id(dq), id(qs[0])))
    if not drop:
        return data
    sg.operators = [op for op in sg.operators if id(op) not in drop]
    return tfb.write(model)
