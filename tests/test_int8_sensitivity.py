"""The measured INT8 sensitivity pass: a deliberately broken node ranks first, and the
search keeps the fewest top-ranked nodes float that pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from ffedge.export.int8_ort import QuantOptions, quantize_qdq  # noqa: E402
from ffedge.export.sensitivity import (  # noqa: E402
    SensitivitySearch,
    _join,
    output_gains,
    rank_nodes,
)

from .conftest import ArrayCalibration  # noqa: E402


class Tiny(nn.Module):
    """conv -> relu -> conv (one output channel scaled by 1000) -> conv (scaled back) -> conv.
    The same function as without the scaling, but per-tensor uint8 quantisation of the
    second conv's output wipes out every other channel of that tensor."""

    def __init__(self, broken: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 1)
        self.d = nn.Conv2d(8, 4, 3, padding=1)
        if broken:
            with torch.no_grad():
                self.b.weight[2] *= 1000.0
                self.b.bias[2] *= 1000.0
                self.c.weight[:, 2] /= 1000.0

    def forward(self, x):
        x = torch.relu(self.a(x))
        x = self.b(x)
        x = torch.relu(self.c(x))
        return self.d(x)


def _export(net, path):
    x = torch.zeros(1, 3, 32, 32)
    torch.onnx.export(net.eval(), (x,), str(path), input_names=["images"], output_names=["out"],
                      opset_version=17, dynamo=False)


@pytest.fixture
def broken(tmp_path):
    net = Tiny(broken=True)
    fp32, qdq = tmp_path / "fp32.onnx", tmp_path / "qdq.onnx"
    _export(net, fp32)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(6)]
    quantize_qdq(fp32, qdq, ArrayCalibration(arrays), QuantOptions(reduce_range=False))
    return net, fp32, qdq, arrays


def test_module_path_from_onnx_scope():
    assert _join(["model", "body", "stage1", "stage1.0", "stage1.0.0"]) == "model.body.stage1.0.0"
    assert _join(["model", "bifpn", "bifpn.1", "conv4_up"]) == "model.bifpn.1.conv4_up"


def test_broken_node_ranks_first(broken):
    net, fp32, qdq, arrays = broken
    names = [n.name for n in onnx.load(str(fp32)).graph.node]
    conv_b = next(n for n in names if n.startswith("/b/"))
    conv_c = next(n for n in names if n.startswith("/c/"))
    feeds = [{"images": a} for a in arrays[:3]]
    for gains in (None, output_gains(net, arrays[:2])):
        ranked = rank_nodes(fp32, qdq, feeds, gains)
        # the tensor b -> c carries the outlier: its producer and consumer lead the list
        # (unbroken, c ranks 5th of 6)
        assert {r.name for r in ranked[:2]} == {conv_b, conv_c}, [(r.name, r.score) for r in ranked]
        assert ranked[1].score > 2 * ranked[2].score


def test_search_returns_the_fewest_prefix():
    ranked = [f"n{i}" for i in range(40)]
    need = {"n0", "n4", "n6"}  # passes once these three are float

    def score(excluded):
        return 0.99 if need <= set(excluded) else 0.5

    s = SensitivitySearch(ranked, 0.98, score=score, log=lambda m: None)
    assert s.run() == ranked[:7]
    assert s.trials <= 8  # 0,1,2,4,8 then bisect 5..7, not 40 one-at-a-time trials


def test_search_passes_at_zero_and_gives_up():
    s = SensitivitySearch(["a", "b"], 0.9, score=lambda ex: 0.95, log=lambda m: None)
    assert s.run() == [] and s.trials == 1
    s = SensitivitySearch(["a", "b", "c"], 0.9, score=lambda ex: 0.1, log=lambda m: None)
    assert s.run() is None


