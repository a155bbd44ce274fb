"""TensorRT target: everything up to the engine, for real (TensorRT itself cannot be
installed here; the engine layer is exercised by scripts/trt_device_check.sh on a GPU)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ffedge.errors import FFEdgeError
from ffedge.export.trt_dla import (
    calibration_cache_text,
    check_dla,
    hex_scale,
    read_calibration_cache,
    scale_hex,
)
from ffedge.export.trt_lint import lint_model
from ffedge.export.trt_versions import TrtVersion, default_dcn_mode, resolve_version

SIZE = (160, 160)


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


# --- versions -----------------------------------------------------------------------------

def test_jetpack_table_and_dcn_mode_by_version():
    assert str(resolve_version("6.0")) == "8.6.2"
    assert str(resolve_version("6.2")) == "10.3.0"
    assert str(resolve_version(None, "11.1")) == "11.1.0"
    assert default_dcn_mode(resolve_version("5.1")) == "gridsample"
    assert default_dcn_mode(resolve_version("6.0")) == "plugin"
    assert default_dcn_mode(resolve_version("6.1")) == "native"
    with pytest.raises(FFEdgeError, match="no way to run deformable convs"):
        default_dcn_mode(resolve_version("4.6"))
    with pytest.raises(FFEdgeError, match="unknown --jetpack"):
        resolve_version("5.0")
    with pytest.raises(FFEdgeError, match="not both"):
        resolve_version("6.0", "10.3")


def test_dla_and_trt11_refusals():
    with pytest.raises(FFEdgeError, match="FP16 or INT8"):
        check_dla(TrtVersion(10, 3), "fp32", "6.2")
    with pytest.raises(FFEdgeError, match="no DLA support"):
        check_dla(TrtVersion(11, 1), "int8", None)
    with pytest.raises(FFEdgeError, match="Thor"):
        check_dla(TrtVersion(10, 13, 3), "fp16", "7")
    from ffedge.export.pipeline import ExportRequest
    from ffedge.export.tensorrt_target import TensorRTTarget, TrtOptions

    req = ExportRequest("nano_b", precision="fp16", options=TrtOptions(trt_version="11.1"))
    with pytest.raises(FFEdgeError, match="strongly typed"):
        TensorRTTarget().check(req)


# --- calibration cache --------------------------------------------------------------------

def test_calibration_cache_format_matches_tensorrt():
    assert scale_hex(1.0) == "3f800000"  # IEEE-754 bits of 1.0f
    assert scale_hex(0.0) == "0"
    assert scale_hex(2.0) == "40000000" and hex_scale("3e800000") == 0.25
    assert hex_scale(scale_hex(1 / 127)) == np.float32(1 / 127)
    text = calibration_cache_text({"images": 127.0, "/conv/Conv_output_0": 12.7},
                                  TrtVersion(8, 6, 2))
    lines = text.splitlines()
    assert lines[0] == "TRT-8602-EntropyCalibration2"
    assert all(re.fullmatch(r"[^\n]+: [0-9a-f]{1,8}", line) for line in lines[1:])
    assert "images: 3f800000" in lines
    assert calibration_cache_text({}, TrtVersion(10, 3, 0)).startswith("TRT-100300-Entropy")


def test_calibration_cache_round_trip(tmp_path):
    p = tmp_path / "c.cache"
    p.write_text(calibration_cache_text({"a": 1.27, "b:x": 254.0}, TrtVersion(10, 3, 0)))
    number, scales = read_calibration_cache(p)
    assert number == 100300
    assert scales["a"] == pytest.approx(0.01, rel=1e-6)
    assert scales["b:x"] == pytest.approx(2.0)
    p.write_text("not a cache\n")
    with pytest.raises(FFEdgeError, match="not a TensorRT"):
        read_calibration_cache(p)


# --- the linter on hand-built graphs ------------------------------------------------------

def _qdq_conv(zp_type=TensorProto.INT8, zp_value=0, act_scale=(0.1,), w_axis=0,
              int32_bias=False, quant_input=True, residual_qdq=True, drop_q_zp=False):
    """x -> Q -> DQ -> Conv(W via DQ) -> Add(+ relu(x) residual) -> y."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 127, (4, 3, 3, 3)).astype(np.int8)
    inits = [
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_s"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
        numpy_helper.from_array(np.array(act_scale, np.float32).reshape(-1) if len(act_scale) > 1
                                else np.float32(act_scale[0]), "a_s"),
        helper.make_tensor("a_zp", zp_type, [], [zp_value]),
        numpy_helper.from_array(np.zeros(4, np.float32), "b"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_s"] + ([] if drop_q_zp else ["a_zp"]),
                         ["x_q"], name="q_x"),
        helper.make_node("DequantizeLinear", ["x_q", "a_s", "a_zp"], ["x_dq"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"], name="dq_w",
                         axis=w_axis),
    ]
    bias = "b"
    if int32_bias:
        inits += [numpy_helper.from_array(np.zeros(4, np.int32), "b_q"),
                  numpy_helper.from_array(np.full(4, 0.001, np.float32), "b_s")]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_s"], ["b_dq"], name="dq_b"))
        bias = "b_dq"
    nodes.append(helper.make_node("Conv", ["x_dq" if quant_input else "x", "w", bias], ["c"],
                                  name="conv", pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["r_in"], ["r"], name="skip_relu"))
    inits.append(numpy_helper.from_array(np.float32(0.1), "r_s"))
    inits.append(helper.make_tensor("r_zp", TensorProto.INT8, [], [0]))
    if residual_qdq:
        nodes += [helper.make_node("QuantizeLinear", ["r", "r_s", "r_zp"], ["r_q"], name="q_r"),
                  helper.make_node("DequantizeLinear", ["r_q", "r_s", "r_zp"], ["r_dq"],
                                   name="dq_r")]
    nodes.append(helper.make_node("Add", ["c", "r_dq" if residual_qdq else "r"], ["y"],
                                  name="residual_add"))
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
         helper.make_tensor_value_info("r_in", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _rules(proto, version=None):
    return {(e.rule, e.node) for e in lint_model(proto, version)}


def test_linter_passes_a_clean_qdq_graph_and_it_runs():
    proto = _qdq_conv()
    onnx.checker.check_model(proto, full_check=True)
    assert lint_model(proto, "8.5") == []
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": np.ones((1, 3, 8, 8), np.float32),
                        "r_in": np.ones((1, 4, 8, 8), np.float32)})[0]
    assert y.shape == (1, 4, 8, 8)


