"""``ffbench decoder``: the shared decoder against the classic RetinaFace post-processing.

Inputs are what a deployment really sees: the raw outputs of ``v1`` (real checkpoint) on
the shared crowd photos, and 25,200-prior outputs for ``nano_b``'s 3-anchors-per-level
spec. No trained ``nano_b`` checkpoint exists, and an untrained head's scores hover around
0.5 (every prior a candidate: nothing like deployment), so by default the ``nano_b``
outputs are *synthesised from V1's real outputs on the same photo*: each of the three
anchors of a cell takes the face V1 found there (re-encoded against the new prior, with
a little jitter) and a score interpolated from V1's two anchors. ``--nano-checkpoint``
uses a real model instead. Without ``../shared``, fully synthetic crowds are used.

Both sides are timed end to end per image (decode, score filter, top-k, NMS, mapping to
original pixels), interleaved in the same run so machine noise hits both alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ffedge.decoder.decode import decode_boxes, decode_landmarks, encode_boxes, encode_landmarks
from ffedge.decoder.postprocess import Decoder
from ffedge.decoder.priors import generate_priors
from ffedge.decoder.reference import reference_postprocess
from ffedge.decoder.transform import Transform
from ffedge.spec import DeploymentSpec
from ffedge.specs import NANO_B_SPEC

CROWDS = ("crowd_a", "crowd_b", "crowd_tiny_faces")
THRESHOLDS = (0.5, 0.02)


def default_shared() -> Path:
    """``../shared`` next to the checkout (absent on a user's machine)."""
    return Path(__file__).resolve().parents[2].parent / "shared"


@dataclass
class Case:
    """One image's raw outputs (single image, no batch axis) and how it was made."""

    name: str
    spec: DeploymentSpec
    boxes: np.ndarray
    scores: np.ndarray  # probabilities
    landmarks: np.ndarray
    transform: Transform
    source: str


@dataclass
class Timing:
    case: str
    priors: int
    threshold: float
    candidates: int
    kept: int
    kept_reference_plus_one: int
    identical_to_reference: bool
    ours_ms: float
    reference_ms: float

    @property
    def speedup(self) -> float:
        return self.reference_ms / self.ours_ms if self.ours_ms > 0 else float("inf")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["speedup"] = round(self.speedup, 1)
        return d


# ----------------------------------------------------------------------------- inputs


def v1_cases(images: list[Path], checkpoint: Path, size: int | None = 640,
             threads: int | None = None) -> list[Case]:
    """Raw V1 outputs on ``images``, letterboxed to ``size`` or, with ``size=None``, at each
    photo's own size padded to a multiple of 32 (the WIDER FACE evaluation setting)."""
    from ffedge.decoder.transform import preprocess
    from ffedge.imageio import read_image
    from ffedge.runtimes import load_runner

    runner = load_runner(model="v1", checkpoint=checkpoint,
                         input_size=(size, size) if size else None, threads=threads)
    cases = []
    for path in images:
        x, t = preprocess(read_image(path), runner.spec, mode=None if size else "original")
        b, s, lm = runner.infer(x[None])
        label = f"v1/{path.stem}" + ("" if size else "@{}x{}".format(*t.input_size))
        cases.append(Case(label, runner.spec, b[0], s[0], lm[0], t, "v1 checkpoint"))
    return cases


def model_cases(model: str, checkpoint: Path, images: list[Path], size: int = 640,
                threads: int | None = None) -> list[Case]:
    """Raw outputs of any registered model with a trained checkpoint."""
    from ffedge.decoder.transform import preprocess
    from ffedge.imageio import read_image
    from ffedge.runtimes import load_runner

    runner = load_runner(model=model, checkpoint=checkpoint, input_size=(size, size), threads=threads)
    out = []
    for path in images:
        x, t = preprocess(read_image(path), runner.spec)
        b, s, lm = runner.infer(x[None])
        out.append(Case(f"{model}/{path.stem}", runner.spec, b[0], s[0], lm[0], t, str(checkpoint)))
    return out


def three_anchor_spec() -> DeploymentSpec:
    """``nano_b``'s spec: 3 anchors per level, 25,200 priors at 640x640."""
    return NANO_B_SPEC


def resample_anchors(case: Case, target: DeploymentSpec, seed: int = 0) -> Case:
    """Re-express ``case``'s outputs for ``target``'s priors (same steps, any anchor count).

    Target anchor k of a cell takes its face from the source anchors nearest in rank (the
    better-scoring one when it falls between two), re-encoded against the target prior
    with a little jitter so boxes are not exact copies; its score is the geometric mean
    of those sources' scores. Score statistics and box clusters stay those of a real
    detector on a real photo.
    """
    src_p, dst_p = case.spec.priors, target.priors
    if src_p.steps != dst_p.steps:
        raise ValueError("resampling anchors needs the same steps in both specs")
    h, w = case.transform.input_size
    target = target.with_input_size(h, w)
    src_priors = generate_priors(src_p, h, w)
    dst_priors = generate_priors(dst_p, h, w)
    rng = np.random.default_rng(seed)
    boxes, scores, lms = [], [], []
    s0 = d0 = 0
    for (fh, fw), a_src, a_dst in zip(src_p.feature_shapes(h, w), src_p.anchors_per_level,
                                      dst_p.anchors_per_level):
        cells = fh * fw
        sl_s, sl_d = slice(s0, s0 + cells * a_src), slice(d0, d0 + cells * a_dst)
        sp = src_priors[sl_s].reshape(cells, a_src, 4)
        face = case.scores[sl_s, 1].reshape(cells, a_src)
        sbox = decode_boxes(case.boxes[sl_s].reshape(cells, a_src, 4), sp, src_p.variances)
        slm = decode_landmarks(case.landmarks[sl_s].reshape(cells, a_src, 10), sp, src_p.variances)
        dp = dst_priors[sl_d].reshape(cells, a_dst, 4)
        lvl_b = np.empty((cells, a_dst, 4), np.float32)
        lvl_s = np.empty((cells, a_dst), np.float32)
        lvl_l = np.empty((cells, a_dst, 10), np.float32)
        for k in range(a_dst):
            pos = k * (a_src - 1) / max(a_dst - 1, 1)
            lo, hi = int(np.floor(pos)), int(np.ceil(pos))
            pick = np.where(face[:, hi] > face[:, lo], hi, lo)
            rows = np.arange(cells)
            lvl_s[:, k] = np.sqrt(face[:, lo] * face[:, hi])
            lvl_b[:, k] = encode_boxes(sbox[rows, pick], dp[:, k], dst_p.variances)
            lvl_l[:, k] = encode_landmarks(slm[rows, pick], dp[:, k], dst_p.variances)
        lvl_b += rng.normal(0.0, 0.05, lvl_b.shape).astype(np.float32)
        boxes.append(lvl_b.reshape(-1, 4))
        scores.append(lvl_s.reshape(-1))
        lms.append(lvl_l.reshape(-1, 10))
        s0, d0 = s0 + cells * a_src, d0 + cells * a_dst
    face_p = np.concatenate(scores)
    probs = np.stack([1.0 - face_p, face_p], axis=1).astype(np.float32)
    t = case.transform
    return Case(case.name.replace("v1/", "nano_b/"), target, np.concatenate(boxes), probs,
                np.concatenate(lms), t, "synthesised from v1 outputs")


def synthetic_case(spec: DeploymentSpec, faces: int = 60, seed: int = 0, name: str = "synthetic"
                   ) -> Case:
    """A crowd without any model or photo: ``faces`` faces of 8-60 px, every prior that
    overlaps one well scores high (with spread), the rest low (heavy tail to 0.3)."""
    h, w = spec.input_size
    rng = np.random.default_rng(seed)
    priors = generate_priors(spec.priors, h, w)
    p = priors.shape[0]
    size = np.exp(rng.uniform(np.log(8), np.log(60), faces))
    cx, cy = rng.uniform(0.05, 0.95, faces) * w, rng.uniform(0.05, 0.95, faces) * h
    gt = np.stack([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2], 1)
    scale = np.array([w, h, w, h], np.float32)
    pb = decode_boxes(np.zeros((p, 4), np.float32), priors, spec.priors.variances) * scale
    # best face per prior by IoU (dense: p x faces is small)
    ix1 = np.maximum(pb[:, None, 0], gt[None, :, 0])
    iy1 = np.maximum(pb[:, None, 1], gt[None, :, 1])
    ix2 = np.minimum(pb[:, None, 2], gt[None, :, 2])
    iy2 = np.minimum(pb[:, None, 3], gt[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_p = (pb[:, 2] - pb[:, 0]) * (pb[:, 3] - pb[:, 1])
    area_g = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    iou = inter / (area_p[:, None] + area_g[None, :] - inter)
    best = iou.argmax(1)
    best_iou = iou[np.arange(p), best]
    face_p = rng.beta(0.3, 60.0, p)  # background: mostly ~1e-3, a tail to ~0.3
    hit = best_iou > 0.3
    face_p[hit] = np.clip(best_iou[hit] * 1.2 + rng.normal(0, 0.2, hit.sum()), 0, 0.9999)
    target = gt[best] + rng.normal(0, 0.06, (p, 4)) * size[best][:, None]
    target[~hit] = pb[~hit] + rng.normal(0, 2.0, (int((~hit).sum()), 4))
    target[:, 2:] = np.maximum(target[:, 2:], target[:, :2] + 1.0)
    deltas = encode_boxes(target / scale, priors, spec.priors.variances)
    pts = (target[:, None, :2] + (target[:, None, 2:] - target[:, None, :2])
           * np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]))
    lm = encode_landmarks(pts / scale[:2], priors, spec.priors.variances)
    probs = np.stack([1.0 - face_p, face_p], 1).astype(np.float32)
    t = Transform((h, w), (h, w), 1.0, 1.0, mode="letterbox")
    return Case(name, spec, deltas, probs, lm, t, f"synthetic ({faces} faces, seed {seed})")


# ----------------------------------------------------------------------------- timing


def _median_ms(samples: list[float]) -> float:
    return float(np.median(samples)) * 1e3


def ours_fn(case: Case, threshold: float) -> Callable[[], object]:
    decoder = Decoder(case.spec, score_threshold=threshold)
    return lambda: decoder.decode_one(case.boxes, case.scores, case.landmarks, case.transform,
                                      scores_are="probabilities")


def reference_fn(case: Case, threshold: float, plus_one: bool = True) -> Callable[[], object]:
    def run():
        b, s, lm = reference_postprocess(case.boxes, case.scores, case.landmarks, case.spec.priors,
                                         case.transform.input_size, "probabilities", threshold,
                                         plus_one=plus_one)
        return case.transform.boxes_to_original(b), s, case.transform.points_to_original(lm)
    return run


def time_case(case: Case, threshold: float, repeats: int = 200, ref_repeats: int | None = None
              ) -> Timing:
    """Median wall time of ours and of the reference, interleaved, plus a result check."""
    ours, ref = ours_fn(case, threshold), reference_fn(case, threshold)
    if ref_repeats is None:
        ref_repeats = repeats if threshold >= 0.1 else max(repeats // 5, 10)
    for _ in range(3):
        ours()
        ref()
    t_ours: list[float] = []
    t_ref: list[float] = []
    for r in range(max(repeats, ref_repeats)):
        if r < repeats:
            t0 = time.perf_counter()
            ours()
            t_ours.append(time.perf_counter() - t0)
        if r < ref_repeats:
            t0 = time.perf_counter()
            ref()
            t_ref.append(time.perf_counter() - t0)
    dets = ours()
    cont = reference_fn(case, threshold, plus_one=False)()
    classic = ref()
    same = (np.array_equal(dets.boxes, cont[0]) and np.array_equal(dets.scores, cont[1])
            and np.array_equal(dets.landmarks, cont[2]))
    candidates = int((case.scores[:, 1] > np.float32(threshold)).sum())
    return Timing(case.name, int(case.scores.shape[0]), threshold, candidates, len(dets),
                  len(classic[1]), bool(same), _median_ms(t_ours), _median_ms(t_ref))
