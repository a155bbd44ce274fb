"""The trained FeatherFace family in the zoo: v2_ca (coordinate attention) and eca_cbam.

- bundled weights: sha256, strict load, parameter counts, 16,800 priors, denormal flush count
  and output equality (no ../shared needed);
- parity with the upstream research code (../shared/upstream_featherface, reference only)
  on real photos, <= 1e-4 on the raw outputs, and face counts vs the reference counts.

The upstream files import ``torchvision`` (``IntermediateLayerGetter``, ``ops.deform_conv2d``),
which does not install with our torch. While they are imported, a minimal stand-in sits in
``sys.modules``: a layer getter, and a DCNv2 written independently of ours (per-tap bilinear
sampling by integer gathers, zero outside the map: torchvision's semantics), so the parity
test checks our grid_sample DCN too instead of comparing it with itself.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ffedge.digest import file_sha256
from ffedge.models import create_model, get_spec, list_models
from ffedge.models.checkpoint import flush_denormals, read_state_dict
from ffedge.models.eca_cbam import ECACBAM, eca_kernel_size
from ffedge.models.v2_ca import CoordinateAttention
from ffedge.weights import BUNDLED_SHA256, bundled_checkpoint

from .conftest import need_shared

FAMILY = {"v2_ca": 493_095, "eca_cbam": 476_345}
DENORMALS = {"v2_ca": 0, "eca_cbam": 48_532}
PUBLISHED_SHA256 = {
    "v2_ca": "c1fb500ec124812fd2d28cd31695bb94b361e1c94282b82dd2dff0e513345111",
    "eca_cbam": "81cdeffd35c13e2123d63080c9bd16a9eebe6f8e0579994ad6322b6393a10666",
}
SHARED_CHECKPOINT = {
    "v2_ca": "featherface_v2_ca_widerface.pth",
    "eca_cbam": "featherface_eca_cbam_widerface.pth",
}
PARITY_PHOTOS = ("portrait_a.jpg", "selfie_group.jpg", "crowd_a.jpg")
# Faces found on the 19 shared photos by the upstream code (../shared/checkpoints/README.md).
REFERENCE_COUNTS = {"v1": 221, "v2_ca": 203, "eca_cbam": 208}
# Ops every converter takes; Conv includes ECA's 1-D conv, GridSample/MatMul are V1's DCN.
PORTABLE_OPS = {
    "Add", "Concat", "Constant", "Conv", "Div", "Mul", "ReduceMax", "ReduceMean", "Relu",
    "Reshape", "Sigmoid", "BatchNormalization", "Unsqueeze", "Squeeze", "Identity",
}


SHIM_MODULES = (
    "torchvision", "torchvision.models", "torchvision.models._utils",
    "torchvision.models.detection", "torchvision.models.detection.backbone_utils",
    "torchvision.ops",
)


class IntermediateLayerGetter(nn.ModuleDict):
    def __init__(self, model: nn.Module, return_layers: dict) -> None:
        wanted = dict(return_layers)
        layers = OrderedDict()
        remaining = set(wanted)
        for name, child in model.named_children():
            layers[name] = child
            remaining.discard(name)
            if not remaining:
                break
        super().__init__(layers)
        self.return_layers = wanted

    def forward(self, x):
        out = OrderedDict()
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def gather_deform_conv2d(input, offset, weight, bias=None, stride=1, padding=0, dilation=1,
                         mask=None):
    """torchvision.ops.deform_conv2d semantics (offset groups 1), by corner gathers."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    b, c, h, w = input.shape
    cout, _, kh, kw = weight.shape
    k = kh * kw
    ho, wo = offset.shape[-2:]
    dt, dev = input.dtype, input.device
    off = offset.reshape(b, k, 2, ho, wo)
    tap_y = (torch.arange(kh, dtype=dt, device=dev) * dh).repeat_interleave(kw)
    tap_x = (torch.arange(kw, dtype=dt, device=dev) * dw).repeat(kh)
    ys = (torch.arange(ho, dtype=dt, device=dev) * sh - ph).view(1, 1, ho, 1) \
        + tap_y.view(1, k, 1, 1) + off[:, :, 0]
    xs = (torch.arange(wo, dtype=dt, device=dev) * sw - pw).view(1, 1, 1, wo) \
        + tap_x.view(1, k, 1, 1) + off[:, :, 1]
    y0, x0 = torch.floor(ys), torch.floor(xs)
    ly, lx = ys - y0, xs - x0
    flat = input.reshape(b, c, h * w)
    cols = torch.zeros(b, c, k, ho, wo, dtype=dt, device=dev)
    for dy, dx, wgt in ((0, 0, (1 - ly) * (1 - lx)), (0, 1, (1 - ly) * lx),
                        (1, 0, ly * (1 - lx)), (1, 1, ly * lx)):
        yi, xi = y0 + dy, x0 + dx
        inside = ((yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)).to(dt)
        idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long().reshape(b, 1, -1)
        vals = torch.gather(flat, 2, idx.expand(b, c, idx.shape[-1])).reshape(b, c, k, ho, wo)
        cols = cols + vals * (wgt * inside).unsqueeze(1)
    if mask is not None:
        cols = cols * mask.reshape(b, 1, k, ho, wo)
    out = torch.einsum("ock,bckhw->bohw", weight.reshape(cout, -1, k), cols)
    if bias is not None:
        out = out + bias.view(1, cout, 1, 1)
    return out


