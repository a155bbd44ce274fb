"""INT8 artifacts must be smaller than their FP32 form (issue 13 item 2).

Speed is measured by a benchmark, not asserted here (docs/int8.md, "Speed and size")."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from ffedge.export.int8_ort import compact_qdq
from ffedge.export.onnx_target import export_int8, export_onnx

from .conftest import synthetic_images


def _qdq_model() -> onnx.ModelProto:
    """Conv -> Conv in QDQ form with the quantiser's long names and two equal zero points."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []
    src = "x"
    for k in range(2):
        base = f"/model/block{k}/conv/Conv"
        w = rng.integers(-127, 127, (4, 4, 3, 3)).astype(np.int8)
        inits += [numpy_helper.from_array(w, f"{base}_weight_quantized"),
                  numpy_helper.from_array(np.full(4, 0.01 * (k + 1), np.float32), f"{base}_weight_scale"),
                  numpy_helper.from_array(np.zeros(4, np.int8), f"{base}_weight_zero_point"),
                  numpy_helper.from_array(np.float32(0.05), f"{src}_scale"),
                  numpy_helper.from_array(np.uint8(128), f"{src}_zero_point")]
        nodes += [
            helper.make_node("QuantizeLinear", [src, f"{src}_scale", f"{src}_zero_point"],
                             [f"{src}_QuantizeLinear_Output"], name=f"{src}_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [f"{src}_QuantizeLinear_Output", f"{src}_scale",
                             f"{src}_zero_point"], [f"{src}_DequantizeLinear_Output"],
                             name=f"{src}_DequantizeLinear"),
            helper.make_node("DequantizeLinear", [f"{base}_weight_quantized",
                             f"{base}_weight_scale", f"{base}_weight_zero_point"],
                             [f"{base}_weight"], name=f"{base}_weight_DequantizeLinear", axis=0),
            helper.make_node("Conv", [f"{src}_DequantizeLinear_Output", f"{base}_weight"],
                             [f"{base}_output_0"], name=base, pads=[1, 1, 1, 1])]
        src = f"{base}_output_0"
    nodes.append(helper.make_node("Identity", [src], ["y"], name="out"))
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits,
        value_info=[helper.make_tensor_value_info(f"{src}", TensorProto.FLOAT, [1, 4, 8, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_compact_qdq_keeps_the_function_and_sheds_the_made_up_names():
    ort = pytest.importorskip("onnxruntime")
    proto = _qdq_model()
    before = proto.SerializeToString()
    compact_qdq(proto)
    onnx.checker.check_model(proto)
    after = proto.SerializeToString()
    x = np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)
    run = [ort.InferenceSession(b, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for b in (before, after)]
    np.testing.assert_array_equal(run[0], run[1])
    assert len(after) < 0.8 * len(before)
    names = [i.name for i in proto.graph.initializer]
    assert sum(n.endswith("_zero_point") for n in names) == 2  # 4 equal pairs stored once
    assert len(names) == len(set(names)) == 7
    assert {n.name for n in proto.graph.node if n.op_type == "Conv"} == {
        "/model/block0/conv/Conv", "/model/block1/conv/Conv"}  # the model's own ops keep names
    assert not proto.graph.value_info


@pytest.mark.slow
def test_nano_b_int8_onnx_is_at_most_half_its_fp32_size(tmp_path):
    calib = synthetic_images(tmp_path / "calib", 6, size=(120, 160))
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export_onnx("nano_b", output=fp32, input_size=(160, 160), verify=False)
    export_int8("nano_b", calib, output=int8, input_size=(160, 160), num_images=4, num_eval=2,
                min_f1=0.0, fallback=False, cache_dir=tmp_path / "cache")
    ratio = int8.stat().st_size / fp32.stat().st_size
    assert ratio < 0.55, ratio  # 0.92 before compact_qdq (names outweighed the int8 weights)


@pytest.mark.slow
def test_nano_b_openvino_int8_ir_is_smaller_than_fp32(tmp_path):
    pytest.importorskip("nncf")
    from ffedge.export.openvino_target import export_openvino, ir_size

    calib = synthetic_images(tmp_path / "calib", 6, size=(120, 160))
    fp32, int8 = tmp_path / "fp32.xml", tmp_path / "int8.xml"
    export_openvino("nano_b", output=fp32, input_size=(160, 160), verify=False)
    export_openvino("nano_b", output=int8, input_size=(160, 160), precision="int8", calib=calib,
                    num_images=4, num_eval=2, min_f1=0.0, fallback=False,
                    cache_dir=tmp_path / "cache")
    assert ir_size(int8) < 0.95 * ir_size(fp32), (ir_size(int8), ir_size(fp32))
