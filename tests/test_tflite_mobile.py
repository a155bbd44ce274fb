"""The ``.tflite`` an app team drops in: standard metadata, delegate checks, size (issue 16).

Independent reader: ``_raw_table``/``_raw_*`` below decode the ``TFLITE_METADATA`` buffer
straight from the bytes with ``struct``, following the FlatBuffers binary format (root
uoffset, soffset to the vtable, field slots in declaration order of tflite-support's
``metadata_schema.fbs``, unions as a type byte + offset). They share no code with the
writer (flatbuffers ``Builder``) or with ``parse_metadata_buffer`` (flatbuffers ``Table``).
The writer was also cross-checked once by hand with ``flatc 25.12.19 --json --raw-binary
metadata_schema.fbs`` (the official schema), which decodes it to the same values.

Small graphs for the delegate rules are written by hand with the TFLite schema's object API
and run in ai-edge-litert, so they are real, loadable models.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert.interpreter", reason="needs the tflite extra (ai-edge-litert)")

import ai_edge_litert.schema_py_generated as fb  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from ffedge.artifact.metadata import ArtifactMetadata  # noqa: E402
from ffedge.artifact.tflite_delegates import (  # noqa: E402
    coreml_delegate_report,
    gpu_delegate_report,
)
from ffedge.artifact.tflite_metadata import (  # noqa: E402
    METADATA_NAME,
    metadata_buffer,
    read_standard_metadata,
    standard_metadata,
    with_standard_metadata,
)
from ffedge.artifact.tflite_pack import pack_model, read_model  # noqa: E402
from ffedge.models import get_spec  # noqa: E402

# ------------------------------------------------------------ independent raw reader


def _u32(b: bytes, at: int) -> int:
    return struct.unpack_from("<I", b, at)[0]


def _raw_table(b: bytes, pos: int) -> tuple[int, list[int]]:
    """(table position, field offsets by slot; 0 = absent)."""
    vt = pos - struct.unpack_from("<i", b, pos)[0]
    vt_len = struct.unpack_from("<H", b, vt)[0]
    return pos, [struct.unpack_from("<H", b, vt + 4 + 2 * i)[0] for i in range((vt_len - 4) // 2)]


def _raw_field(b: bytes, table: tuple[int, list[int]], slot: int) -> int | None:
    pos, slots = table
    return pos + slots[slot] if slot < len(slots) and slots[slot] else None


def _raw_ref(b: bytes, table, slot):  # position of the object an offset field points at
    at = _raw_field(b, table, slot)
    return None if at is None else at + _u32(b, at)


def _raw_str(b: bytes, table, slot) -> str | None:
    at = _raw_ref(b, table, slot)
    return None if at is None else b[at + 4:at + 4 + _u32(b, at)].decode()


def _raw_vec(b: bytes, table, slot, fmt: str) -> list:
    at = _raw_ref(b, table, slot)
    if at is None:
        return []
    n = _u32(b, at)
    if fmt == "table":
        return [_raw_table(b, at + 4 + 4 * i + _u32(b, at + 4 + 4 * i)) for i in range(n)]
    return list(struct.unpack_from(f"<{n}{fmt}", b, at + 4))


def _raw_sub(b: bytes, table, slot):
    at = _raw_ref(b, table, slot)
    return None if at is None else _raw_table(b, at)


def _raw_byte(b: bytes, table, slot, fmt: str = "b", default: int = 0):
    at = _raw_field(b, table, slot)
    return default if at is None else struct.unpack_from("<" + fmt, b, at)[0]


def _nano_meta(size=(160, 160), decoded=False, io=None) -> ArtifactMetadata:
    spec = get_spec("nano_b").with_input_size(*size)
    extra = {"decode_in_graph": decoded,
             "io": io or {"input": {"name": "images"},
                          "outputs": [{"name": n} for n in ("boxes", "scores", "landmarks")]}}
    if decoded:
        from ffedge.export.tflite_decode import DECODED_SEMANTICS

        extra["decoded_outputs"] = DECODED_SEMANTICS
    return ArtifactMetadata(model="nano_b", spec=spec, precision="fp16", extra=extra)


# ------------------------------------------------------------ hand-built tiny models


def _tensor(shape, ttype, buffer):
    t = fb.TensorT()
    t.shape, t.type, t.buffer, t.name = list(shape), ttype, buffer, None
    return t


def _tiny_model(op: str, options_type: int, options, params_shape, index, out_shape,
                index_type=fb.TensorType.INT32) -> bytes:
    """``out = OP(params, const index)``: one input, one constant, one output."""
    model = fb.ModelT()
    model.version = 3
    code = getattr(fb.BuiltinOperator, op)
    oc = fb.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
    model.operatorCodes = [oc]
    empty, const = fb.BufferT(), fb.BufferT()
    index = np.asarray(index, dtype=np.int32 if index_type == fb.TensorType.INT32 else np.int64)
    const.data = np.frombuffer(index.tobytes(), dtype=np.uint8)
    model.buffers = [fb.BufferT(), empty, const, fb.BufferT()]
    sg = fb.SubGraphT()
    sg.tensors = [_tensor(params_shape, fb.TensorType.FLOAT32, 1),
                  _tensor(index.shape, index_type, 2),
                  _tensor(out_shape, fb.TensorType.FLOAT32, 3)]
    sg.tensors[0].name, sg.tensors[2].name = "x", "y"
    o = fb.OperatorT()
    o.opcodeIndex, o.inputs, o.outputs = 0, [0, 1], [2]
    o.builtinOptionsType, o.builtinOptions = options_type, options
    sg.operators, sg.inputs, sg.outputs = [o], [0], [2]
    model.subgraphs = [sg]
    return pack_model(model)


def _gather_nd() -> bytes:
    return _tiny_model("GATHER_ND", fb.BuiltinOptions.GatherNdOptions, fb.GatherNdOptionsT(),
                       [1, 4, 3], [[0, 1], [0, 3]], [2, 3])


def _gather(index) -> bytes:
    opts = fb.GatherOptionsT()
    opts.axis = 1
    n = np.asarray(index).shape
    return _tiny_model("GATHER", fb.BuiltinOptions.GatherOptions, opts, [1, 4, 3], index,
                       [1, *n, 3])


# ------------------------------------------------------------------------- metadata


def test_standard_metadata_read_back_by_independent_reader():
    meta = _nano_meta((160, 192))
    data = with_standard_metadata(_gather_nd(), standard_metadata(meta))
    buf = metadata_buffer(data)
    assert buf[4:8] == b"M001"
    root = _raw_table(buf, _u32(buf, 0))
    assert _raw_str(buf, root, 7) == "1.0.0"  # min_parser_version
    assert "nano_b" in _raw_str(buf, root, 0) and _raw_str(buf, root, 5).startswith("MIT")
    (sg,) = _raw_vec(buf, root, 3, "table")
    assert _raw_str(buf, sg, 0) == "serving_default"
    (inp,) = _raw_vec(buf, sg, 2, "table")
    assert _raw_str(buf, inp, 0) == "images"
    content = _raw_sub(buf, inp, 3)
    assert _raw_byte(buf, content, 0, "B") == 2  # ContentProperties.ImageProperties
    image = _raw_sub(buf, content, 1)
    assert _raw_byte(buf, image, 0) == 0  # BGR model: color_space UNKNOWN, never "RGB"
    size = _raw_sub(buf, image, 1)
    assert (_raw_byte(buf, size, 0, "I"), _raw_byte(buf, size, 1, "I")) == (192, 160)
    (unit,) = _raw_vec(buf, inp, 4, "table")
    assert _raw_byte(buf, unit, 0, "B") == 1  # ProcessUnitOptions.NormalizationOptions
    norm = _raw_sub(buf, unit, 1)
    assert _raw_vec(buf, norm, 0, "f") == [104.0, 117.0, 123.0]  # mean, BGR order
    assert _raw_vec(buf, norm, 1, "f") == [1.0, 1.0, 1.0]
    outs = _raw_vec(buf, sg, 3, "table")
    assert [_raw_str(buf, t, 0) for t in outs] == ["boxes", "scores", "landmarks"]
    (thr,) = _raw_vec(buf, outs[1], 4, "table")
    assert _raw_byte(buf, thr, 0, "B") == 3  # ScoreThresholdingOptions
    assert _raw_byte(buf, _raw_sub(buf, thr, 1), 0, "f") == pytest.approx(0.5)
    # our own reader agrees, and the model still loads and runs
    assert read_standard_metadata(data)["subgraph_metadata"][0]["input_tensor_metadata"][0][
        "normalization"] == {"mean": [104.0, 117.0, 123.0], "std": [1.0, 1.0, 1.0]}
    it = Interpreter(model_content=data)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], np.arange(12, dtype=np.float32)
                  .reshape(1, 4, 3))
    it.invoke()
    np.testing.assert_array_equal(it.get_tensor(it.get_output_details()[0]["index"]),
                                  [[3, 4, 5], [9, 10, 11]])


def test_decoded_outputs_carry_bounding_box_properties_and_reembedding_replaces():
    meta = _nano_meta(decoded=True)
    data = with_standard_metadata(_gather_nd(), standard_metadata(meta))
    data = with_standard_metadata(data, standard_metadata(meta))  # again: replaces
    model = read_model(data)
    names = [m.name.decode() for m in model.metadata]
    assert names.count(METADATA_NAME) == 1
    outs = read_standard_metadata(data)["subgraph_metadata"][0]["output_tensor_metadata"]
    box = outs[0]["content"]
    assert box == {"type": "bounding_box", "index": [0, 1, 2, 3], "box_type": "BOUNDARIES",
                   "coordinate_type": "RATIO", "range": [2, 2]}
    assert outs[1]["score_threshold"] == pytest.approx(0.5)
    assert "face probability" in outs[1]["description"]


# ------------------------------------------------------------------------ delegates


def test_gpu_check_flags_gather_nd_and_names_it():
    data = _gather_nd()
    Interpreter(model_content=data).allocate_tensors()  # a real, loadable model
    gpu = gpu_delegate_report(data)
    assert not gpu.ok and gpu.label == "cpu-only"
    assert gpu.offending() == {"GATHER_ND": "x1: not supported"}
    assert "GATHER_ND" in gpu.summary()


def test_gpu_gather_rule_one_d_int32_indices_only():
    assert gpu_delegate_report(_gather([0, 2])).ok
    two_d = gpu_delegate_report(_gather([[0, 2], [1, 3]]))
    assert two_d.offending() == {"GATHER": "x1: indices must be 1-D"}


def test_gpu_strided_slice_masks_and_coreml_float_only():
    def sliced(shrink: int) -> bytes:
        opts = fb.StridedSliceOptionsT()
        opts.shrinkAxisMask = shrink
        model = read_model(_tiny_model("STRIDED_SLICE", fb.BuiltinOptions.StridedSliceOptions,
                                       opts, [1, 4, 3], [0, 0, 0], [1, 4, 3]))
        # STRIDED_SLICE takes begin, end, strides: reuse the constant for all three
        op = model.subgraphs[0].operators[0]
        op.inputs = [0, 1, 1, 1]
        return pack_model(model)

    assert gpu_delegate_report(sliced(0)).ok
    assert "shrinkAxisMask" in gpu_delegate_report(sliced(2)).summary()
    core = coreml_delegate_report(sliced(0))
    assert core.offending() == {"STRIDED_SLICE": "x1: not supported"}


def test_pack_model_shares_repeats_without_changing_the_model():
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = read_model(_gather_nd())
    for _ in range(20):  # 20 more per-channel int8 tensors with equal shapes and params
        t = _tensor([64, 3], fb.TensorType.INT8, 0)
        q = fb.QuantizationParametersT()
        q.scale, q.zeroPoint = np.ones(64, np.float32), np.zeros(64, np.int64)
        t.quantization = q
        model.subgraphs[0].tensors.append(t)
    shared = pack_model(model)
    bulky = bytes(fu.convert_object_to_bytearray(read_model(shared)))
    assert len(shared) < len(bulky) - 19 * 64 * 12  # scales + zero points stored once
    back = read_model(shared).subgraphs[0].tensors
    assert len(back) == 23 and back[22].quantization.zeroPoint.tolist() == [0] * 64
    it = Interpreter(model_content=shared)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], np.ones((1, 4, 3), np.float32))
    it.invoke()
    assert it.get_tensor(it.get_output_details()[0]["index"]).shape == (2, 3)


# ---------------------------------------------------------------- real exports (slow)


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    from tests.conftest import synthetic_images

    return synthetic_images(tmp_path_factory.mktemp("calib16"), 6)


@pytest.fixture(scope="module")
def nano_fp16(tmp_path_factory):
    """nano_b FP16 at 160x160 with the defaults (RGB input), verified by the pipeline."""
    from ffedge.export.tflite_target import TFLiteOptions, export_tflite

    out = tmp_path_factory.mktemp("nano16") / "nano_fp16.tflite"
    report = export_tflite("nano_b", output=out, input_size=(160, 160),
                           options=TFLiteOptions("fp16", require_gpu_delegate=True),
                           threads=1)
    return out, report


@pytest.mark.slow
def test_nano_b_fp16_is_fully_gpu_delegable_with_metadata_and_signature(nano_fp16):
    out, report = nano_fp16
    data = out.read_bytes()
    assert gpu_delegate_report(data).ok
    assert any(n.startswith("GPU delegate: full") for n in report.notes)
    it = Interpreter(model_content=data)
    sig = it.get_signature_list()["serving_default"]
    assert sig["inputs"] == ["images"] and set(sig["outputs"]) == {"boxes", "scores",
                                                                  "landmarks"}
    md = read_standard_metadata(data)["subgraph_metadata"][0]
    assert md["input_tensor_metadata"][0]["content"]["default_size"] == {"width": 160,
                                                                         "height": 160}
    order = list(it.get_signature_runner().get_output_details())
    assert {t["name"] for t in md["output_tensor_metadata"]} == set(order)


@pytest.mark.slow
def test_nano_b_int8_default_fits_230_kb(tmp_path, calib):
    from ffedge.export.tflite_target import TFLiteOptions, export_tflite

    out = tmp_path / "nano_int8.tflite"
    export_tflite("nano_b", output=out, options=TFLiteOptions("int8"), calib=calib,
                  min_f1=0.0, threads=1)
    size = out.stat().st_size
    assert size <= 230_000, f"nano_b INT8 is {size} bytes"
    assert read_standard_metadata(out.read_bytes()) is not None


# ------------------------------------------------------------------ RGB input (folded)


def _nano_torch(size=(160, 160)):
    from ffedge.models import create_model

    return create_model("nano_b", input_size=size, pretrained=False).eval()


def test_channel_flip_folds_into_first_conv_exactly_and_leaves_the_model_alone():
    import torch

    from ffedge.export.channel_order import input_conv, serve_in_order

    net = _nano_torch()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rgb_net, spec, how = serve_in_order(net, net.spec, "rgb")
    assert how == "folded into the first conv"
    assert (spec.channel_order, spec.mean, spec.std) == ("RGB", (123.0, 117.0, 104.0),
                                                         (1.0, 1.0, 1.0))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert sum(p.numel() for p in rgb_net.parameters()) == sum(p.numel()
                                                               for p in net.parameters())
    bgr = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(1)) * 60
    with torch.no_grad():
        for a, b in zip(net(bgr), rgb_net(bgr.flip(1))):
            assert float((a - b).abs().max()) <= 1e-5
    # random-weight nano_b barely reacts to its input, so check the fold itself too
    first, folded = input_conv(net, net.spec), input_conv(rgb_net, spec)
    assert torch.equal(folded.weight, first.weight.flip(1))
    assert not torch.equal(folded.weight, first.weight)
    assert serve_in_order(net, net.spec, "BGR")[2] == "as trained"


@pytest.mark.slow
def test_channel_flip_fold_on_trained_v1_matches_flip_then_model():
    """V1's trained weights react to the channel order (a swapped input moves the outputs
    by ~1): the folded RGB model on RGB equals V1 on BGR to float rounding."""
    import torch

    from ffedge.export.channel_order import serve_in_order
    from ffedge.models import create_model
    from ffedge.weights import bundled_checkpoint

    net = create_model("v1", checkpoint=bundled_checkpoint("v1"), input_size=(160, 160),
                       pretrained=False).eval()
    rgb_net, _, how = serve_in_order(net, net.spec, "RGB")
    assert how == "folded into the first conv"
    bgr = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(1)) * 60
    with torch.no_grad():
        ref, got, wrong = net(bgr), rgb_net(bgr.flip(1)), rgb_net(bgr)
    for a, b, c in zip(ref, got, wrong):
        scale = float(a.abs().max())
        assert float((a - b).abs().max()) <= 1e-5 * scale
        assert float((a - c).abs().max()) > 0.01 * scale


def test_channel_flip_falls_back_to_a_graph_op_when_no_conv_takes_the_input():
    import torch

    from ffedge.export.channel_order import ChannelFlip, serve_in_order

    class Scaled(torch.nn.Module):  # the input is scaled before the first conv
        def __init__(self, inner):
            super().__init__()
            self.inner, self.spec = inner, inner.spec

        def forward(self, x):
            return self.inner(x * 1.0)

    net = Scaled(_nano_torch())
    rgb_net, spec, how = serve_in_order(net, net.spec, "RGB")
    assert how == "flip op in the graph" and isinstance(rgb_net, ChannelFlip)
    bgr = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(2)) * 60
    with torch.no_grad():
        for a, b in zip(net(bgr), rgb_net(bgr.flip(1))):
            assert torch.equal(a, b)


def test_rgb_metadata_says_rgb_with_rgb_mean_for_an_independent_reader():
    from dataclasses import replace

    from ffedge.export.channel_order import flipped_spec

    meta = _nano_meta()
    meta = replace(meta, spec=flipped_spec(meta.spec, "RGB"))
    buf = metadata_buffer(with_standard_metadata(_gather_nd(), standard_metadata(meta)))
    root = _raw_table(buf, _u32(buf, 0))
    (sg,) = _raw_vec(buf, root, 3, "table")
    (inp,) = _raw_vec(buf, sg, 2, "table")
    image = _raw_sub(buf, _raw_sub(buf, inp, 3), 1)
    assert _raw_byte(buf, image, 0) == 1  # ColorSpaceType.RGB
    (unit,) = _raw_vec(buf, inp, 4, "table")
    norm = _raw_sub(buf, unit, 1)
    assert _raw_vec(buf, norm, 0, "f") == [123.0, 117.0, 104.0]  # mean, R G B
    assert _raw_str(buf, inp, 1).startswith("RGB image")


@pytest.mark.slow
def test_rgb_export_equals_bgr_export_on_the_swapped_image(nano_fp16, tmp_path):
    """Default (RGB) nano_b FP16 on an RGB image == the --bgr export on the BGR image; the
    pipeline verified it (its spec preprocesses RGB); our runner and the standard metadata
    both say RGB, mean in R, G, B order."""
    from ffedge.decoder.transform import preprocess
    from ffedge.export.tflite_target import TFLiteOptions, export_tflite
    from ffedge.imageio import random_images
    from ffedge.runtimes.tflite_runner import TFLiteRunner

    rgb_path, report = nano_fp16
    assert report.parity is not None and report.parity.images > 0  # gated in the pipeline
    assert any("channel flip folded into the first conv" in n for n in report.notes)
    bgr_path = tmp_path / "nano_fp16_bgr.tflite"
    export_tflite("nano_b", output=bgr_path, input_size=(160, 160),
                  options=TFLiteOptions("fp16", channel_order="bgr"), verify=False, threads=1)
    rgb, bgr = TFLiteRunner(rgb_path, threads=1), TFLiteRunner(bgr_path, threads=1)
    assert (rgb.spec.channel_order, rgb.spec.mean) == ("RGB", (123.0, 117.0, 104.0))
    assert (bgr.spec.channel_order, bgr.spec.mean) == ("BGR", (104.0, 117.0, 123.0))
    image_bgr = random_images(1, (160, 160), 5)[0]
    x_rgb, _ = preprocess(image_bgr, rgb.spec)  # the spec flips the BGR array to RGB
    np.testing.assert_array_equal(x_rgb, preprocess(image_bgr, bgr.spec)[0][::-1])
    for a, b in zip(rgb.infer(x_rgb[None]), bgr.infer(preprocess(image_bgr, bgr.spec)[0][None])):
        assert np.abs(a - b).max() <= 1e-5
    for path, space, mean in ((rgb_path, "RGB", [123.0, 117.0, 104.0]),
                              (bgr_path, "UNKNOWN", [104.0, 117.0, 123.0])):
        inp = read_standard_metadata(path.read_bytes())["subgraph_metadata"][0][
            "input_tensor_metadata"][0]
        assert inp["content"]["color_space"] == space
        assert inp["normalization"] == {"mean": mean, "std": [1.0, 1.0, 1.0]}