def _shim() -> dict[str, types.ModuleType]:
    mods = {name: types.ModuleType(name) for name in SHIM_MODULES}
    mods["torchvision.models._utils"].IntermediateLayerGetter = IntermediateLayerGetter
    mods["torchvision.ops"].deform_conv2d = gather_deform_conv2d
    mods["torchvision"].models = mods["torchvision.models"]
    mods["torchvision"].ops = mods["torchvision.ops"]
    mods["torchvision.models"]._utils = mods["torchvision.models._utils"]
    mods["torchvision.models"].detection = mods["torchvision.models.detection"]
    mods["torchvision.models.detection"].backbone_utils = \
        mods["torchvision.models.detection.backbone_utils"]
    return mods


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


UPSTREAM = {
    # zoo name: (folder, model file, class, config name)
    "v2_ca": ("v2_ca", "featherface_v2_simple", "FeatherFaceV2Simple", "cfg_v2"),
    "eca_cbam": ("eca_cbam", "featherface_eca_cbam", "FeatherFaceECAcbaM", "cfg_eca_cbam"),
}


def build_upstream(root: Path, name: str) -> nn.Module:
    """The upstream model for zoo ``name``, phase 'train' (raw logits), eval mode, CPU."""
    folder, file, cls, cfg_name = UPSTREAM[name]
    src = root / folder
    saved = {k: sys.modules.get(k) for k in (*SHIM_MODULES, "models")}
    added: list[str] = []
    try:
        sys.modules.update(_shim())
        pkg = types.ModuleType("models")
        pkg.__path__ = [str(src)]
        sys.modules["models"] = pkg
        before = set(sys.modules)
        config = _load_file(f"_upstream_{folder}_config", src / "config.py")
        module = importlib.import_module(f"models.{file}")
        added = [k for k in sys.modules if k not in before]
        cfg = dict(getattr(config, cfg_name))
        cfg["pretrain"] = False  # never read ./weights/ (the ImageNet backbone) from the CWD
        return getattr(module, cls)(cfg, "train").eval()
    finally:
        for k in added:
            sys.modules.pop(k, None)
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


# ---------------------------------------------------------------- bundled weights, no ../shared


@pytest.fixture(scope="module")
def bundled() -> dict[str, nn.Module]:
    return {name: create_model(name, checkpoint=bundled_checkpoint(name)) for name in FAMILY}


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g) * 255.0 - 117.0  # mean-subtracted range


def test_registered_with_v1_conventions() -> None:
    assert set(FAMILY) <= set(list_models())
    for name in FAMILY:
        spec = get_spec(name)
        assert spec == get_spec("v1")
        assert spec.priors.num_priors(640, 640) == 16_800


@pytest.mark.parametrize("name", FAMILY)
def test_bundled_weights_are_the_published_files(name: str) -> None:
    path = bundled_checkpoint(name)
    assert path is not None and path.parent.name == "weights"
    assert file_sha256(path) == PUBLISHED_SHA256[name] == BUNDLED_SHA256[name]


def test_damaged_bundled_file_is_refused(tmp_path, monkeypatch) -> None:
    import ffedge.weights as weights
    from ffedge.errors import CheckpointError

    fake = tmp_path / weights.BUNDLED["v2_ca"]
    fake.write_bytes(b"not the published file")
    monkeypatch.setattr(weights, "_HERE", tmp_path)
    monkeypatch.setattr(weights, "_VERIFIED", set())
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        weights.bundled_checkpoint("v2_ca")


@pytest.mark.parametrize("name", FAMILY)
def test_bundled_weights_load_strictly(bundled, name: str) -> None:
    model = bundled[name]
    assert model.num_parameters() == FAMILY[name]
    assert model.denormals_flushed == DENORMALS[name]
    raw = read_state_dict(bundled_checkpoint(name))
    own = model.state_dict()
    assert set(own) == set(raw)
    tiny = torch.finfo(torch.float32).tiny
    for k, v in raw.items():
        if v.is_floating_point():  # equal except denormals, which are now zero
            kept = v.abs() >= tiny
            assert torch.equal(own[k][kept], v[kept]) and not own[k][~kept].any(), k