@pytest.mark.parametrize("kwargs, rule, node", [
    ({"zp_value": 3}, "zero-point", "q_x"),
    ({"zp_type": TensorProto.UINT8}, "dtype", "q_x"),
    ({"drop_q_zp": True}, "dtype", "q_x"),
    ({"act_scale": (0.1, 0.2, 0.3)}, "per-tensor", "dq_x"),
    ({"w_axis": 1}, "axis", "dq_w"),
    ({"int32_bias": True}, "bias", "dq_b"),
    ({"quant_input": False}, "placement", "conv"),
    ({"residual_qdq": False}, "residual", "residual_add"),
])
def test_linter_catches_each_broken_rule(kwargs, rule, node):
    errors = lint_model(_qdq_conv(**kwargs))
    assert (rule, node) in {(e.rule, e.node) for e in errors}, [str(e) for e in errors]
    assert all(e.node in str(e) for e in errors)  # each error names its node


def _float_input_graph(op: str):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(np.float32(0.1), "s"),
             helper.make_tensor("z", TensorProto.INT8, [], [0]),
             numpy_helper.from_array(np.zeros((4, 4, 3, 3), np.float32), "w"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b")]
    q = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
         helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"], name="dq")]
    if op == "DeformConv":
        node = helper.make_node("DeformConv", ["x", "w", "xdq", "b", "x"], ["y"], name="dcn",
                                kernel_shape=[3, 3])
    elif op == "ModulatedDeformConv2d":
        node = helper.make_node(op, ["x", "x", "xdq", "w", "b"], ["y"], name="dcn",
                                domain="trt")
    else:
        node = helper.make_node("GridSample", ["x", "xdq"], ["y"], name="dcn")
    g = helper.make_graph(q + [node], "g", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19),
                                               helper.make_opsetid("trt", 1)])


@pytest.mark.parametrize("op", ["DeformConv", "ModulatedDeformConv2d", "GridSample"])
def test_linter_keeps_dcn_offsets_and_grids_float(op):
    assert ("float-input", "dcn") in _rules(_float_input_graph(op))


