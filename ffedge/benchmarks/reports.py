"""Reports people can read: a Markdown table, a CSV and PNG plots next to a JSON result.

The JSON is for scripts; a reviewer wants one table to paste into a pull request, a CSV to
open in a spreadsheet, and two pictures: latency per runtime x precision, and the WIDER
FACE precision/recall curves behind the AP numbers. Every ``ffbench`` command that takes
``--json OUT`` writes ``OUT.md``, ``OUT.csv``, ``OUT-latency.png`` and (with accuracy)
``OUT-pr.png`` (the JSON's name with the suffix swapped).

matplotlib is optional (the ``eval`` extra) and imported only here, lazily, through the
object-oriented Agg canvas (no pyplot, no global backend switch, no display needed).
Without it the tables are still written and one note says why the plots are absent.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ffedge.benchmarks.widerface import SETTINGS, PRCurve

NO_MATPLOTLIB = "note: matplotlib is not installed, plots skipped: pip install 'featherface-edge[eval]'"


@dataclass(frozen=True)
class ReportRow:
    """One measured setting (artifact x runtime x precision x input size).

    ``None`` means "not measured" and shows as ``-`` (Markdown) or an empty cell (CSV).
    ``parity_max_abs_score`` and ``f1_vs_torch`` compare with the torch reference;
    ``ap_*`` are WIDER FACE val APs (possibly on a subset: see the JSON).
    """

    artifact: str
    runtime: str
    precision: str
    size: str
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    fps: float | None = None
    parity_max_abs_score: float | None = None
    f1_vs_torch: float | None = None
    ap_easy: float | None = None
    ap_medium: float | None = None
    ap_hard: float | None = None

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision} {self.artifact} ({self.size})"


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ReportRow))
_AP_COLUMNS = ("ap_easy", "ap_medium", "ap_hard")
_HEADERS = {
    "artifact": "artifact", "runtime": "runtime", "precision": "precision", "size": "size",
    "latency_p50_ms": "p50 ms", "latency_p90_ms": "p90 ms", "fps": "FPS",
    "parity_max_abs_score": "max abs Δscore vs torch", "f1_vs_torch": "F1 vs torch",
    "ap_easy": "AP easy", "ap_medium": "AP medium", "ap_hard": "AP hard",
}
_FORMATS = {
    "latency_p50_ms": "{:.2f}", "latency_p90_ms": "{:.2f}", "fps": "{:.1f}",
    "parity_max_abs_score": "{:.1e}", "f1_vs_torch": "{:.4f}",
    "ap_easy": "{:.4f}", "ap_medium": "{:.4f}", "ap_hard": "{:.4f}",
}


@dataclass
class ReportFiles:
    """What ``write_reports`` wrote, and the note to print when plots were skipped."""

    written: list[Path] = field(default_factory=list)
    note: str | None = None


def rows_from_bench(results: Iterable[Any]) -> list[ReportRow]:
    """``BenchResult`` objects (``ffbench``, ``ffbench compare``) -> rows."""
    rows = []
    for r in results:
        lat, par = r.model_latency, r.parity
        rows.append(ReportRow(
            artifact=r.artifact, runtime=r.runtime, precision=r.precision,
            size=f"{r.input_size[0]}x{r.input_size[1]}",
            latency_p50_ms=lat.p50_ms, latency_p90_ms=lat.p90_ms, fps=lat.fps,
            parity_max_abs_score=par.outputs["scores"].max_abs if par else None,
            f1_vs_torch=par.detections.f1 if par else None,
        ))
    return rows


def ap_columns(ap: Mapping[str, float]) -> dict[str, float | None]:
    """``WiderFaceResult.ap`` -> the ``ap_*`` keyword arguments of :class:`ReportRow`."""
    return {f"ap_{s}": (float(ap[s]) if math.isfinite(ap[s]) else None) for s in SETTINGS}


def report_paths(json_path: str | os.PathLike[str]) -> dict[str, Path]:
    """Where the reports of ``OUT.json`` go: ``OUT.md``, ``OUT.csv``, ``OUT-*.png``."""
    p = Path(json_path)
    stem = p.with_suffix("") if p.suffix.lower() == ".json" else p
    return {
        "markdown": stem.with_name(stem.name + ".md"),
        "csv": stem.with_name(stem.name + ".csv"),
        "latency": stem.with_name(stem.name + "-latency.png"),
        "pr": stem.with_name(stem.name + "-pr.png"),
    }


def _cell(row: ReportRow, column: str, empty: str) -> str:
    value = getattr(row, column)
    if value is None:
        return empty
    fmt = _FORMATS.get(column)
    return fmt.format(value) if fmt else str(value)


def markdown_table(rows: Sequence[ReportRow], title: str | None = None) -> str:
    """A GitHub-flavoured Markdown table; AP columns only when some row measured AP."""
    cols = [c for c in COLUMNS
            if c not in _AP_COLUMNS or any(getattr(r, c) is not None for r in rows)]
    lines = [f"## {title}", ""] if title else []
    lines.append("| " + " | ".join(_HEADERS[c] for c in cols) + " |")
    lines.append("|" + "|".join("---" if c in ("artifact", "runtime", "precision", "size")
                                else "---:" for c in cols) + "|")
    lines += ["| " + " | ".join(_cell(r, c, "-") for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[ReportRow], path: str | os.PathLike[str]) -> Path:
    """Every column, always (a stable schema for spreadsheets); unmeasured cells empty.

    Numbers keep full precision: the CSV is for further arithmetic, the Markdown for eyes.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow(["" if getattr(r, c) is None else getattr(r, c) for c in COLUMNS])
    return out