@pytest.mark.parametrize("name", FAMILY)
def test_outputs_cover_16800_priors(bundled, name: str) -> None:
    with torch.inference_mode():
        boxes, logits, landmarks = bundled[name](_image(640, 640))
    assert boxes.shape == (1, 16_800, 4)
    assert logits.shape == (1, 16_800, 2)
    assert landmarks.shape == (1, 16_800, 10)
    assert all(torch.isfinite(t).all() for t in (boxes, logits, landmarks))


def test_eca_kernel_sizes_follow_the_checkpoint(bundled) -> None:
    assert [eca_kernel_size(c) for c in (52, 64, 128, 256)] == [3, 3, 5, 5]
    m = bundled["eca_cbam"]
    assert m.backbone_attention_1.eca.conv.weight.shape == (1, 1, 5)
    assert m.bifpn_attention_0.eca.conv.weight.shape == (1, 1, 3)
    assert len(m.bifpn) == 3


def test_flush_denormals_counts_and_zeroes_only_denormals() -> None:
    m = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([1e-39, -3e-40, 2e-38, 0.5, -2.0, 0.0]).view(3, 2, 1, 1))
        m[1].running_mean.copy_(torch.tensor([1e-45, 1.0, 2.0]))
    before = m[0].weight.clone()
    assert flush_denormals(m) == 3  # 1e-39, -3e-40, 1e-45; 2e-38 is normal (tiny 1.18e-38)
    w = m[0].weight.flatten()
    assert w[0] == 0 and w[1] == 0 and torch.equal(w[2:], before.flatten()[2:])
    assert m[1].running_mean[0] == 0 and m[1].num_batches_tracked.dtype == torch.int64
    assert flush_denormals(m) == 0


def test_flushing_changes_no_output(bundled) -> None:
    """ECA-CBAM with its 48,532 denormals as published vs flushed: same outputs (<= 1e-6)."""
    flushed = bundled["eca_cbam"]
    raw = create_model("eca_cbam", pretrained=False)
    raw.load_state_dict(read_state_dict(bundled_checkpoint("eca_cbam")))  # no flush
    tiny = torch.finfo(torch.float32).tiny
    assert sum(int(((p != 0) & (p.abs() < tiny)).sum()) for p in raw.state_dict().values()
               if p.is_floating_point()) == 48_532
    x = _image(320, 320, seed=5)
    with torch.inference_mode():
        for a, b in zip(raw(x), flushed(x), strict=True):
            assert (a - b).abs().max().item() <= 1e-6


