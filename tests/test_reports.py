"""Reports next to the JSON: Markdown, CSV and PNG plots carry the measured numbers.

Results are built by hand (no model run), so every number the files must show is known.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pytest

from ffedge.benchmarks import reports
from ffedge.benchmarks.bench import BenchResult
from ffedge.benchmarks.latency import LatencyStats
from ffedge.benchmarks.widerface import GroundTruth, evaluate
from ffedge.runtimes.compare import DetectionAgreement, OutputDiff, ParityReport

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def bench_result(runtime: str, precision: str, p50: float, parity: bool) -> BenchResult:
    lat = LatencyStats(iterations=5, mean_ms=p50 + 1.0, p50_ms=p50, p90_ms=p50 + 2.5,
                       p99_ms=p50 + 3.0, min_ms=p50 - 1.0)
    par = None
    if parity:
        par = ParityReport("torch", runtime)
        par.outputs["scores"] = OutputDiff(max_abs=3.5e-6)
        par.detections = DetectionAgreement(reference=10, candidate=10, matched=9)
    return BenchResult(runtime=runtime, artifact=f"v1_{precision}.onnx", model="v1",
                       precision=precision, size_bytes=1024, input_size=(320, 320), threads=2,
                       load_s=0.1, model_latency=lat, e2e_latency=lat, rss_mb=100.0,
                       peak_rss_mb=120.0, parity=par)


def small_result():
    """A 2-image ground truth and predictions with one false positive: AP < 1, curves."""
    boxes = (np.array([[10.0, 10, 50, 50], [100, 100, 40, 40]]), np.array([[0.0, 0, 30, 30]]))
    keep = {s: tuple(np.ones(len(b), bool) for b in boxes) for s in ("easy", "medium", "hard")}
    gt = GroundTruth(("0--A",), (("0--A", "a"), ("0--A", "b")), boxes, keep)
    preds = {"0--A": {"a": np.array([[10.0, 10, 50, 50, 0.9], [300, 300, 20, 20, 0.8]]),
                      "b": np.array([[0.0, 0, 30, 30, 0.5]])}}
    return evaluate(preds, gt)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_emit_writes_markdown_csv_and_latency_plot(tmp_path, capsys):
    from ffedge.cli.bench_run import emit

    results = [bench_result("torch", "fp32", 12.5, parity=False),
               bench_result("onnxruntime", "fp32", 8.25, parity=True),
               bench_result("onnxruntime", "int8", 4.75, parity=True)]
    out = tmp_path / "bench" / "cmp.json"
    emit(results, argparse.Namespace(json=out))
    paths = reports.report_paths(out)
    assert out.is_file()
    rows = read_csv(paths["csv"])
    assert list(rows[0]) == list(reports.COLUMNS)
    assert [r["runtime"] for r in rows] == ["torch", "onnxruntime", "onnxruntime"]
    assert [float(r["latency_p50_ms"]) for r in rows] == [12.5, 8.25, 4.75]
    assert [float(r["latency_p90_ms"]) for r in rows] == [15.0, 10.75, 7.25]
    assert float(rows[1]["fps"]) == pytest.approx(1000 / 9.25)
    assert rows[0]["f1_vs_torch"] == "" and rows[0]["ap_easy"] == ""
    assert float(rows[1]["f1_vs_torch"]) == pytest.approx(0.9)
    assert float(rows[2]["parity_max_abs_score"]) == pytest.approx(3.5e-6)
    assert rows[2]["precision"] == "int8" and rows[2]["size"] == "320x320"
    md = paths["markdown"].read_text()
    assert "| onnxruntime | int8 |" in md.replace("v1_int8.onnx | ", "")
    assert "4.75" in md and "0.9000" in md and "AP easy" not in md  # no AP measured here
    header = md.splitlines()[2]
    assert header.count("|") == len(reports.COLUMNS) - 3 + 1  # no stray pipe in a header
    assert is_png(paths["latency"])
    assert not paths["pr"].exists()  # no accuracy, no PR plot
    printed = capsys.readouterr().out
    assert f"wrote {paths['markdown']}" in printed and f"wrote {paths['latency']}" in printed


def test_widerface_row_and_pr_plot(tmp_path):
    result = small_result()
    assert 0.0 < result.ap["easy"] < 1.0
    row = reports.ReportRow("v1.onnx", "onnxruntime", "fp32", "letterbox 320x320",
                            latency_p50_ms=7.0, latency_p90_ms=9.0, fps=140.0,
                            **reports.ap_columns(result.ap))
    files = reports.write_reports(tmp_path / "wf.json", [row], curves={row.label: result.curves},
                                  ap={row.label: result.ap}, title="WIDER FACE val")
    paths = reports.report_paths(tmp_path / "wf.json")
    assert files.note is None
    assert set(files.written) == {paths["markdown"], paths["csv"], paths["latency"], paths["pr"]}
    (got,) = read_csv(paths["csv"])
    for setting in ("easy", "medium", "hard"):
        assert float(got[f"ap_{setting}"]) == result.ap[setting]
    md = paths["markdown"].read_text()
    assert md.startswith("## WIDER FACE val") and "AP hard" in md
    assert f"{result.ap['hard']:.4f}" in md
    assert is_png(paths["pr"]) and is_png(paths["latency"])


def test_without_matplotlib_tables_still_written(tmp_path, monkeypatch):
    monkeypatch.setattr(reports, "_matplotlib", lambda: None)
    row = reports.ReportRow("m", "torch", "fp32", "320x320", latency_p50_ms=1.0)
    files = reports.write_reports(tmp_path / "x.json", [row], curves={"m": small_result().curves})
    paths = reports.report_paths(tmp_path / "x.json")
    assert files.note == reports.NO_MATPLOTLIB and "\n" not in files.note
    assert files.written == [paths["markdown"], paths["csv"]]
    assert not paths["latency"].exists() and not paths["pr"].exists()


def test_latency_plot_names_duplicates_and_skips_untimed(tmp_path):
    rows = [reports.ReportRow("a.onnx", "onnxruntime", "fp32", "320x320", latency_p50_ms=2.0),
            reports.ReportRow("b.onnx", "onnxruntime", "fp32", "320x320", latency_p50_ms=3.0)]
    assert is_png(reports.plot_latency(rows, tmp_path / "l.png"))
    untimed = [reports.ReportRow("a", "torch", "fp32", "original")]
    assert reports.plot_latency(untimed, tmp_path / "none.png") is None


def test_report_paths():
    p = reports.report_paths("out/run.json")
    assert p["markdown"] == Path("out/run.md") and p["csv"] == Path("out/run.csv")
    assert p["latency"] == Path("out/run-latency.png") and p["pr"] == Path("out/run-pr.png")
    assert reports.report_paths("out/run.v2")["csv"] == Path("out/run.v2.csv")