def _matplotlib() -> tuple[Any, Any] | None:
    """(Figure, FigureCanvasAgg), or None when matplotlib is absent."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure, FigureCanvasAgg


def plot_latency(rows: Sequence[ReportRow], path: str | os.PathLike[str]) -> Path | None:
    """Bar chart: p50 model latency per runtime x precision (whisker up to p90).

    Returns None (nothing written) when no row has a latency or matplotlib is absent.
    """
    timed = [r for r in rows if r.latency_p50_ms is not None]
    mpl = _matplotlib()
    if not timed or mpl is None:
        return None
    figure_cls, canvas_cls = mpl
    names = [f"{r.runtime}\n{r.precision}" for r in timed]
    if len(set(names)) < len(names):  # same runtime x precision twice: say which artifact
        names = [f"{n}\n{r.artifact}" for n, r in zip(names, timed, strict=True)]
    p50 = np.array([r.latency_p50_ms for r in timed], dtype=float)
    p90 = np.array([r.latency_p90_ms if r.latency_p90_ms is not None else r.latency_p50_ms
                    for r in timed], dtype=float)
    precisions = sorted({r.precision for r in timed})
    palette = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]
    colors = [palette[precisions.index(r.precision) % len(palette)] for r in timed]
    fig = figure_cls(figsize=(max(4.0, 1.3 * len(timed) + 1.5), 4.0), dpi=100)
    canvas_cls(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(timed))
    ax.bar(x, p50, color=colors, yerr=np.vstack([np.zeros_like(p50), np.maximum(p90 - p50, 0)]),
           capsize=4)
    for xi, v, top in zip(x, p50, np.maximum(p50, p90), strict=True):
        ax.annotate(f"{v:.1f}", (xi, top), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 3), textcoords="offset points")
    ax.set_ylim(0, float(np.max(np.maximum(p50, p90))) * 1.15)
    ax.set_xticks(x)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("model latency, ms (bar p50, whisker p90)")
    ax.set_title("Latency per runtime x precision")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png")
    return out


def plot_pr_curves(
    curves: Mapping[str, Mapping[str, PRCurve]], path: str | os.PathLike[str],
    ap: Mapping[str, Mapping[str, float]] | None = None,
) -> Path | None:
    """One panel per WIDER FACE setting, one precision/recall line per run label.

    ``curves``: label -> setting -> PRCurve (``WiderFaceResult.curves``); ``ap``: label ->
    setting -> AP for the legend. Thresholds where nothing passes (precision NaN) are left
    out. Returns None when there is no curve or matplotlib is absent.
    """
    mpl = _matplotlib()
    if not curves or mpl is None:
        return None
    figure_cls, canvas_cls = mpl
    fig = figure_cls(figsize=(12.0, 4.0), dpi=100)
    canvas_cls(fig)
    for k, setting in enumerate(SETTINGS):
        ax = fig.add_subplot(1, len(SETTINGS), k + 1)
        for label, per_setting in curves.items():
            curve = per_setting.get(setting)
            if curve is None:
                continue
            ok = np.isfinite(curve.precision) & np.isfinite(curve.recall)
            value = (ap or {}).get(label, {}).get(setting)
            legend = f"{label} (AP {value:.3f})" if value is not None else label
            ax.plot(curve.recall[ok], curve.precision[ok], label=legend, linewidth=1.5)
        ax.set_title(f"WIDER FACE val: {setting}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png")
    return out


def write_reports(
    json_path: str | os.PathLike[str],
    rows: Sequence[ReportRow],
    curves: Mapping[str, Mapping[str, PRCurve]] | None = None,
    ap: Mapping[str, Mapping[str, float]] | None = None,
    title: str | None = None,
) -> ReportFiles:
    """Write the Markdown table, the CSV and the plots next to ``json_path``."""
    paths = report_paths(json_path)
    paths["markdown"].parent.mkdir(parents=True, exist_ok=True)
    files = ReportFiles()
    paths["markdown"].write_text(markdown_table(rows, title), encoding="utf-8")
    files.written.append(paths["markdown"])
    files.written.append(write_csv(rows, paths["csv"]))
    if _matplotlib() is None:
        files.note = NO_MATPLOTLIB
        return files
    for made in (plot_latency(rows, paths["latency"]),
                 plot_pr_curves(curves or {}, paths["pr"], ap)):
        if made is not None:
            files.written.append(made)
    return files
