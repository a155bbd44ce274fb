"""The v2_ultra and nano_b families next to v1: sizes, shapes, loading, static export, docs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ffedge.errors import CheckpointError
from ffedge.models import create_model, get_spec, list_models
from ffedge.models.nano_b import NANO_B_WIDTHS, pruned_widths
from ffedge.models.pretrained import load_backbone
from ffedge.models.report import REPORTED_MODELS, render_model
from ffedge.models.v2_ultra import V2_ULTRA_CARD_TOTAL

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IMAGENET_BACKBONE = SHARED / "checkpoints" / "mobilenetv1_x0.25_imagenet.tar"
ZOO = ("v1", "v2_ultra", "nano_b")
NEW = ("v2_ultra", "nano_b")
SIZES = ((640, 640), (320, 320), (480, 640))
# Ops a TFLite/OpenVINO/TensorRT converter takes without special handling.
PORTABLE_OPS = {
    "Add", "AveragePool", "Concat", "Constant", "Conv", "Div", "Exp", "Gather", "Identity",
    "LeakyRelu", "Max", "MaxPool", "Mul", "ReduceMax", "ReduceMean", "ReduceSum", "Relu",
    "Reshape", "Resize", "Sigmoid", "Sqrt", "Sub", "Transpose",
}


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {name: create_model(name) for name in ZOO}


def _image(h: int, w: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, h, w, generator=g) * 255.0 - 117.0  # mean-subtracted range


def test_registry_lists_new_families() -> None:
    assert {"v1", "v2_ultra", "nano_b"} <= set(list_models())
    assert get_spec("v2_ultra").priors == get_spec("v1").priors
    nano = get_spec("nano_b").priors
    assert nano.anchors_per_level == (3, 3, 3)
    assert nano.num_priors(640, 640) == 80 * 80 * 3 + 40 * 40 * 3 + 20 * 20 * 3 == 25_200
    assert get_spec("v2_ultra").num_priors == 16_800


def test_parameter_totals(models) -> None:
    assert models["v1"].num_parameters() == 489_015
    v2 = models["v2_ultra"].num_parameters()
    assert abs(v2 - V2_ULTRA_CARD_TOTAL) <= 0.05 * V2_ULTRA_CARD_TOTAL, v2
    assert 120_000 <= models["nano_b"].num_parameters() <= 180_000


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", ZOO)
def test_output_shapes_and_finite(models, name: str, size: tuple[int, int]) -> None:
    model = models[name]
    h, w = size
    with torch.inference_mode():
        boxes, logits, landmarks = model(_image(h, w))
    p = model.spec.priors.num_priors(h, w)
    assert boxes.shape == (1, p, 4)
    assert logits.shape == (1, p, 2)
    assert landmarks.shape == (1, p, 10)
    for t in (boxes, logits, landmarks):
        assert torch.isfinite(t).all()


@pytest.mark.parametrize("name", NEW)
def test_eval_mode_is_deterministic_and_batch_independent(models, name: str) -> None:
    model = models[name]
    x = _image(64, 96, seed=1, batch=2)
    with torch.inference_mode():
        a = model(x)
        b = model(x)
        single = model(x[1:])
    for ta, tb, ts in zip(a, b, single, strict=True):
        assert torch.equal(ta, tb)
        torch.testing.assert_close(ta[1:], ts, rtol=1e-4, atol=1e-5)


def test_nano_b_default_pruning_distribution() -> None:
    assert NANO_B_WIDTHS == (8, 16, 27, 27, 54, 27, 100, 100, 100, 100, 100, 50, 174, 87)
    model = create_model("nano_b")
    assert model.body.out_channels == (27, 50, 87)
    assert pruned_widths((64, 128, 256))[-1] == 256  # unpruned stage ends keep every filter


def test_nano_b_widths_follow_the_checkpoint(tmp_path: Path) -> None:
    other = pruned_widths((20, 40, 64))
    source = create_model("nano_b", backbone_widths=other)
    assert source.body.widths == other
    path = tmp_path / "nano_b_pruned.pth"
    torch.save({"state_dict": source.state_dict()}, path)

    loaded = create_model("nano_b", checkpoint=path)
    assert loaded.body.widths == other
    assert loaded.scale_decoupling.enhancer.in_channels == 20
    assert loaded.bifpn.proj[2][0].in_channels == 64
    x = _image(64, 64, seed=2)
    with torch.inference_mode():
        for got, want in zip(loaded(x), source(x), strict=True):
            torch.testing.assert_close(got, want)

    with pytest.raises(CheckpointError):
        create_model("nano_b", checkpoint=path, backbone_widths=NANO_B_WIDTHS)


def test_v2_ultra_loads_imagenet_backbone() -> None:
    if not IMAGENET_BACKBONE.exists():
        pytest.skip(f"needs {IMAGENET_BACKBONE} (../shared absent on this machine)")
    model = create_model("v2_ultra")
    assert load_backbone(model, IMAGENET_BACKBONE) == len(model.body.state_dict())
    raw = torch.load(IMAGENET_BACKBONE, map_location="cpu", weights_only=True)["state_dict"]
    torch.testing.assert_close(
        model.body.stage3[1][3].weight, raw["module.stage3.1.3.weight"], rtol=0, atol=0
    )
    model.eval()
    with torch.inference_mode():
        assert all(torch.isfinite(t).all() for t in model(_image(64, 64)))
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_backbone(create_model("nano_b"), IMAGENET_BACKBONE)


@pytest.mark.parametrize("name", NEW)
def test_onnx_export_is_static_and_portable(models, name: str, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = models[name]
    x = _image(64, 64, seed=3)
    path = tmp_path / f"{name}.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=17,
            input_names=["images"], output_names=["boxes", "logits", "landmarks"],
        )
    model.eval()  # the exporter restores the module's mode; keep the shared fixture in eval
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= PORTABLE_OPS, sorted(ops - PORTABLE_OPS)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})
    with torch.inference_mode():
        want = model(x)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-5)


def test_dynamic_sharing_gate_is_soft_and_trainable() -> None:
    model = create_model("v2_ultra").train()
    dyn = model.innovations.dynamic_sharing
    boxes, logits, landmarks = model(_image(64, 64, seed=4, batch=2))
    (boxes.square().mean() + logits.square().mean() + landmarks.square().mean()).backward()
    assert dyn.temperature.grad is not None and dyn.threshold.grad is not None
    assert torch.count_nonzero(dyn.threshold.grad) > 0


def test_docs_tables_match_the_code() -> None:
    text = (ROOT / "docs" / "models.md").read_text()
    for name in REPORTED_MODELS:
        block = render_model(name)
        assert block in text, (
            f"docs/models.md is stale for {name}: run "
            "`python -m ffedge.models.report --write docs/models.md`"
        )
