"""Parity as a product feature: run several runners on the same inputs and report the
differences, on raw outputs and on the faces the shared decoder finds.

Used by ``ffexport`` (verification, the INT8 fidelity gate) and ``ffbench`` (parity
columns); one implementation so every target is judged the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ffedge.artifact.metadata import OUTPUT_NAMES
from ffedge.runtimes.base import Outputs, Runner


@dataclass
class OutputDiff:
    max_abs: float = 0.0
    mean_abs: float = 0.0
    max_rel: float = 0.0  # |a-b| / max(|ref|, 1e-3), worst element
    scale: float = 0.0  # max |ref|: the output's magnitude, for scale-relative tolerances

    def update(self, ref: np.ndarray, test: np.ndarray) -> None:
        d = np.abs(test.astype(np.float64) - ref.astype(np.float64))
        if d.size == 0:
            return
        self.max_abs = max(self.max_abs, float(d.max()))
        self.mean_abs = max(self.mean_abs, float(d.mean()))
        rel = d / np.maximum(np.abs(ref.astype(np.float64)), 1e-3)
        self.max_rel = max(self.max_rel, float(rel.max()))
        self.scale = max(self.scale, float(np.abs(ref).max()))

    def relative_to_scale(self) -> float:
        """Worst error relative to the output's magnitude (at least 1: probabilities)."""
        return self.max_abs / max(self.scale, 1.0)


@dataclass
class DetectionAgreement:
    """Greedy one-to-one matching of candidate to reference detections at IoU >= 0.5."""

    reference: int = 0
    candidate: int = 0
    matched: int = 0
    score_abs_sum: float = 0.0

    @property
    def precision(self) -> float:
        return self.matched / self.candidate if self.candidate else 1.0

    @property
    def recall(self) -> float:
        return self.matched / self.reference if self.reference else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def mean_abs_dscore(self) -> float:
        return self.score_abs_sum / self.matched if self.matched else 0.0

    def add(self, other: DetectionAgreement) -> None:
        self.reference += other.reference
        self.candidate += other.candidate
        self.matched += other.matched
        self.score_abs_sum += other.score_abs_sum

    def to_dict(self) -> dict[str, float]:
        return {
            "reference": self.reference, "candidate": self.candidate, "matched": self.matched,
            "precision": round(self.precision, 6), "recall": round(self.recall, 6),
            "f1": round(self.f1, 6), "mean_abs_dscore": round(self.mean_abs_dscore, 6),
        }


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every box of ``a`` (N,4) and ``b`` (M,4), x1y1x2y2, continuous."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return (inter / np.maximum(union, 1e-12)).astype(np.float32)


def match_detections(ref_boxes: np.ndarray, ref_scores: np.ndarray, test_boxes: np.ndarray,
                     test_scores: np.ndarray, iou: float = 0.5) -> DetectionAgreement:
    """Each candidate (by descending score) takes the best still-free reference box."""
    out = DetectionAgreement(reference=len(ref_boxes), candidate=len(test_boxes))
    if len(ref_boxes) == 0 or len(test_boxes) == 0:
        return out
    ious = iou_matrix(test_boxes, ref_boxes)
    free = np.ones(len(ref_boxes), dtype=bool)
    for i in np.argsort(-test_scores, kind="stable"):
        cand = np.where(free, ious[i], -1.0)
        j = int(np.argmax(cand))
        if cand[j] >= iou:
            free[j] = False
            out.matched += 1
            out.score_abs_sum += abs(float(test_scores[i]) - float(ref_scores[j]))
    return out


@dataclass
class ParityReport:
    reference: str
    candidate: str
    images: int = 0
    outputs: dict[str, OutputDiff] = field(default_factory=lambda: {n: OutputDiff() for n in OUTPUT_NAMES})
    detections: DetectionAgreement = field(default_factory=DetectionAgreement)

    def failures(self, relative: float | None, min_f1: float) -> list[str]:
        """Why this candidate fails: any output whose max error exceeds ``relative`` times
        its magnitude (``max(max|ref|, 1)``), or detection F1 below ``min_f1``."""
        reasons = []
        for name, diff in self.outputs.items():
            if relative is not None and diff.relative_to_scale() > relative:
                reasons.append(f"{name}: max abs error {diff.max_abs:.3g} > "
                               f"{relative:.1e} x output scale {max(diff.scale, 1.0):.3g}")
        if self.detections.f1 < min_f1:
            reasons.append(f"detection F1 {self.detections.f1:.4f} < {min_f1}")
        return reasons

    def to_dict(self) -> dict:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "images": self.images,
            "outputs": {k: asdict(v) for k, v in self.outputs.items()},
            "detections": self.detections.to_dict(),
        }


class Comparator:
    """Run a reference runner and candidates on the same batches; compare everything.

    ``decode(outputs, transforms)`` turns raw outputs into per-image (boxes, scores) in
    original pixels — the shared decoder, so every runtime is judged identically.
    """

    def __init__(self, reference: Runner, decode, iou: float = 0.5) -> None:
        self.reference = reference
        self.decode = decode
        self.iou = iou

    def run(self, candidates: Sequence[Runner], batches, ref_outputs: list[Outputs] | None = None
            ) -> list[ParityReport]:
        """``batches``: iterable of (nchw float32, transforms). Returns one report per candidate."""
        batches = list(batches)
        if ref_outputs is None:
            ref_outputs = [self.reference.infer(x) for x, _ in batches]
        reports = []
        for cand in candidates:
            rep = ParityReport(self.reference.describe(), cand.describe())
            for (x, transforms), ref in zip(batches, ref_outputs):
                out = cand.infer(x)
                rep.images += len(x)
                for name, r, o in zip(OUTPUT_NAMES, ref, out):
                    rep.outputs[name].update(r, o)
                for (rb, rs), (cb, cs) in zip(self.decode(ref, transforms), self.decode(out, transforms)):
                    rep.detections.add(match_detections(rb, rs, cb, cs, self.iou))
            reports.append(rep)
        return reports
