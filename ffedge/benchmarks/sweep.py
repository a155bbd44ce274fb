"""``ffbench sweep``: export the candidate artifacts of one model, measure each on this
machine, and say which one to ship.

A candidate is runtime × precision × DCN lowering × input size. Each is exported through
the pipeline (``ffedge.export.pipeline.export``) with the same calibration plan, then
measured with :func:`ffedge.benchmarks.bench.benchmark`: model latency p50/p90, resident
memory, file size, and detection F1 against torch FP32 on held-out photos (never used to
calibrate). Results go to a JSON file keyed by candidate, so an interrupted sweep resumes
where it stopped; the Pareto front (latency vs F1) is marked and a recommendation line
picks the fastest candidate whose F1 clears the bar.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffedge.artifact.atomic import write_bytes_atomic
from ffedge.errors import FFEdgeError
from ffedge.progress import Progress

DEFAULT_RUNTIMES = ("onnx", "openvino")
DEFAULT_PRECISIONS = ("fp32", "int8")
RECOMMEND_MIN_F1 = 0.98
VALID_PRECISIONS = {"onnx": ("fp32", "int8"), "openvino": ("fp32", "fp16", "int8"),
                    "tflite": ("fp32", "fp16", "int8")}


@dataclass(frozen=True)
class Candidate:
    target: str  # pipeline target name: onnx, openvino, tflite
    precision: str
    dcn: str  # native, gridsample, or "-" for models without deformable convs
    size: tuple[int, int]

    @property
    def key(self) -> str:
        dcn = "" if self.dcn == "-" else f"-{self.dcn}"
        return f"{self.target}-{self.precision}{dcn}-{self.size[0]}x{self.size[1]}"

    @property
    def suffix(self) -> str:
        return {"onnx": ".onnx", "openvino": ".xml", "tflite": ".tflite"}[self.target]


def candidates(runtimes: Sequence[str], precisions: Sequence[str], sizes: Sequence[tuple[int, int]],
               has_dcn: bool, dcn: Sequence[str] | None = None) -> list[Candidate]:
    """The grid, without combinations a target cannot make: OpenVINO and TFLite take the
    GridSample DCN only, ORT INT8 the native one."""
    out = []
    for size in sizes:
        for rt in runtimes:
            if rt not in VALID_PRECISIONS:
                raise FFEdgeError(f"unknown sweep runtime {rt!r}; choose from {sorted(VALID_PRECISIONS)}")
            for prec in precisions:
                if prec not in VALID_PRECISIONS[rt]:
                    continue
                lowerings = ["-"]
                if has_dcn:
                    allowed = ["native", "gridsample"] if rt == "onnx" and prec == "fp32" else (
                        ["native"] if rt == "onnx" else ["gridsample"])
                    lowerings = [d for d in (dcn or allowed) if d in allowed] or allowed[:1]
                out += [Candidate(rt, prec, d, tuple(size)) for d in lowerings]
    return out


@dataclass
class SweepConfig:
    model: str
    images: Path
    out_json: Path
    checkpoint: Path | None = None
    candidates: list[Candidate] = field(default_factory=list)
    threads: int = 2
    warmup: int = 3
    iterations: int = 20
    min_f1: float = RECOMMEND_MIN_F1
    keep_dir: Path | None = None  # keep the exported artifacts here


def export_candidate(cfg: SweepConfig, cand: Candidate, out_dir: Path) -> tuple[Path, dict]:
    """Export one candidate through the pipeline; returns (path, export facts)."""
    from ffedge.export.calibration_plan import Calibration
    from ffedge.export.onnx_export import OnnxOptions
    from ffedge.export.pipeline import ExportRequest, export

    options = None
    if cand.target == "onnx" and cand.dcn != "-":
        from ffedge.export.onnx_target import OnnxTargetOptions

        options = OnnxTargetOptions(graph=OnnxOptions(dcn=cand.dcn))
    calib = Calibration(cfg.images) if cand.precision == "int8" else None
    request = ExportRequest(cfg.model, cfg.checkpoint, out_dir / f"{cand.key}{cand.suffix}",
                            cand.size, cand.precision, options=options,
                            verify=cand.precision != "fp32", calibration=calib,
                            random_init=cfg.checkpoint is None)  # same weights as the reference
    report = export(cand.target, request)
    facts = {"export_s": round(report.seconds, 1), "size_bytes": report.size_bytes,
             "float_nodes": len(report.excluded)}
    return report.path, facts


def measure_candidate(cfg: SweepConfig, cand: Candidate, path: Path, eval_images: list,
                      reference) -> dict:
    from ffedge.artifact.targets import find_target
    from ffedge.benchmarks.bench import benchmark
    from ffedge.runtimes import load_runner

    runner = load_runner(find_target(cand.target).runtime, artifact=path, model=cfg.model,
                         threads=cfg.threads)
    res = benchmark(runner, eval_images, cfg.warmup, cfg.iterations, reference=reference,
                    progress=False)
    det = res.parity.detections if res.parity else None
    return {"p50_ms": round(res.model_latency.p50_ms, 3), "p90_ms": round(res.model_latency.p90_ms, 3),
            "e2e_p50_ms": round(res.e2e_latency.p50_ms, 3), "rss_mb": round(res.rss_mb, 1),
            "size_bytes": res.size_bytes, "f1": round(det.f1, 4) if det else None,
            "faces": f"{det.matched}/{det.reference}" if det else None}


def run_sweep(cfg: SweepConfig, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)
              ) -> dict:
    """Export and measure every candidate not yet in ``cfg.out_json``; returns the document."""
    from ffedge.export.calibration_plan import Calibration, plan_calibration
    from ffedge.imageio import read_image
    from ffedge.runtimes.torch_runner import TorchRunner

    doc = load_results(cfg.out_json)
    if doc.get("model") not in (None, cfg.model):
        raise FFEdgeError(f"{cfg.out_json} holds a sweep of {doc['model']}, not {cfg.model}; "
                          "pass another --json")
    doc.update(model=cfg.model, threads=cfg.threads)
    results: dict[str, Any] = doc.setdefault("results", {})
    todo = [c for c in cfg.candidates if c.key not in results]
    if len(todo) < len(cfg.candidates):
        log(f"resuming: {len(cfg.candidates) - len(todo)} candidates already in {cfg.out_json}")
    plan = plan_calibration(Calibration(cfg.images))
    eval_images = [read_image(p) for p in plan.eval_files]
    doc["eval_images"] = len(eval_images)
    bar = Progress(len(todo), "sweep", None)
    refs: dict[tuple[int, int], Any] = {}
    with tempfile.TemporaryDirectory(prefix="ffsweep-") as tmp:
        out_dir = cfg.keep_dir or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for cand in todo:
            log(f"[{len(results) + 1}/{len(cfg.candidates)}] {cand.key}")
            t0 = time.perf_counter()
            row: dict[str, Any] = {"target": cand.target, "precision": cand.precision,
                                   "dcn": cand.dcn, "size": list(cand.size)}
            try:
                path, facts = export_candidate(cfg, cand, out_dir)
                row.update(facts)
                if cand.size not in refs:
                    refs[cand.size] = TorchRunner(cfg.model, cfg.checkpoint, cand.size,
                                                  threads=cfg.threads)
                row.update(measure_candidate(cfg, cand, path, eval_images, refs[cand.size]))
            except FFEdgeError as exc:
                row["error"] = str(exc).splitlines()[0][:300]
                log(f"  failed: {row['error']}")
            row["seconds"] = round(time.perf_counter() - t0, 1)
            results[cand.key] = row
            save_results(cfg.out_json, doc)  # after every candidate: resumable
            bar.update()
    bar.close()
    return doc


def load_results(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FFEdgeError(f"cannot read sweep results {path} ({exc}); delete it or pass another "
                          "--json") from None


def save_results(path: Path, doc: dict) -> None:
    write_bytes_atomic(path, (json.dumps(doc, indent=2) + "\n").encode())


def pareto(rows: dict[str, dict]) -> set[str]:
    """Keys no other candidate beats on both latency (lower) and F1 (higher)."""
    ok = {k: r for k, r in rows.items() if r.get("p50_ms") is not None and r.get("f1") is not None}
    front = set()
    for k, r in ok.items():
        dominated = any(o["p50_ms"] <= r["p50_ms"] and o["f1"] >= r["f1"]
                        and (o["p50_ms"] < r["p50_ms"] or o["f1"] > r["f1"])
                        for j, o in ok.items() if j != k)
        if not dominated:
            front.add(k)
    return front


def recommend(rows: dict[str, dict], min_f1: float) -> str:
    ok = [(r["p50_ms"], k, r) for k, r in rows.items()
          if r.get("p50_ms") is not None and (r.get("f1") or 0) >= min_f1]
    if not ok:
        return f"on this machine: no candidate reaches F1 {min_f1} vs FP32"
    _, _, r = min(ok, key=lambda t: t[0])
    name = {"onnx": "ONNX Runtime", "openvino": "OpenVINO", "tflite": "TFLite"}[r["target"]]
    dcn = f", DCN {r['dcn']}" if r["dcn"] != "-" else ""
    return (f"on this machine: {name} {r['precision'].upper()}{dcn}, {r['size'][0]}x{r['size'][1]}, "
            f"{r['p50_ms']:.1f} ms, F1 {r['f1']:.3f}")


COLUMNS = ("candidate", "p50 ms", "p90 ms", "RSS MB", "size KiB", "F1 vs FP32", "faces",
           "export s", "pareto")


def table_rows(doc: dict) -> list[list[str]]:
    rows = doc.get("results", {})
    front = pareto(rows)
    out = []
    for k, r in sorted(rows.items(), key=lambda kv: kv[1].get("p50_ms") or 1e9):
        if "error" in r:
            out.append([k, "-", "-", "-", "-", "-", "-", "-", "failed: " + r["error"][:60]])
            continue
        out.append([k, f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['rss_mb']:.0f}",
                    f"{r['size_bytes'] / 1024:.0f}", f"{r['f1']:.4f}" if r["f1"] is not None else "-",
                    r.get("faces") or "-", f"{r.get('export_s', 0):.0f}", "*" if k in front else ""])
    return out


def render(doc: dict, min_f1: float = RECOMMEND_MIN_F1) -> str:
    rows = table_rows(doc)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(COLUMNS)]
    fmt = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    lines = [fmt.format(*COLUMNS), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt.format(*r) for r in rows]
    lines += ["", recommend(doc.get("results", {}), min_f1)]
    return "\n".join(lines)


def write_reports(doc: dict, json_path: Path, min_f1: float = RECOMMEND_MIN_F1) -> list[Path]:
    """Markdown, CSV and a latency-vs-F1 scatter PNG next to ``json_path``."""
    base = json_path.with_suffix("")
    md, csv_path, png = (base.with_suffix(".md"), base.with_suffix(".csv"),
                         base.parent / (base.name + "_pareto.png"))
    title = f"# ffbench sweep: {doc.get('model')} ({doc.get('threads')} threads, " \
            f"F1 on {doc.get('eval_images')} held-out photos)\n\n"
    write_bytes_atomic(md, (title + render(doc, min_f1) + "\n").encode())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    w.writerows(table_rows(doc))
    write_bytes_atomic(csv_path, buf.getvalue().encode())
    written = [md, csv_path]
    if _scatter(doc, png):
        written.append(png)
    return written


def _scatter(doc: dict, png: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = {k: r for k, r in doc.get("results", {}).items()
            if r.get("p50_ms") is not None and r.get("f1") is not None}
    if not rows:
        return False
    front = pareto(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, r in rows.items():
        ax.scatter(r["p50_ms"], r["f1"], marker="*" if k in front else "o",
                   s=120 if k in front else 40, color="tab:red" if k in front else "tab:blue")
        ax.annotate(k, (r["p50_ms"], r["f1"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("model latency p50 (ms)")
    ax.set_ylabel("detection F1 vs FP32")
    ax.set_title(f"{doc.get('model')}: latency vs fidelity (stars: Pareto front)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with tempfile.NamedTemporaryFile(suffix=".png", delete=False, dir=png.parent) as f:
        tmp = Path(f.name)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(png)
    return True
