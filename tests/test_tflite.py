"""ffexport tflite: NHWC I/O, embedded metadata, integer I/O, decode-in-graph, mobile contract.

Conversions take tens of seconds, so two module-scoped artifacts at 320x320 serve every
test: V1 (bundled trained weights) FP32 with decode-in-graph, and nano_b (seeded random
weights) INT8 with int8 I/O. Everything else runs on their bytes.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("litert_torch", reason="needs the tflite extra (litert-torch)")
pytest.importorskip("ai_edge_litert.interpreter", reason="needs the tflite extra (ai-edge-litert)")
pytestmark = pytest.mark.slow  # conversions: minutes on 2 cores

from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from ffedge.artifact.formats import embed_tflite as embed_metadata  # noqa: E402
from ffedge.artifact.formats import read_tflite as read_embedded  # noqa: E402
from ffedge.artifact.metadata import ArtifactMetadata, read_sidecar, sidecar_path  # noqa: E402
from ffedge.cli.ffexport import main as ffexport  # noqa: E402
from ffedge.decoder import Decoder, decode_boxes, generate_priors, preprocess  # noqa: E402
from ffedge.errors import FFEdgeError  # noqa: E402
from ffedge.export import tflite_flatbuffer as tfb  # noqa: E402
from ffedge.export.tflite_target import TFLiteOptions, export_tflite  # noqa: E402
from ffedge.runtimes import load_runner  # noqa: E402
from ffedge.runtimes.tflite_runner import TFLiteRunner  # noqa: E402
from ffedge.runtimes.torch_runner import TorchRunner  # noqa: E402
from ffedge.weights import bundled_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZE = (320, 320)


def _script():
    spec = importlib.util.spec_from_file_location("mobile_reference",
                                                  ROOT / "scripts" / "mobile_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    mr = _script()
    for i in range(n):
        cv2.imwrite(str(folder / f"img_{i:02d}.png"), mr.reference_image(seed=i))
    return folder


@pytest.fixture(scope="module")
def decoded(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tfl") / "v1_decoded.tflite"
    export_tflite("v1", bundled_checkpoint("v1"), output=out, input_size=SIZE,
                  options=TFLiteOptions("fp32", decode_in_graph=True), threads=2)
    return out


@pytest.fixture(scope="module")
def int8(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("tfl8")
    calib = _images(tmp / "calib", 5)
    out = tmp / "nano_int8.tflite"
    export_tflite("nano_b", output=out, input_size=SIZE, options=TFLiteOptions("int8", io="int8"),
                  calib=calib, num_images=3, num_eval=2, min_f1=0.0, threads=2,
                  cache_dir=tmp / "cache")
    return out


def test_nhwc_input_and_embedded_metadata_round_trip(decoded):
    it = Interpreter(model_path=str(decoded))
    (inp,) = it.get_input_details()
    assert list(inp["shape"]) == [1, *SIZE, 3] and inp["dtype"] == np.float32
    sig = it.get_signature_list()["serving_default"]
    assert sig["inputs"] == ["images"] and set(sig["outputs"]) == {"boxes", "scores", "landmarks"}

    props = read_embedded(decoded.read_bytes())
    meta = ArtifactMetadata.from_props(props)
    side = read_sidecar(decoded)
    assert meta.model == side.model == "v1" and meta.precision == "fp32"
    assert meta.spec == side.spec and meta.spec.input_size == SIZE
    assert meta.extra["layout"] == "NHWC" and meta.extra["decode_in_graph"] is True
    assert meta.extra["io"]["input"]["shape"] == [1, *SIZE, 3]
    assert json.loads(sidecar_path(decoded).read_text())["outputs"]["scores"].startswith("[1,P]")
    # re-embedding replaces, never duplicates, and leaves the model runnable
    again = embed_metadata(decoded.read_bytes(), {"ffedge.model": "x", "ffedge.spec": "{}"})
    assert read_embedded(again) == {"ffedge.model": "x", "ffedge.spec": "{}"}
    Interpreter(model_content=again).allocate_tensors()


def test_decode_in_graph_matches_shared_decoder(decoded):
    """The graph's decoded boxes, thresholded and NMS'd, are the shared decoder's faces."""
    img = _script().reference_image()
    runner = TFLiteRunner(decoded, threads=2)
    spec = runner.spec
    x, t = preprocess(img, spec)
    it = Interpreter(model_path=str(decoded), num_threads=2)
    out = it.get_signature_runner()(images=np.ascontiguousarray(x.transpose(1, 2, 0)[None]))
    boxes, scores, lms = out["boxes"][0], out["scores"][0], out["landmarks"][0]
    # the .tflite takes RGB (flip folded into its first conv); torch's V1 takes BGR
    assert spec.channel_order == "RGB" and spec.mean == (123.0, 117.0, 104.0)
    torch_ref = TorchRunner("v1", bundled_checkpoint("v1"), input_size=SIZE)
    assert torch_ref.spec.channel_order == "BGR"
    ref = torch_ref.infer(preprocess(img, torch_ref.spec)[0][None])
    priors = generate_priors(spec.priors, *SIZE)
    np.testing.assert_allclose(boxes, decode_boxes(ref[0][0], priors, spec.priors.variances),
                               atol=1e-5)
    np.testing.assert_allclose(scores, ref[1][0][:, 1], atol=1e-5)
    # a threshold in the widest gap among the top scores: no face sits near it
    s = np.sort(ref[1][0][:, 1])[-200:]
    k = int(np.argmax(np.diff(s)))
    thr = float((s[k] + s[k + 1]) / 2)
    want = Decoder(spec, score_threshold=thr)(*ref, [t], scores_are="probabilities")[0]
    scale = np.array([SIZE[1], SIZE[0]] * 2, dtype=np.float32)
    back = np.array([t.scale_x, t.scale_y] * 2, dtype=np.float32)

    def after_nms(boxes: np.ndarray, scores: np.ndarray, digits: int | None = None
                  ) -> np.ndarray:
        from ffedge.decoder.nms import nms_ranked_t

        cand = np.flatnonzero(scores > thr)
        rank = scores[cand] if digits is None else np.round(scores[cand], digits)
        order = cand[np.argsort(-rank, kind="stable")]
        keep = order[nms_ranked_t(np.ascontiguousarray((boxes[order] * scale).T), 0.4, 750)]
        return np.clip(boxes[keep] * scale / back, 0, [img.shape[1], img.shape[0]] * 2)

    # the graph's decode on torch's own outputs: the shared decoder's faces, in its order
    import torch

    from ffedge.export.tflite_decode import DecodeInGraph

    class Raw(torch.nn.Module):
        def forward(self, _):
            return tuple(torch.from_numpy(a) for a in ref)

    graph = DecodeInGraph(Raw(), spec)(torch.zeros(1))
    exact = after_nms(graph["boxes"][0].numpy(), graph["scores"][0].numpy())
    assert len(want) > 0
    np.testing.assert_allclose(exact, want.boxes, atol=1e-3)
    # ... and the artifact's decode, run in LiteRT, keeps the same faces
    np.testing.assert_allclose(after_nms(boxes, scores), want.boxes, atol=1e-2)
    assert lms.shape == (priors.shape[0], 10)
    # the runner re-encodes decoded outputs, so ffdetect/ffbench see ordinary deltas
    via_runner = Decoder(spec, score_threshold=thr)(*runner.infer(x[None]), [t],
                                                    scores_are="probabilities")[0]
    np.testing.assert_allclose(via_runner.boxes, want.boxes, atol=1e-2)