@pytest.mark.slow
def test_real_search_rescues_the_broken_model(broken, tmp_path):
    """Real quantiser and runtime: float fallback of the top-ranked nodes restores the
    output, and the search needs only a prefix of the ranking."""
    import onnxruntime as ort

    net, fp32, qdq, arrays = broken
    feeds = [{"images": a} for a in arrays[:3]]
    ranked = [r.name for r in rank_nodes(fp32, qdq, feeds, output_gains(net, arrays[:2]))]
    with torch.no_grad():
        refs = [net(torch.from_numpy(a)).numpy() for a in arrays]

    def score(excluded):
        path = tmp_path / f"q{len(excluded)}.onnx"
        quantize_qdq(fp32, path, ArrayCalibration(arrays), QuantOptions(reduce_range=False, fallback=tuple(excluded)),
                     calibration_cache=tmp_path / "calib.json")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        err = np.mean([np.mean((sess.run(None, {"images": a})[0] - r) ** 2) / np.mean(r ** 2)
                       for a, r in zip(arrays, refs)])
        return 1.0 - float(err)  # "F1-like": 1 - relative output error

    s = SensitivitySearch(ranked, 0.99, score=score, log=lambda m: None)
    assert score([]) < 0.99
    kept = s.run()
    assert kept is not None and 0 < len(kept) <= 4


# --- float-graph rewrites before quantisation (ffedge/export/int8_prep.py) ------------------

class Chain(nn.Module):
    """conv -> leaky relu -> conv with one channel of the first conv 100x larger and the
    second conv's matching input column 100x smaller: same function, bad for int8."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.a.weight[2] *= 100.0
            self.a.bias[2] *= 100.0
            self.b.weight[:, 2] /= 100.0

    def forward(self, x):
        return self.b(nn.functional.leaky_relu(self.a(x), 0.1))


def _run(proto, x, extra=()):
    import onnxruntime as ort

    from ffedge.export.ort_probe import session_with_outputs as _session

    sess = _session(proto, list(extra)) if extra else ort.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": x})


def test_equalize_keeps_the_function_and_evens_channel_ranges(tmp_path):
    from ffedge.export.int8_prep import equalizable_pairs, equalize

    path = tmp_path / "chain.onnx"
    _export(Chain(), path)
    proto = onnx.load(str(path))
    rng = np.random.default_rng(0)
    feeds = [{"images": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    (conv1, act, _), = equalizable_pairs(proto)
    before = _run(proto, feeds[0]["images"], [act.output[0]])
    assert equalize(proto, feeds) == 1
    after = _run(proto, feeds[0]["images"], [act.output[0]])
    np.testing.assert_allclose(after[0], before[0], rtol=1e-4, atol=1e-4)  # same function

    def spread(a):
        r = np.abs(a).max(axis=(0, 2, 3))
        return r.max() / r.min()
    assert spread(before[1]) > 50 and spread(after[1]) < 0.2 * spread(before[1])


def test_bias_correction_removes_the_weight_rounding_shift(tmp_path):
    from onnx import numpy_helper

    from ffedge.export.int8_prep import bias_correct, conv_input_means, int8_weights

    class Offset(nn.Module):  # inputs with a large mean: rounding errors add up in the output
        def __init__(self):
            super().__init__()
            torch.manual_seed(2)
            self.c = nn.Conv2d(16, 8, 3, padding=1)

        def forward(self, x):
            return self.c(x + 5.0)

    path = tmp_path / "offset.onnx"
    _export_n(Offset(), path, 16)
    proto = onnx.load(str(path))
    rng = np.random.default_rng(0)
    feeds = [{"images": rng.standard_normal((1, 16, 32, 32)).astype(np.float32)} for _ in range(4)]
    x = feeds[0]["images"]
    ref = _run(proto, x)[0]
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")

    def with_int8_weights(p):  # the weights a quantiser would store, in float
        w = next(i for i in p.graph.initializer if i.name == conv.input[1])
        w.CopyFrom(numpy_helper.from_array(
            int8_weights(numpy_helper.to_array(w)).astype(np.float32), w.name))
        return p

    def shift(p):
        return np.abs((_run(p, x)[0] - ref).mean(axis=(0, 2, 3))).mean()

    plain, corrected = onnx.ModelProto(), onnx.ModelProto()
    plain.CopyFrom(proto)
    corrected.CopyFrom(proto)
    assert bias_correct(corrected, conv_input_means(proto, feeds)) == 1
    shift_plain, shift_corrected = shift(with_int8_weights(plain)), shift(with_int8_weights(corrected))
    assert shift_plain > 1e-4 and shift_corrected < 0.2 * shift_plain


def _export_n(net, path, channels):
    x = torch.zeros(1, channels, 32, 32)
    torch.onnx.export(net.eval(), (x,), str(path), input_names=["images"], output_names=["out"],
                      opset_version=17, dynamo=False)


class ConvRelu(nn.Module):
    """conv -> relu -> conv: ORT's QDQ quantiser removes the Relu and lets the Q/DQ range
    (starting at 0) do the clamp."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_a_relu_folded_into_qdq_is_not_counted_as_noise(tmp_path):
    """The measured noise of the Relu's output is quantisation noise (~1e-4 of its power
    at 8 bits), not the Relu itself (about half the signal before the fix)."""
    from ffedge.export.sensitivity import measure_tensor_noise

    fp32, qdq = tmp_path / "fp32.onnx", tmp_path / "qdq.onnx"
    _export(ConvRelu(), fp32)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(4)]
    quantize_qdq(fp32, qdq, ArrayCalibration(arrays), QuantOptions(reduce_range=False))
    qproto = onnx.load(str(qdq))
    assert "Relu" not in {n.op_type for n in qproto.graph.node}  # folded by the quantiser
    relu_out = next(n.output[0] for n in onnx.load(str(fp32)).graph.node if n.op_type == "Relu")
    feeds = [{"images": a} for a in arrays[:2]]
    for fproto in (onnx.load(str(fp32)), qproto):  # with and without the float graph
        noise, power, _ = measure_tensor_noise(fproto, qproto, feeds)
        assert noise[relu_out] < 1e-2 * power[relu_out], (noise[relu_out], power[relu_out])


