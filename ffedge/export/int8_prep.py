"""Float-graph rewrites that make INT8 quantisation faithful (measured on V1, docs/int8.md).

* Cross-layer equalisation: for ``Conv -> LeakyRelu/Relu -> Conv`` chains, scale each
  channel of the first conv's output by ``1/s_c`` and the matching input channel of the
  second conv by ``s_c`` (both activations are positively homogeneous, so the float graph
  computes the same function). ``s_c = a_c^alpha / w_c^(1-alpha)`` (normalised) evens the
  per-channel activation ranges that one per-tensor activation scale must cover: V1's
  stage1 has channels with 1 % of the tensor's range, left with 2-3 int8 levels.
* Bias correction: int8 weight rounding shifts each conv's mean output by
  ``(W - Wq) . E[x]``; folding the opposite into the bias removes that shift
  (``E[x]`` per input channel measured on the calibration images).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ffedge.export.ort_probe import session_with_outputs

ACTIVATIONS = ("LeakyRelu", "Relu")
EQUALIZE_ALPHA = 1.0  # 1.0: equalise activation ranges only (best of 0.5/0.75/1.0 on V1)


def _channel_stats(proto, names: Sequence[str], feeds: Iterable[dict], stat: str
                   ) -> dict[str, np.ndarray]:
    """Per-channel (axis 1) max |x| (``stat="absmax"``) or mean of each tensor in ``names``
    (any rank: ECA's 1-D conv reads a ``[B, 1, C]`` tensor)."""
    sess = session_with_outputs(proto, names)
    acc: dict[str, np.ndarray] = {}
    count = 0
    for feed in feeds:
        count += 1
        for name, v in zip(names, sess.run(list(names), feed)):
            axes = (0, *range(2, v.ndim))
            if stat == "absmax":
                m = np.abs(v).max(axis=axes).astype(np.float64)
                acc[name] = np.maximum(acc[name], m) if name in acc else m
            else:
                m = v.mean(axis=axes).astype(np.float64)
                acc[name] = acc[name] + m if name in acc else m
    if stat == "mean":
        acc = {k: v / max(1, count) for k, v in acc.items()}
    return acc


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def unshare_conv_initializers(proto) -> int:
    """Give every Conv its own copy of a weight/bias initializer that other nodes also read
    (coordinate attention applies one 1x1 conv to both pooled profiles: two ONNX Convs, one
    weight). Equalisation and bias correction rescale per conv, so a shared tensor would be
    changed twice and break the float function. Returns how many inputs were copied."""
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    readers: dict[str, int] = {}
    for n in proto.graph.node:
        for i in set(n.input):
            readers[i] = readers.get(i, 0) + 1
    copied = 0
    for n in proto.graph.node:
        if n.op_type != "Conv":
            continue
        for k in (1, 2):
            name = n.input[k] if len(n.input) > k else ""
            if name not in inits or readers[name] < 2:
                continue
            fresh = f"{name}__{n.name}"
            proto.graph.initializer.append(
                numpy_helper.from_array(numpy_helper.to_array(inits[name]), fresh))
            n.input[k] = fresh
            readers[name] -= 1
            copied += 1
    return copied


def equalizable_pairs(proto) -> list[tuple]:
    """(conv1, activation, conv2) chains with single consumers and constant weights."""
    inits = {i.name for i in proto.graph.initializer}
    outputs = {o.name for o in proto.graph.output}
    consumers: dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    pairs = []
    for c1 in proto.graph.node:
        if c1.op_type != "Conv" or len(c1.input) < 2 or c1.input[1] not in inits:
            continue
        act = consumers.get(c1.output[0], [])
        if len(act) != 1 or act[0].op_type not in ACTIVATIONS or c1.output[0] in outputs:
            continue
        nxt = consumers.get(act[0].output[0], [])
        if (len(nxt) != 1 or nxt[0].op_type != "Conv" or act[0].output[0] in outputs
                or nxt[0].input[0] != act[0].output[0] or nxt[0].input[1] not in inits):
            continue
        pairs.append((c1, act[0], nxt[0]))
    return pairs


def equalize(proto, feeds: Sequence[dict], alpha: float = EQUALIZE_ALPHA) -> int:
    """Cross-layer equalisation in place; returns how many conv pairs were rescaled."""
    from onnx import numpy_helper

    unshare_conv_initializers(proto)
    pairs = equalizable_pairs(proto)
    names = sorted({t for c1, a, _ in pairs for t in (c1.output[0], a.output[0])})
    if not names:
        return 0
    amax = _channel_stats(proto, names, feeds, "absmax")
    inits = {i.name: i for i in proto.graph.initializer}

    def get(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name]).astype(np.float64)

    def put(name: str, value: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    done = 0
    for c1, act, c2 in pairs:
        a = np.maximum(amax[c1.output[0]], amax[act.output[0]])
        w2 = get(c2.input[1])
        channels, depthwise = a.shape[0], _group(c2) == a.shape[0] == w2.shape[0]
        if _group(c2) != 1 and not depthwise:
            continue
        wc = (np.abs(w2).reshape(channels, -1).max(axis=1) if depthwise
              else np.abs(w2).max(axis=(0, 2, 3)))
        s = np.maximum(a, 1e-8) ** alpha / np.maximum(wc, 1e-8) ** (1.0 - alpha)
        s = np.clip(s / np.exp(np.mean(np.log(s))), 1e-2, 1e2)
        put(c1.input[1], get(c1.input[1]) / s.reshape(-1, 1, 1, 1))
        if len(c1.input) > 2 and c1.input[2] in inits:
            put(c1.input[2], get(c1.input[2]) / s)
        put(c2.input[1], w2 * (s.reshape(-1, 1, 1, 1) if depthwise else s.reshape(1, -1, 1, 1)))
        done += 1
    return done


def int8_weights(w: np.ndarray, levels: int = 127) -> np.ndarray:
    """``w`` after symmetric per-output-channel int8 rounding (what the quantiser stores;
    ``levels=63`` with reduce_range)."""
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / levels, 1.0).reshape(-1, *([1] * (w.ndim - 1)))
    return np.clip(np.round(w / scale), -levels, levels) * scale