def test_integer_io_carries_quant_params(int8, tmp_path):
    data = int8.read_bytes()
    meta = ArtifactMetadata.from_props(read_embedded(data))
    io = meta.extra["io"]
    assert meta.precision == "int8" and meta.extra["io_type"] == "int8"
    it = Interpreter(model_content=data)
    details = [it.get_input_details()[0]] + it.get_output_details()
    recorded = [io["input"]] + io["outputs"]
    for d, r in zip(details, recorded):
        assert d["dtype"] == np.int8 and r["dtype"] == "int8"
        assert d["quantization"][0] == pytest.approx(r["scale"])
        assert d["quantization"][1] == r["zero_point"]
    scores = next(r for r in io["outputs"] if r["name"] == "scores")
    assert (scores["scale"], scores["zero_point"]) == (1 / 256, -128)
    assert meta.extra["calibration"]["images"] == 3 and "fidelity" in meta.extra

    # the same graph retyped: uint8 shifts zero points by 128, float adds (de)quantise ops
    u8 = tfb.io_contract(tfb.retype_io(data, "uint8"))
    assert u8["input"]["dtype"] == "uint8"
    assert u8["input"]["zero_point"] == io["input"]["zero_point"] + 128
    f32 = tfb.retype_io(data, "float")
    assert all(d["dtype"] == "float32" for d in [tfb.io_contract(f32)["input"]]
               + tfb.io_contract(f32)["outputs"])
    # all three agree on an image once (de)quantised by the runner
    x, _ = preprocess(_script().reference_image(), meta.spec)
    outs = []
    for i, blob in enumerate((data, tfb.retype_io(data, "uint8"), f32)):
        p = tmp_path / f"m{i}.tflite"
        p.write_bytes(blob)
        outs.append(TFLiteRunner(p, model_name="nano_b").infer(x[None]))
    for other in outs[1:]:
        for a, b, q in zip(outs[0], other, (io["outputs"][0], io["outputs"][1], io["outputs"][2])):
            assert np.abs(a - b).max() <= 1.01 * max(q["scale"], 1 / 256)


