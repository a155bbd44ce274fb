"""Per-op profiles: ORT and OpenVINO report real op types, durations and the precision
each kernel ran in (an INT8 QDQ model shows int8 kernels; its float twin does not)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")

from ffedge.benchmarks.profile import (  # noqa: E402
    ov_precision,
    parse_ort_trace,
    profile_artifact,
)
from ffedge.errors import FFEdgeError  # noqa: E402
from ffedge.export.int8_ort import QuantOptions, quantize_qdq  # noqa: E402

from .conftest import ArrayCalibration  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prof")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                        nn.ReLU(), nn.Conv2d(16, 8, 1)).eval()
    fp32, int8 = tmp / "fp32.onnx", tmp / "int8.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 64, 64),), str(fp32), input_names=["images"],
                      opset_version=17, dynamo=False)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((1, 3, 64, 64)).astype(np.float32) for _ in range(4)]
    quantize_qdq(fp32, int8, ArrayCalibration(arrays), QuantOptions(reduce_range=False))
    return fp32, int8, arrays[0]


def test_ort_profile_int8_vs_fp32(models):
    fp32, int8, x = models
    f = profile_artifact(fp32, x, threads=1, runs=3)
    q = profile_artifact(int8, x, threads=1, runs=3)
    assert {o.op_type for o in f.ops} >= {"Conv"} and f.by_precision().keys() == {"fp32"}
    assert "QLinearConv" in {o.op_type for o in q.ops}
    assert q.by_precision().get("int8", 0) > 0
    assert q.total_ms > 0 and all(o.ms >= 0 for o in q.ops)
    text = q.render()
    assert "QLinearConv" in text and "int8" in text and "share" in text
    assert {r["op_type"] for r in q.to_dict()["by_type"]} >= {"QLinearConv"}


def test_openvino_profile(models, tmp_path):
    ov = pytest.importorskip("openvino")
    fp32, _, x = models
    xml = tmp_path / "m.xml"
    ov.save_model(ov.Core().read_model(str(fp32)), str(xml), compress_to_fp16=False)
    rep = profile_artifact(xml, x, threads=1, runs=3)
    assert rep.runtime == "openvino" and "Convolution" in {o.op_type for o in rep.ops}
    assert rep.by_precision().get("fp32", 0) > 0


def test_precision_parsing_and_unsupported(tmp_path):
    assert ov_precision("jit_avx512_amx_I8") == "int8"
    assert ov_precision("brgconv_avx512_FP32") == "fp32"
    assert ov_precision("unknown") == "-"
    ev = [{"cat": "Node", "name": "a_kernel_time", "dur": 2000, "args": {"op_name": "QLinearConv"}},
          {"cat": "Node", "name": "a_kernel_time", "dur": 4000, "args": {"op_name": "QLinearConv"}},
          {"cat": "Node", "name": "a_fence_before", "dur": 9000, "args": {"op_name": "QLinearConv"}},
          {"cat": "Session", "name": "x", "dur": 10}]
    (op,) = parse_ort_trace(ev, runs=2)
    assert (op.name, op.precision, op.ms) == ("a", "int8", 3.0)
    with pytest.raises(FFEdgeError, match="no per-op timing"):
        profile_artifact(tmp_path / "m.tflite", np.zeros((1, 3, 8, 8), np.float32))