def conv_input_means(proto, feeds: Sequence[dict]) -> dict[str, np.ndarray]:
    """Per-channel mean of every Conv's data input over ``feeds``, by tensor name."""
    inits = {i.name for i in proto.graph.initializer}
    names = sorted({n.input[0] for n in proto.graph.node
                    if n.op_type == "Conv" and n.input[0] not in inits})
    return _channel_stats(proto, names, feeds, "mean") if names else {}


def bias_correct(proto, means: dict[str, np.ndarray], skip: Iterable[str] = (),
                 levels: int = 127) -> int:
    """Fold ``-(W - Wq) . E[x]`` into each Conv's bias (not the nodes in ``skip``, which keep
    float weights); returns how many convs were corrected."""
    from onnx import numpy_helper

    unshare_conv_initializers(proto)
    inits = {i.name: i for i in proto.graph.initializer}
    skip = set(skip)
    done = 0
    for n in proto.graph.node:
        if (n.op_type != "Conv" or n.name in skip or n.input[0] not in means
                or len(n.input) < 2 or n.input[1] not in inits):
            continue
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
        dw = (w - int8_weights(w, levels)).sum(axis=tuple(range(2, w.ndim)))  # [out, in/group]
        groups, per_in = _group(n), dw.shape[1]
        mean = means[n.input[0]].reshape(groups, per_in)
        delta = np.einsum("gok,gk->go", dw.reshape(groups, -1, per_in), mean).reshape(-1)
        if len(n.input) > 2 and n.input[2] in inits:
            b = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64) + delta
            inits[n.input[2]].CopyFrom(numpy_helper.from_array(b.astype(np.float32), n.input[2]))
        else:
            name = f"{n.name}_bias_corrected"
            proto.graph.initializer.append(numpy_helper.from_array(delta.astype(np.float32), name))
            while len(n.input) < 3:
                n.input.append("")
            n.input[2] = name
        done += 1
    return done