def test_runner_loader_and_cli(decoded, tmp_path, capsys):
    r = load_runner(artifact=decoded, threads=1)
    assert r.runtime == "tflite" and r.info.layout == "NHWC" and r.info.fixed_size == SIZE
    io = r.io_details()
    assert io["images"]["shape"] == [1, *SIZE, 3]
    img = tmp_path / "ref.png"
    cv2.imwrite(str(img), _script().reference_image())
    from ffedge.cli.ffdetect import main as ffdetect

    assert ffdetect(["--artifact", str(decoded), str(img), "--threshold", "0.9"]) == 0
    assert ffexport(["tflite", "--model", "nano_b", "--precision", "int8", "-o",
                     str(tmp_path / "x.tflite")]) != 0
    assert ffexport(["tflite", "--model", "nano_b", "--io", "int8", "-o",
                     str(tmp_path / "y.tflite")]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--calib" in err and "--precision int8" in err
    assert not list(tmp_path.glob("*.tflite"))
    with pytest.raises(FFEdgeError, match="must end in .tflite"):
        export_tflite("nano_b", output=tmp_path / "z.onnx")


def test_mobile_contract_reference_detections(decoded, int8, tmp_path):
    """The script's app-side pipeline (numpy only) finds what ffedge's decoder finds, on a
    decode-in-graph float model and on a raw-output int8-I/O one, and --check accepts its
    own reference and rejects a changed one."""
    mr = _script()
    img = mr.reference_image()
    for artifact, thr in ((decoded, mr.SCORE_THRESHOLD), (int8, 0.6)):
        runner = TFLiteRunner(artifact, threads=2)
        x, t = preprocess(img, runner.spec)
        want = Decoder(runner.spec, score_threshold=thr)(
            *runner.infer(x[None]), [t], scores_are="probabilities")[0]
        got = mr.detect(artifact, img, score_threshold=thr)
        assert len(got) == len(want)
        if got:
            np.testing.assert_allclose([d["box"] for d in got], want.boxes, atol=0.02)
            np.testing.assert_allclose([d["score"] for d in got], want.scores, atol=1e-4)
    ref = tmp_path / "ref.json"
    assert mr.main([str(decoded), "--json", str(ref), "--image", str(tmp_path / "r.png")]) == 0
    assert mr.main([str(decoded), "--check", str(ref)]) == 0
    doc = json.loads(ref.read_text())
    assert doc["image"]["size_hw"] == [480, 640] and doc["decode_in_graph"] is True
    assert len(doc["detections"]) >= 2 and min(d["score"] for d in doc["detections"]) > 0.5
    doc["detections"] = doc["detections"][:-1] if doc["detections"] else [{"box": [0] * 4}]
    ref.write_text(json.dumps(doc))
    assert mr.main([str(decoded), "--check", str(ref)]) == 1


def test_gather_dcn_equals_grid_sample_dcn():
    """The TFLite lowering of V1's deformable convs computes DCNv2 exactly like the model,
    out-of-map samples (large offsets) included."""
    import copy

    import torch

    from ffedge.export.tflite_dcn import GatherDeformConv, use_gather_dcn
    from ffedge.models.dcn import DeformableConv2d

    torch.manual_seed(0)
    dcn = DeformableConv2d(8, 6, stride=2).eval()
    with torch.no_grad():
        for conv in (dcn.offset_conv, dcn.modulator_conv):
            conv.weight.normal_(0, 0.5)
            conv.bias.normal_(0, 3.0)
        x = torch.randn(2, 8, 20, 24)
        np.testing.assert_allclose(GatherDeformConv(dcn)(x).numpy(), dcn(x).numpy(), atol=1e-4)
    from ffedge.models import create_model

    net = create_model("v1", bundled_checkpoint("v1"))
    gathered = copy.deepcopy(net)
    assert use_gather_dcn(gathered) == 15
    with torch.no_grad():
        img = torch.randn(1, 3, 96, 128) * 60
        for a, b in zip(net(img), gathered(img)):
            np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-3)


