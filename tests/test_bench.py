"""ffbench on both runtimes, briefly, with the JSON fields users script against."""

from __future__ import annotations

import json

import pytest

from ffedge.cli.ffbench import main as ffbench

LATENCY_FIELDS = {"iterations", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "fps"}


def check_result(r: dict, runtime: str) -> None:
    assert r["runtime"] == runtime
    assert set(r["latency_ms"]) == LATENCY_FIELDS
    assert set(r["end_to_end_ms"]) == LATENCY_FIELDS
    assert r["latency_ms"]["iterations"] == 3
    assert 0 < r["latency_ms"]["p50_ms"] <= r["latency_ms"]["p99_ms"]
    assert r["peak_rss_mb"] > 50
    assert r["input_size"] == [320, 320]


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_run_json(tmp_path, runtime, capsys):
    out = tmp_path / "r.json"
    rc = ffbench(["--runtime", runtime, "--model", "nano_b", "--imgsz", "320", "--warmup", "1",
                  "--iterations", "3", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    (r,) = doc["results"]
    check_result(r, runtime)
    table = capsys.readouterr().out
    assert runtime in table and "p50 ms" in table
    if runtime == "onnxruntime":
        assert r["size_bytes"] > 100_000
        assert r["parity"]["detections"]["f1"] > 0.95
        assert r["parity"]["outputs"]["scores"]["max_abs"] < 1e-5
    else:
        assert r["parity"] is None


@pytest.mark.slow
def test_compare_one_table(tmp_path, capsys):
    out = tmp_path / "c.json"
    rc = ffbench(["compare", "--model", "v2_ultra", "--imgsz", "320", "--warmup", "1",
                  "--iterations", "3", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert [r["runtime"] for r in doc["results"]] == ["torch", "onnxruntime"]
    assert doc["results"][1]["parity"]["detections"]["f1"] > 0.95
    table = capsys.readouterr().out
    assert table.count("| torch") == 1 and table.count("| onnxruntime") == 1


@pytest.mark.slow
def test_artifact_with_images(tmp_path, v1_checkpoint, shared_images, capsys):
    from ffedge.export.onnx_target import export_onnx

    onnx_path = export_onnx("v1", v1_checkpoint, tmp_path / "v1.onnx", (320, 320), verify=False).path
    out = tmp_path / "a.json"
    assert ffbench(["--artifact", str(onnx_path), "--images", str(shared_images), "--warmup", "1",
                    "--iterations", "3", "--json", str(out)]) == 0
    r = json.loads(out.read_text())["results"][0]
    assert r["model"] == "v1" and r["runtime"] == "onnxruntime"
    assert sum(r["faces_per_image"]) > 19  # real photos, real weights: faces are found
    assert r["parity"]["detections"]["f1"] == 1.0  # bundled weights matched by sha


def test_errors_are_one_line(tmp_path, capsys):
    assert ffbench(["--runtime", "onnxruntime"]) != 0
    assert ffbench(["--artifact", str(tmp_path / "missing.onnx")]) != 0
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    assert ffbench(["--artifact", str(bad)]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert all(line.startswith("error: ") for line in err.strip().splitlines())
