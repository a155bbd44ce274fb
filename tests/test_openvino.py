"""ffexport openvino and the OpenVINO runner: IR parity, metadata, INT8 gate, CLIs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from .conftest import synthetic_images

pytest.importorskip("openvino")
pytestmark = pytest.mark.slow  # conversions: minutes on 2 cores

from ffedge.artifact.metadata import sidecar_path  # noqa: E402
from ffedge.cli.ffbench import main as ffbench  # noqa: E402
from ffedge.cli.ffdetect import main as ffdetect  # noqa: E402
from ffedge.cli.ffexport import main as ffexport  # noqa: E402
from ffedge.errors import FFEdgeError  # noqa: E402
from ffedge.export.openvino_target import Int8Options, export_openvino  # noqa: E402
from ffedge.runtimes import load_runner  # noqa: E402
from ffedge.runtimes.openvino_runner import FLAKY_COMPILE_MARK, compile_model  # noqa: E402

SIZE = (320, 320)


def ir_files(xml):
    return [xml, xml.with_suffix(".bin"), sidecar_path(xml)]


@pytest.fixture(scope="module")
def nano_ir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ov") / "nano_b.xml"
    report = export_openvino("nano_b", output=out, input_size=SIZE)
    return out, report


def test_fp32_ir_parity_and_metadata(nano_ir):
    out, report = nano_ir
    assert report.precision == "fp32" and all(p.is_file() for p in ir_files(out))
    o = report.parity.outputs
    assert o["boxes"].max_abs < 2e-4 and o["scores"].max_abs < 2e-5
    r = load_runner(artifact=out, threads=1)
    assert r.runtime == "openvino" and r.info.extra["metadata_source"] == "rt_info"
    assert r.info.model == "nano_b" and r.info.precision == "fp32"
    assert r.spec.input_size == SIZE and r.info.fixed_size == SIZE
    assert r.info.extra["metadata"].extra["format"] == "openvino-ir"
    side = json.loads(sidecar_path(out).read_text())
    assert side["model"] == "nano_b" and side["spec"]["input_size"] == list(SIZE)
    x = np.random.default_rng(0).random((1, 3, *SIZE), dtype=np.float32)
    boxes, scores, landmarks = r.infer(x)
    assert boxes.shape[-1] == 4 and scores.shape[-1] == 2 and landmarks.shape[-1] == 10
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)


def test_runner_falls_back_to_sidecar_then_model(nano_ir, tmp_path):
    src = nano_ir[0]
    xml = tmp_path / "stripped.xml"
    text = re.sub(r"<ffedge>.*?</ffedge>", "", src.read_text(), flags=re.S)
    assert text != src.read_text()
    xml.write_text(text)
    xml.with_suffix(".bin").write_bytes(src.with_suffix(".bin").read_bytes())
    sidecar_path(xml).write_text(sidecar_path(src).read_text())
    r = load_runner(artifact=xml)
    assert r.info.extra["metadata_source"] == "sidecar" and r.info.model == "nano_b"
    sidecar_path(xml).unlink()
    with pytest.raises(FFEdgeError, match="--model NAME"):
        load_runner(artifact=xml)
    r = load_runner(artifact=xml, model="nano_b")
    assert r.info.extra["metadata_source"] == "--model" and r.spec.input_size == SIZE


def test_v1_fp32_ir_uses_gridsample(v1_checkpoint, shared_images):
    photos = sorted(shared_images.glob("portrait_*.jpg"))[:2]
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "v1.xml"
        report = export_openvino("v1", v1_checkpoint, out, SIZE, verify_images=photos)
        assert report.node_histogram.get("GridSample", 0) > 0
        assert report.parity.detections.f1 == 1.0
        r = load_runner(artifact=out)
        assert r.info.extra["metadata"].extra["dcn"] == "gridsample"
        assert r.info.extra["metadata"].checkpoint_sha256


def test_int8_nncf_on_synthetic_images(tmp_path):
    calib = synthetic_images(tmp_path / "calib", 5)
    out = tmp_path / "nano_int8.xml"
    report = export_openvino("nano_b", output=out, input_size=SIZE, precision="int8",
                                  calib=calib, int8=Int8Options(via="nncf"), num_images=3,
                                  num_eval=2, min_f1=0.0, cache_dir=tmp_path / "cache")
    assert all(p.is_file() for p in ir_files(out)) and report.parity.images == 2
    assert report.node_histogram.get("FakeQuantize", 0) > 0
    r = load_runner(artifact=out)
    meta = r.info.extra["metadata"].extra
    assert r.info.precision == "int8" and meta["quantization"]["backend"] == "nncf"
    assert meta["calibration"]["images"] == 3
    assert meta["int8_convs"]["total"] > 50  # counted from the IR: FakeQuantize-fed convs
    assert meta["int8_convs"]["int8"] > meta["int8_convs"]["total"] / 2
    assert r.infer(np.zeros((1, 3, *SIZE), np.float32))[1].shape[-1] == 2


def test_every_fallback_candidate_kept_float_leaves_no_fakequantize(nano_ir, tmp_path):
    """The fallback search can reach an all-float graph: ignoring every candidate name
    (convs + the elementwise sites NNCF also quantises) leaves no FakeQuantize. Before,
    eca_cbam kept 117 FakeQuantize with every conv float and could not pass the gate."""
    from ffedge.calibration import CalibrationDataset
    from ffedge.export.openvino_target import (
        ELEMENTWISE_TYPES,
        nncf_quantize,
        quantizable_names,
    )
    from ffedge.runtimes.openvino_runner import openvino
    from ffedge.specs import spec_for

    pytest.importorskip("nncf")
    ir = openvino().Core().read_model(str(nano_ir[0]))
    files = sorted(synthetic_images(tmp_path / "c", 2).iterdir())
    ds = CalibrationDataset(files, spec_for("nano_b"), SIZE, cache=False, progress=False)
    convs = quantizable_names(ir)
    names = convs + quantizable_names(ir, ELEMENTWISE_TYPES)

    def fq(model):
        return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())

    assert fq(nncf_quantize(ir, ds, "mixed", convs)) > 0  # convs alone do not reach it
    assert fq(nncf_quantize(ir, ds, "mixed", names)) == 0


@pytest.mark.slow
def test_int8_keeps_the_dcn_sampling_path_float(tmp_path):
    """NNCF never quantises GridSample or the level-2 tap sums (ReduceSum): quantising the
    sums alone cost v2_ca every int8 conv (0 of 78 -> 48 of 78 with them float)."""
    import openvino as ov

    calib = synthetic_images(tmp_path / "calib", 5)
    out = tmp_path / "v1_int8.xml"
    export_openvino("v1", output=out, input_size=(96, 96), precision="int8", calib=calib,
                    num_images=3, num_eval=2, min_f1=0.0, cache_dir=tmp_path / "cache")
    ops = ov.Core().read_model(str(out)).get_ops()
    sampling = [op for op in ops if op.get_type_name() in ("GridSample", "ReduceSum")]
    assert len(sampling) == 30  # 15 DCN: one GridSample + one tap sum each (level 2)
    for op in sampling:
        assert all(op.input_value(i).get_node().get_type_name() != "FakeQuantize"
                   for i in range(op.get_input_size()))
    assert any(op.get_type_name() == "FakeQuantize" for op in ops)


def test_eca_cbam_openvino_int8_defaults_pass_the_gate(tmp_path):
    """Issue 12: `ffexport openvino --model eca_cbam --precision int8 --calib <photos>`
    passes F1 >= 0.98 on the held-out photos (plain NNCF: 0.92)."""
    from .conftest import need_shared

    pytest.importorskip("nncf")
    images = need_shared("images")
    out = tmp_path / "eca_int8.xml"
    assert ffexport(["openvino", "--model", "eca_cbam", "--precision", "int8", "--calib",
                     str(images), "-o", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    meta = load_runner(artifact=out).info.extra["metadata"].extra
    assert meta["fidelity"]["f1"] >= 0.98
    assert meta["quantization"]["fallback_nodes"] > 0


def test_gate_failure_leaves_nothing(tmp_path):
    calib = synthetic_images(tmp_path / "calib", 3)
    out = tmp_path / "never.xml"
    with pytest.raises(FFEdgeError, match="fidelity gate failed"):
        export_openvino("nano_b", output=out, input_size=SIZE, precision="int8", calib=calib,
                        num_images=2, num_eval=1, min_f1=1.01, cache_dir=tmp_path / "cache")
    assert not any(p.exists() for p in ir_files(out))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_flaky_compile_is_retried_once_then_reported():
    class Core:
        def __init__(self, fails):
            self.fails, self.calls = fails, 0

        def compile_model(self, model, device, config):
            self.calls += 1
            if self.calls <= self.fails:
                raise RuntimeError(f"Exception from src/x.cpp:\nCheck '{FLAKY_COMPILE_MARK}' failed")
            return "compiled"

    core = Core(1)
    assert compile_model(core, None, {}) == "compiled" and core.calls == 2
    with pytest.raises(FFEdgeError, match="retried once"):
        compile_model(Core(2), None, {}, "m.xml")


def test_ffbench_and_ffdetect_run_openvino(nano_ir, tmp_path, capsys):
    js = tmp_path / "b.json"
    assert ffbench(["--runtime", "openvino", "--model", "nano_b", "--random-init", "--imgsz", "320",
                    "--iterations", "2", "--warmup", "1", "--threads", "1", "--json", str(js)]) == 0
    res = json.loads(js.read_text())["results"][0]
    assert res["runtime"] == "openvino" and res["input_size"] == list(SIZE)
    assert res["parity"] is not None
    img = synthetic_images(tmp_path / "img", 1)
    assert ffdetect([str(img / "img_00.png"), "--artifact", str(nano_ir[0]),
                     "--model", "nano_b"]) == 0


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert ffexport(["openvino", "--model", "nano_b", "--precision", "int8",
                     "-o", str(tmp_path / "a.xml")]) != 0
    assert ffexport(["openvino", "--model", "nano_b", "-o", str(tmp_path / "a.onnx")]) != 0
    assert ffdetect([str(tmp_path / "x.png"), "--artifact", str(tmp_path / "missing.xml")]) != 0
    (tmp_path / "lonely.xml").write_text("<net/>")
    assert ffbench(["--artifact", str(tmp_path / "lonely.xml"), "--iterations", "1"]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 4, err
    assert "--calib" in lines[0] and ".xml" in lines[1] and "lonely.bin" in lines[3]
    assert not list(tmp_path.glob("*.bin"))