# --- per-tensor calibration choice (ffedge/export/int8_ranges.py) ---------------------------

def test_range_choice_by_measured_qdq_noise():
    """The histogram estimate matches real uint8 Q/DQ error; a tensor with rare huge
    outliers gets a percentile cut, a uniform one keeps its MinMax range."""
    from ffedge.export.int8_ranges import BINS, choose, qdq_noise

    rng = np.random.default_rng(0)

    def hist_of(v):
        lo, hi = float(v.min()), float(v.max())
        idx = np.clip(((v - lo) * (BINS / (hi - lo))).astype(np.int64), 0, BINS - 1)
        return np.bincount(idx, minlength=BINS), lo, hi

    def real_noise(v, a, b):
        a, b = min(a, 0.0), max(b, 0.0)
        s = (b - a) / 255
        zp = np.round(-a / s)
        q = np.clip(np.round(v / s) + zp, 0, 255)
        return float(np.mean(((q - zp) * s - v) ** 2))

    spiky = np.concatenate([rng.standard_normal(1_000_000), [30.0, -30.0]]).astype(np.float32)
    h, lo, hi = hist_of(spiky)
    # steps wider than the data's spread: the step^2/12 model is rough, still the same size
    assert qdq_noise(h, lo, hi, lo, hi) == pytest.approx(real_noise(spiky, lo, hi), rel=0.2)
    method, a, b = choose(h, lo, hi)
    assert qdq_noise(h, lo, hi, a, b) == pytest.approx(real_noise(spiky, a, b), rel=0.05)
    assert method.startswith("percentile") and b < 10 and a > -10
    assert real_noise(spiky, a, b) < 0.5 * real_noise(spiky, lo, hi)
    flat = rng.uniform(-1, 3, 200_000).astype(np.float32)
    assert choose(*hist_of(flat))[0] == "minmax"


def test_auto_calibration_writes_ranges_the_quantiser_uses(tmp_path, broken):
    """``method="auto"``: the chosen ranges go through ORT's calibration cache; the outlier
    channel's tensor gets a cut range, and the model quantises and runs."""
    import json

    import onnxruntime as ort

    _, fp32, _, arrays = broken
    out, cache = tmp_path / "auto.onnx", tmp_path / "ranges.json"
    quantize_qdq(fp32, out, ArrayCalibration(arrays), QuantOptions(method="auto",
                 reduce_range=False), calibration_cache=cache)
    data = json.loads(cache.read_text())["data"]
    assert data and all({"lowest", "highest"} <= set(v) for v in data.values())
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert np.isfinite(sess.run(None, {"images": arrays[0]})[0]).all()
