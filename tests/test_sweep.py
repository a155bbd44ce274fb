"""``ffbench sweep``: the candidate grid, the Pareto front and recommendation, and a real
tiny sweep that writes JSON/Markdown/CSV/PNG and resumes instead of redoing work."""

from __future__ import annotations

import json

import pytest

from ffedge.benchmarks.sweep import candidates, pareto, recommend, render

from .conftest import synthetic_images


def test_candidate_grid_respects_targets():
    grid = candidates(["onnx", "openvino"], ["fp32", "fp16", "int8"], [(320, 320)], has_dcn=True)
    keys = {c.key for c in grid}
    assert keys == {"onnx-fp32-native-320x320", "onnx-fp32-gridsample-320x320",
                    "onnx-int8-native-320x320", "openvino-fp32-gridsample-320x320",
                    "openvino-fp16-gridsample-320x320", "openvino-int8-gridsample-320x320"}
    plain = candidates(["onnx"], ["fp32"], [(160, 160), (320, 320)], has_dcn=False)
    assert [c.key for c in plain] == ["onnx-fp32-160x160", "onnx-fp32-320x320"]


def _row(target, prec, p50, f1):
    return {"target": target, "precision": prec, "dcn": "-", "size": [640, 640], "p50_ms": p50,
            "p90_ms": p50 * 1.1, "rss_mb": 100, "size_bytes": 2048, "f1": f1, "faces": "9/9"}


def test_pareto_and_recommendation():
    rows = {"a": _row("openvino", "fp32", 16.0, 1.0), "b": _row("openvino", "int8", 9.0, 0.97),
            "c": _row("onnx", "fp32", 20.0, 1.0), "d": _row("onnx", "int8", 12.0, 0.96)}
    assert pareto(rows) == {"a", "b"}  # c is slower at equal F1, d slower and worse than b
    assert recommend(rows, 0.98) == "on this machine: OpenVINO FP32, 640x640, 16.0 ms, F1 1.000"
    assert "no candidate" in recommend(rows, 1.01)
    text = render({"results": {**rows, "e": {"error": "gate failed"}}})
    assert text.index("| b") < text.index("| a") and "failed: gate failed" in text


@pytest.mark.slow
def test_tiny_sweep_writes_reports_and_resumes(tmp_path, capsys):
    from ffedge.cli.ffbench import main

    images = synthetic_images(tmp_path / "img", 6)
    out = tmp_path / "sweep.json"
    argv = ["sweep", "--model", "nano_b", "--random-init", "--images", str(images), "--sizes", "160",
            "--runtimes", "onnx", "openvino", "--precisions", "fp32", "--iterations", "3",
            "--warmup", "1", "--json", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert set(doc["results"]) == {"onnx-fp32-160x160", "openvino-fp32-160x160"}
    for r in doc["results"].values():
        assert r["p50_ms"] > 0 and r["size_bytes"] > 0 and "error" not in r
    for suffix in (".md", ".csv"):
        assert "onnx-fp32-160x160" in out.with_suffix(suffix).read_text()
    assert (tmp_path / "sweep_pareto.png").stat().st_size > 1000
    stdout = capsys.readouterr().out
    assert "on this machine:" in stdout
    before = out.read_text()
    assert main(argv) == 0  # resumed: nothing re-measured
    assert "resuming: 2 candidates" in capsys.readouterr().err
    assert json.loads(out.read_text())["results"] == json.loads(before)["results"]