def test_new_attention_ops_export_statically(tmp_path) -> None:
    """Coordinate attention and ECA-CBAM lower to plain static ONNX ops, as in torch."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    block = nn.Sequential(CoordinateAttention(56), ECACBAM(56)).eval()
    x = torch.randn(1, 56, 40, 24)
    path = tmp_path / "attention.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(block, (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"])
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= PORTABLE_OPS, sorted(ops - PORTABLE_OPS)
    assert "ReduceMean" in ops and not {"GlobalAveragePool", "AveragePool", "Shape"} & ops
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.numpy()})[0]
    with torch.inference_mode():
        np.testing.assert_allclose(got, block(x).numpy(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- parity with upstream (../shared)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY)
def test_matches_upstream_code_on_real_photos(name: str) -> None:
    root = need_shared("upstream_featherface")
    images = need_shared("images")
    ckpt = need_shared("checkpoints", SHARED_CHECKPOINT[name])
    from ffedge.decoder import preprocess
    from ffedge.imageio import read_image

    upstream = build_upstream(root, name)
    upstream.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True),
                             strict=True)
    ours = create_model(name, checkpoint=ckpt)
    assert sum(p.numel() for p in upstream.parameters()) == ours.num_parameters()
    for photo in PARITY_PHOTOS:
        x, _ = preprocess(read_image(images / photo), ours.spec)  # letterbox 640x640
        x = torch.from_numpy(x)[None]
        with torch.inference_mode():
            want, got = upstream(x), ours(x)
        assert got[0].shape == (1, 16_800, 4) and got[2].shape == (1, 16_800, 10)
        for label, g, w in zip(("boxes", "logits", "landmarks"), got, want, strict=True):
            diff = (g - w).abs().max().item()
            assert diff <= 1e-4, (photo, label, diff)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY)
def test_face_counts_on_shared_photos(name: str) -> None:
    """Original size (padded to /32), score 0.5, NMS 0.4: near the upstream reference count."""
    images = need_shared("images")
    from ffedge.decoder import Decoder, preprocess
    from ffedge.imageio import read_image

    model = create_model(name, checkpoint=bundled_checkpoint(name))
    decoder = Decoder(model.spec, score_threshold=0.5)
    counts = {}
    for path in sorted(images.glob("*.jpg")):
        x, t = preprocess(read_image(path), model.spec, mode="original")
        with torch.inference_mode():
            boxes, logits, landmarks = model(torch.from_numpy(x)[None])
        dets = decoder(boxes.numpy(), torch.softmax(logits, -1).numpy(), landmarks.numpy(),
                       transforms=[t], scores_are="probabilities")[0]
        counts[path.name] = len(dets)
    assert all(counts[k] == 1 for k in counts if k.startswith("portrait"))
    total = sum(counts.values())
    assert abs(total - REFERENCE_COUNTS[name]) <= 0.05 * REFERENCE_COUNTS[name], counts


def test_docs_family_table_matches_the_code() -> None:
    from ffedge.models.report import render_family, render_model

    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    for block in (render_family(), *(render_model(n) for n in FAMILY)):
        assert block in text, (
            "docs/models.md is stale: run `python -m ffedge.models.report --write docs/models.md`"
        )


# ---------------------------------------------------------------- INT8 and OpenVINO on the family


def test_int8_prep_keeps_coordinate_attention_and_eca_exact(tmp_path) -> None:
    """Coordinate attention runs one 1x1 conv on both pooled profiles (two ONNX Convs, one
    weight); cross-layer equalisation must copy that weight before rescaling, or the float
    graph changes (v2_ca INT8 held-out F1 stuck at 0.971 with every node float). ECA's 1-D
    conv reads a rank-3 tensor, which the per-channel statistics must accept."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from ffedge.export import int8_prep

    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(8, 56, 3, padding=1), nn.ReLU(),
                          CoordinateAttention(56), ECACBAM(56)).eval()
    bn = block[2].bn_transform
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    block[2].conv_transform.weight.data[:, ::7] *= 30.0  # uneven channel ranges to equalise
    path = tmp_path / "attention.onnx"
    x = torch.rand(1, 8, 32, 24) * 4
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(block, (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"])
    from ffedge.export.onnx_export import simplify

    proto, _ = simplify(onnx.load(str(path)))  # as the exporter does: one shared CA weight
    onnx.save(proto, str(path))
    feeds = [{"x": (torch.rand(1, 8, 32, 24) * 4).numpy()} for _ in range(3)]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = [sess.run(None, f)[0] for f in feeds]
    assert int8_prep.equalize(proto, feeds) >= 2  # both coordinate-attention profiles
    after = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for f, w in zip(feeds, want):
        np.testing.assert_allclose(after.run(None, f)[0], w, rtol=1e-4, atol=1e-4)
    means = int8_prep.conv_input_means(proto, feeds)
    eca_in = next(n.input[0] for n in proto.graph.node
                  if n.op_type == "Conv" and len(n.input) > 1 and "eca" in n.input[1])
    assert means[eca_in].shape == (1,)
    convs = sum(n.op_type == "Conv" for n in proto.graph.node)
    assert int8_prep.bias_correct(proto, means) == convs


def _ffexport(args: list[str]) -> int:
    from ffedge.cli.ffexport import main

    return main(args)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY)
def test_int8_defaults_pass_the_gate_on_shared_photos(tmp_path, name: str) -> None:
    """`ffexport int8 --model v2_ca|eca_cbam --calib <19 photos>` with defaults (13
    calibrate, 6 held out): F1 >= 0.98 vs torch FP32 (before the shared-weight fix v2_ca
    failed at 0.971 with every node float; eca_cbam crashed on ECA's 1-D conv)."""
    images = need_shared("images")
    from ffedge.runtimes.loader import load_runner

    out = tmp_path / f"{name}_int8.onnx"
    assert _ffexport(["int8", "--model", name, "--calib", str(images), "-o", str(out),
                      "--threads", "2"]) == 0
    meta = load_runner(artifact=out).info.extra["metadata"].extra
    assert meta["fidelity"]["f1"] >= 0.98 and meta["calibration"]["eval_images"] == 6


@pytest.mark.slow
def test_openvino_fp32_v2_ca_verifies_on_a_photo(tmp_path) -> None:
    """Coordinate attention through the OpenVINO converter: FP32 IR at 320x320 matches
    torch on a real photo (raw outputs and every face)."""
    pytest.importorskip("openvino")
    photo = need_shared("images", "selfie_group.jpg")
    out = tmp_path / "v2_ca.xml"
    assert _ffexport(["openvino", "--model", "v2_ca", "--imgsz", "320", "-o", str(out),
                      "--verify-images", str(photo), "--threads", "2"]) == 0
    assert out.exists() and out.with_suffix(".bin").exists()