def test_linter_checks_ops_and_opset_per_version():
    dcn = _float_input_graph("DeformConv")
    assert ("op", "dcn") in _rules(dcn, "10.0")  # DeformConv parses from 10.1
    assert ("op", "dcn") not in _rules(dcn, "10.3")
    assert ("opset", "<graph>") in _rules(dcn, "8.6")  # opset 19 > 17
    assert ("op", "dcn") in _rules(_float_input_graph("GridSample"), "8.4")
    assert ("op", "dcn") not in _rules(_float_input_graph("GridSample"), "8.5")
    assert ("op", "dcn") in _rules(_float_input_graph("ModulatedDeformConv2d"), "8.5")
    assert ("op", "dcn") not in _rules(_float_input_graph("ModulatedDeformConv2d"), "8.6")


def test_linter_command_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    onnx.save(_qdq_conv(zp_value=5), str(bad))
    good = tmp_path / "good.onnx"
    onnx.save(_qdq_conv(), str(good))
    run = [sys.executable, "-m", "ffedge.export.trt_lint"]
    r = subprocess.run(run + [str(bad), "--trt-version", "10.3"], capture_output=True, text=True)
    assert r.returncode == 1 and "q_x: [zero-point]" in r.stdout
    r = subprocess.run(run + [str(good), "--jetpack", "6.2"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == ""


# --- TensorRT-ready graphs ----------------------------------------------------------------

def test_plugin_node_has_the_plugins_inputs_and_attributes():
    from ffedge.export.trt_onnx import finish_for_trt, trace_for_trt
    from ffedge.models import create_model

    net = create_model("v1", input_size=SIZE)
    g = finish_for_trt(trace_for_trt(net, SIZE, resolve_version("6.0")))
    assert g.dcn_mode == "plugin" and g.opset == 17
    proto = g.proto
    assert {(o.domain, o.version) for o in proto.opset_import} >= {("", 17), ("trt", 1)}
    nodes = [n for n in proto.graph.node if n.op_type == "ModulatedDeformConv2d"]
    assert len(nodes) == 15 and not any(n.op_type == "DeformConv" for n in proto.graph.node)
    producer = {o: n for n in proto.graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for n in nodes:
        x, offset, mask, weight, bias = n.input
        k = inits[weight].shape[2] * inits[weight].shape[3]
        assert producer[offset].op_type == "Conv"  # offset_conv: 2*k channels
        assert inits[producer[offset].input[1]].shape[0] == 2 * k
        # the mask is sigmoid(modulator): the graph passes (on by default) moved DCNv2's
        # factor 2 into the deformable kernel
        assert producer[mask].op_type == "Sigmoid"
        assert inits[weight].ndim == 4 and inits[bias].shape == (inits[weight].shape[0],)
        attrs = {a.name: a for a in n.attribute}
        assert set(attrs) == {"stride", "padding", "dilation", "group", "deformable_group",
                              "plugin_version", "plugin_namespace"}
        for name in ("stride", "padding", "dilation"):
            assert attrs[name].type == onnx.AttributeProto.INTS and len(attrs[name].ints) == 2
        assert attrs["group"].type == attrs["deformable_group"].type == onnx.AttributeProto.INT
        assert attrs["plugin_version"].s == b"1"
    assert lint_model(proto, "8.6") == []
    assert lint_model(proto, "8.5")  # no plugin before 8.6


def _bundle(tmp_path, model, **kw):
    from ffedge.export.tensorrt_target import TrtOptions, export_tensorrt

    precision = kw.pop("precision", "fp16")
    opts = TrtOptions(n_reference=2, **kw)
    out = tmp_path / f"{model}.trtbundle"
    report = export_tensorrt(model, output=out, precision=precision, input_size=SIZE,
                             options=opts, verify=False)
    return out, report, json.loads((out / "manifest.json").read_text())


def test_nano_b_bundle_contents(tmp_path):
    out, report, m = _bundle(tmp_path, "nano_b", jetpack="5.1")
    assert sorted(p.name for p in out.iterdir()) == ["BUILD.md", "manifest.json", "model.onnx",
                                                     "reference.npz"]
    assert m["dcn_mode"] == "none" and m["precision"] == "fp16"
    assert m["target_tensorrt"] == "8.5.2" and m["minimum_tensorrt"] == "8.4"  # opset 17
    assert m["inputs"] == [{"name": "images", "shape": [1, 3, 160, 160], "dtype": "float32"}]
    assert [o["name"] for o in m["outputs"]] == ["boxes", "scores", "landmarks"]
    assert m["dla"]["report"]["layers_total"] > 0
    ref = np.load(out / "reference.npz")
    assert ref["images"].shape == (2, 3, 160, 160)
    for name in ("boxes", "scores", "landmarks"):  # the graph reproduces torch
        np.testing.assert_allclose(ref[f"onnx_{name}"], ref[name], atol=1e-4)
    build = (out / "BUILD.md").read_text()
    assert "trtexec --onnx=nano_b.trtbundle/model.onnx --fp16" in build
    assert f"python -m ffedge.export.trt_build {out.name} --precision fp16" in build
    proto = onnx.load(str(out / "model.onnx"))
    assert lint_model(proto, "8.5") == []
    assert {p.key for p in proto.metadata_props} >= {"ffedge.model", "ffedge.spec"}
    with pytest.raises(FFEdgeError, match="exists"):  # never half-overwrites a bundle
        _bundle(tmp_path, "nano_b", jetpack="5.1")


@pytest.mark.slow
@pytest.mark.parametrize("model, jetpack, dcn", [
    ("v1", "6.2", "native"), ("v1", "6.0", "plugin"), ("v1", "5.1", "gridsample"),
    ("v2_ultra", "6.2", "none"), ("v2_ca", "6.0", "plugin"), ("eca_cbam", "5.1", "gridsample"),
])
def test_bundles_for_every_model_and_dcn_mode(tmp_path, model, jetpack, dcn):
    from ffedge.models import list_models

    if model not in list_models():
        pytest.skip(f"{model} is not registered")
    out, _, m = _bundle(tmp_path, model, jetpack=jetpack)
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    if m["dcn_mode"] != "none":
        assert m["dcn_mode"] == dcn
        want = {"native": "DeformConv", "plugin": "ModulatedDeformConv2d",
                "gridsample": "GridSample"}[dcn]
        assert want in ops and m["dla"]["report"]["gpu_fallback_ops"].get(want, 0) > 0
    assert lint_model(onnx.load(str(out / "model.onnx")), m["target_tensorrt"]) == []


def test_v1_refused_for_jetpack_46_and_wrong_output(tmp_path):
    from ffedge.export.tensorrt_target import TrtOptions, export_tensorrt

    with pytest.raises(FFEdgeError, match="no way to run deformable convs"):
        export_tensorrt("v1", output=tmp_path / "v1.trtbundle", input_size=SIZE,
                        options=TrtOptions(jetpack="4.6"), verify=False)
    with pytest.raises(FFEdgeError, match="must end in .trtbundle"):
        export_tensorrt("nano_b", output=tmp_path / "x.engine", input_size=SIZE, verify=False)
    assert list(tmp_path.iterdir()) == []


# --- INT8 on real photos (shared, slow) ---------------------------------------------------

def _int8_bundle(tmp_path, images, model: str, jetpack: str):
    """An int8 DLA bundle with the default gate and fallback; checks what every int8
    bundle must hold (lint, Q/DQ, calibration cache). Returns (report, manifest, proto,
    share of Convs with int8 input and weights)."""
    from ffedge.export.calibration_plan import Calibration
    from ffedge.export.tensorrt_target import TrtOptions, export_tensorrt

    out = tmp_path / f"{model}.trtbundle"
    report = export_tensorrt(model, output=out, precision="int8",
                             options=TrtOptions(jetpack=jetpack, dla=True, n_reference=2),
                             calibration=Calibration(images, num_images=10, num_eval=9))
    m = json.loads((out / "manifest.json").read_text())
    proto = onnx.load(str(out / "model.onnx"))
    assert lint_model(proto, m["target_tensorrt"]) == []
    number, scales = read_calibration_cache(out / "calibration.cache")
    assert number == resolve_version(jetpack).cache_number
    float_names = {o for n in onnx.load(str(out / "model_float.onnx")).graph.node for o in n.output}
    assert "images" in scales and set(scales) - {"images"} <= float_names
    assert report.parity.images == 9 and "f1" in m["fidelity_onnxruntime"]
    dq = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    share = sum(c.input[0] in dq and c.input[1] in dq for c in convs) / len(convs)
    return report, m, proto, share


def _quantization(manifest: dict) -> dict:
    q = manifest["metadata"]["quantization"]  # the sidecar keeps nested facts as JSON text
    return json.loads(q) if isinstance(q, str) else q


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize("jetpack", ["6.2", "6.0"])  # native DeformConv / plugin node
def test_v1_int8_bundle_keeps_f1_on_real_photos(tmp_path, shared_images, jetpack):
    """V1's trained weights, default settings (equalisation, bias correction, ranked float
    fallback): the gate passes at 0.98 in onnxruntime with most convs int8."""
    from ffedge.weights import BUNDLED_SHA256

    report, m, proto, share = _int8_bundle(tmp_path, shared_images, "v1", jetpack)
    assert report.gated and report.min_f1 == 0.98
    assert report.parity.detections.f1 >= 0.98 and m["fidelity_onnxruntime"]["f1"] >= 0.98
    assert share >= 0.7, f"only {share:.0%} of convs int8"
    assert m["trained_weights"] and m["metadata"]["checkpoint_sha256"] == BUNDLED_SHA256["v1"]
    q = _quantization(m)
    assert q["equalize"] and q["bias_correction"] and q["fallback_precision"] == "float"
    if jetpack == "6.0":
        assert any(n.op_type == "ModulatedDeformConv2d" for n in proto.graph.node)


@pytest.mark.slow
@pytest.mark.shared
def test_nano_b_int8_bundle_structure_with_random_weights(tmp_path, shared_images):
    """nano_b has no trained weights: its F1 is reported, not gated (ffedge.export.tolerances'
    one random-weights policy), so no fallback runs and every conv is int8."""
    report, m, proto, share = _int8_bundle(tmp_path, shared_images, "nano_b", "6.2")
    assert not report.gated and report.min_f1 == 0.0 and not m["trained_weights"]
    assert share == 1.0 and report.excluded == [] and report.trials == 0
    assert _quantization(m)["fallback_nodes"] == 0
    assert sum(n.op_type == "QuantizeLinear" for n in proto.graph.node) > 10


# --- without TensorRT ---------------------------------------------------------------------

@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed here")
def test_without_tensorrt_every_engine_path_exits_3_with_one_line(tmp_path):
    from ffedge.artifact.metadata import ArtifactMetadata, sidecar_json, sidecar_path
    from ffedge.models import get_spec
    from ffedge.runtimes.loader import load_runner

    r = subprocess.run([sys.executable, "-m", "ffedge.export.trt_build", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not a TensorRT bundle" in r.stderr  # bad input first
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "ffedge-tensorrt-bundle",
                                                        "precision": "fp16"}))
    r = subprocess.run([sys.executable, "-m", "ffedge.export.trt_build", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: TensorRT is not installed")
    assert "JetPack" in r.stderr
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 16)
    meta = ArtifactMetadata("nano_b", get_spec("nano_b").with_input_size(*SIZE), "fp16",
                            extra={"tensorrt": {"tensorrt": "10.3.0", "device": "Orin",
                                                "compute_capability": "8.7",
                                                "input_shape": [1, 3, *SIZE]}})
    sidecar_path(engine).write_text(sidecar_json(meta))
    runner = load_runner("trt", engine)
    assert runner.runtime == "tensorrt" and runner.spec.input_size == SIZE
    with pytest.raises(FFEdgeError) as exc:
        runner.infer(np.zeros((1, 3, *SIZE), np.float32))
    assert exc.value.exit_code == 3


def test_mismatched_engine_is_refused_in_one_line(tmp_path):
    from ffedge.runtimes.tensorrt_runner import check_engine_identity

    built = {"tensorrt": "10.3.0", "device": "Orin", "compute_capability": "8.7"}
    check_engine_identity(built, dict(built), tmp_path / "a.engine")
    with pytest.raises(FFEdgeError, match="not portable") as exc:
        check_engine_identity(built, {**built, "tensorrt": "8.6.2"}, tmp_path / "a.engine")
    assert "\n" not in str(exc.value) and "10.3.0" in str(exc.value)
    with pytest.raises(FFEdgeError, match="sm 7.2"):
        check_engine_identity(built, {**built, "compute_capability": "7.2"}, tmp_path / "a.engine")
