"""ffexport onnx: the artifact, its metadata, parity with torch, reproducibility, errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from ffedge.cli.ffexport import main as ffexport
from ffedge.errors import FFEdgeError
from ffedge.export.onnx_export import OnnxOptions
from ffedge.export.onnx_target import export_onnx
from ffedge.models import get_spec
from ffedge.runtimes import load_runner


@pytest.fixture(scope="module")
def nano_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("nano") / "nano_b.onnx"
    report = export_onnx("nano_b", output=out)
    return out, report


def test_graph_io_and_metadata_round_trip(nano_onnx):
    path, report = nano_onnx
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["boxes", "scores", "landmarks"]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 640, 640]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    out_dims = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == [1, 25200, 4]
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["ffedge.model"] == "nano_b"
    assert props["ffedge.scores"] == "probabilities"
    assert "probabilities" in json.loads(props["ffedge.outputs"])["scores"]
    assert props["ffedge.tool"].startswith("featherface-edge ")
    runner = load_runner(artifact=path)
    assert runner.spec == get_spec("nano_b")
    assert runner.info.model == "nano_b"
    assert report.parity is not None and report.parity.detections.f1 > 0.95
    assert report.parity.outputs["scores"].max_abs <= 1e-5


def test_parity_with_torch_on_random_input(nano_onnx):
    path, _ = nano_onnx
    ort = load_runner(artifact=path, threads=1)
    ref = load_runner("torch", model="nano_b")
    x = np.random.default_rng(3).normal(0, 60, size=(1, 3, 640, 640)).astype(np.float32)
    for a, b in zip(ort.infer(x), ref.infer(x)):
        assert a.shape == b.shape
        assert np.abs(a - b).max() < 1e-4
    np.testing.assert_allclose(ort.infer(x)[1].sum(-1), 1.0, atol=1e-5)


def test_reexport_is_byte_identical(nano_onnx, tmp_path):
    path, _ = nano_onnx
    again = tmp_path / "again.onnx"
    export_onnx("nano_b", output=again, verify=False)
    assert again.read_bytes() == path.read_bytes()


def test_dynamic_size_and_batch(tmp_path):
    out = tmp_path / "dyn.onnx"
    export_onnx("v2_ultra", output=out,
                options=OnnxOptions(dynamic_batch=True, dynamic_size=True))
    ort = load_runner(artifact=out)
    assert ort.info.fixed_size is None
    ref = load_runner("torch", model="v2_ultra")
    x = np.random.default_rng(0).normal(0, 50, size=(2, 3, 320, 480)).astype(np.float32)
    got, want = ort.infer(x), ref.infer(x)
    assert got[0].shape == (2, get_spec("v2_ultra").priors.num_priors(320, 480), 4)
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, want)) < 1e-4


@pytest.mark.parametrize("dcn,op", [("native", "DeformConv"), ("gridsample", "GridSample")])
def test_v1_real_checkpoint_both_dcn_lowerings(tmp_path, v1_checkpoint, shared_images, dcn, op):
    out = tmp_path / f"v1_{dcn}.onnx"
    photos = [shared_images / "crowd_a.jpg", shared_images / "portrait_a.jpg"]
    report = export_onnx("v1", v1_checkpoint, out, options=OnnxOptions(dcn=dcn),
                         verify_images=photos)
    assert report.node_histogram.get(op, 0) == 15
    assert report.opset == (19 if dcn == "native" else 17)
    par = report.parity
    assert par.images == 2 and par.detections.reference > 20  # the given photos only
    assert par.detections.f1 == 1.0
    meta = load_runner(artifact=out).info.extra["metadata"]
    assert meta.checkpoint_sha256.startswith("3271e307")
    assert meta.extra["dcn"] == dcn


def test_opset_too_low_for_native_dcn(tmp_path):
    with pytest.raises(FFEdgeError, match="opset >= 19"):
        export_onnx("v1", output=tmp_path / "x.onnx", options=OnnxOptions(opset=17, dcn="native"))
    assert not (tmp_path / "x.onnx").exists()


def test_failed_verification_leaves_nothing(tmp_path, monkeypatch):
    from ffedge.export import tolerances

    monkeypatch.setitem(tolerances.TOLERANCES, "fp32", tolerances.Tolerance(0.0, 1.0))
    out = tmp_path / "strict.onnx"
    with pytest.raises(FFEdgeError, match="verification failed"):
        export_onnx("v2_ultra", output=out)
    assert list(tmp_path.iterdir()) == []


def test_artifact_without_metadata_needs_model(tmp_path, nano_onnx):
    path, _ = nano_onnx
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(FFEdgeError, match="pass --model NAME"):
        load_runner(artifact=bare)
    r = load_runner(artifact=bare, model="nano_b")
    assert r.spec.num_priors == 25200
    assert r.infer(np.zeros((1, 3, 640, 640), np.float32))[1].shape == (1, 25200, 2)


def test_cli_summary_and_errors(tmp_path, capsys):
    out = tmp_path / "v2.onnx"
    assert ffexport(["onnx", "--model", "v2_ultra", "-o", str(out), "--dcn", "gridsample"]) == 0
    text = capsys.readouterr().out
    assert "parameters" in text and "opset 17" in text and "verified vs torch" in text
    assert "--dcn ignored" in text
    assert out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert ffexport(["onnx", "--model", "nano_b", "-o", str(blocker / "sub" / "m.onnx")]) != 0
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        ln for ln in err.splitlines() if "error" in ln.lower()] and "error: cannot create" in err
    assert ffexport(["onnx", "--model", "nope"]) != 0
    assert "unknown model" in capsys.readouterr().err


def test_bundled_default_exports_real_v1(tmp_path, capsys):
    out = tmp_path / "v1.onnx"
    assert ffexport(["onnx", "--model", "v1", "-o", str(out), "--no-verify"]) == 0
    assert "bundled" in capsys.readouterr().err
    meta = load_runner(artifact=out).info.extra["metadata"]
    assert meta.checkpoint_sha256.startswith("3271e307")


def test_artifact_has_normal_file_permissions(nano_onnx):
    import os
    import stat

    path, _ = nano_onnx
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