def test_backbone_equalisation_keeps_v1_outputs_and_evens_ranges():
    """Cross-layer equalisation before TFLite INT8 is exact in float (LeakyReLU is positively
    homogeneous) and narrows the spread of per-channel weight ranges in stage 1."""
    import copy

    import torch

    from ffedge.export.passes.bn_fold import fold_batchnorm
    from ffedge.export.tflite_equalize import equalise_backbone
    from ffedge.models import create_model

    net = create_model("v1", bundled_checkpoint("v1")).eval()
    eq = copy.deepcopy(net)
    assert equalise_backbone(eq) == 24  # 5 + 11 + 8 conv pairs within the three stages

    def spread(model):
        convs = [m for m in model.body.stage1.modules() if isinstance(m, torch.nn.Conv2d)]
        r = convs[1].weight.detach().abs().amax(dim=(1, 2, 3))  # first depthwise conv
        return float(r.max() / r.min())

    folded = copy.deepcopy(net)
    fold_batchnorm(folded)  # the plain BN fold: ranges 0.01..52 in the first depthwise conv
    assert spread(folded) > 50 and spread(eq) < 5
    with torch.no_grad():
        img = torch.rand(1, 3, 160, 160) * 255 - 117
        for a, b in zip(net(img), eq(img)):
            assert float((a - b).abs().max()) <= 1e-4 * (1 + float(a.abs().max()))


def test_v1_int8_tflite_passes_the_gate_on_real_photos(tmp_path, shared_images):
    """V1 INT8 for LiteRT (ai-edge-quantizer after FP32 conversion; DCN sampling and stage1
    float): written only because F1 vs torch FP32 on held-out shared photos >= 0.98."""
    photos = shared_images
    out = tmp_path / "v1_int8.tflite"
    report = export_tflite("v1", output=out, options=TFLiteOptions("int8"), calib=photos,
                           threads=2)
    assert out.exists() and report.gated and report.min_f1 >= 0.98
    assert report.parity.detections.f1 >= 0.98
    meta = read_sidecar(out)
    assert "ai-edge-quantizer" in meta.extra["quantization"]["backend"]
    model = tfb.read(out.read_bytes())
    sg = model.subgraphs[0]
    hist = tfb.op_histogram(out.read_bytes())
    int8_convs = sum(1 for op in sg.operators if op.inputs and len(op.inputs) > 1
                     and sg.tensors[op.inputs[1]].type == 9)  # INT8 weights
    assert int8_convs >= 40 and hist["GATHER_ND"] == 60  # most convs int8; sampling kept


def test_fuse_float_islands_makes_leaky_relu_int8_with_the_same_outputs():
    """ai-edge-quantizer leaves LEAKY_RELU float (DEQUANTIZE -> op -> QUANTIZE); the fusion
    rewires each island into one int8 op and the outputs stay within quantisation steps."""
    import torch

    from ffedge.export.tflite_quant import fuse_float_islands, quantize_float_tflite
    from ffedge.export.tflite_target import convert

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.LeakyReLU(0.1),
                              torch.nn.Conv2d(8, 4, 3, padding=1), torch.nn.LeakyReLU(0.1))

    class Nhwc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = net  # scope names like the deployment wrapper's

        def forward(self, images):
            return self.inner(images.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    example = torch.zeros(1, 16, 16, 3)
    rng = np.random.default_rng(0)
    samples = [rng.normal(0, 40, (1, 16, 16, 3)).astype(np.float32) for _ in range(8)]
    quant = quantize_float_tflite(convert(Nhwc(), example), samples)
    fused = fuse_float_islands(quant)
    before, after = tfb.op_histogram(quant), tfb.op_histogram(fused)
    assert before["LEAKY_RELU"] == after["LEAKY_RELU"] == 2
    assert sum(before.values()) - sum(after.values()) == 4  # 2 x (DEQUANTIZE + QUANTIZE)

    def run(data):
        it = Interpreter(model_content=data)
        runner = it.get_signature_runner()
        inp = it.get_input_details()[0]
        scale, zp = inp["quantization"]
        x = np.clip(np.round(samples[0] / scale) + zp, -128, 127).astype(np.int8)
        out = next(iter(runner(images=x).values()))
        return out.astype(np.int32)

    diff = np.abs(run(quant) - run(fused))  # one rounding of each island moves by <= 1 step,
    assert diff.max() <= 2 and diff.mean() < 0.2  # the next conv may carry it to 2


@pytest.mark.parametrize("model", ["v2_ca", "eca_cbam"])
def test_trained_family_fp16_tflite_verifies_on_real_photos(model, tmp_path, shared_images):
    """Issue 12: the bundled V2-CA / ECA-CBAM weights export to an FP16 .tflite at 640 that
    passes verification against torch on the shared photos (measured: F1 0.996 / 1.000 on
    19 photos; FP32 is gated at F1 1.0 and matched 134/134 and 124/124 faces)."""
    out = tmp_path / f"{model}_fp16.tflite"
    report = export_tflite(model, output=out, options=TFLiteOptions("fp16"),
                           verify_images=[shared_images], threads=2)
    assert out.exists() and sidecar_path(out).exists()
    assert report.gated and report.parity.images == 19
    assert report.parity.detections.reference >= 100  # real faces, not an empty agreement
    assert report.parity.detections.f1 >= 0.98
    assert read_sidecar(out).precision == "fp16"
