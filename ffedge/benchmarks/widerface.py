"""The WIDER FACE validation protocol, as the official evaluation kit defines it.

Published WIDER FACE numbers (RetinaFace, FeatherFace, ...) come from the official kit: the
MATLAB ``eval_tools`` or its Python port (``evaluation.py`` + ``box_overlaps.pyx``). This
module reproduces that arithmetic so our numbers are comparable with theirs, and makes it
fast (the whole val set scores in about a second) by vectorising it:

* predictions: ``<pred_dir>/<event>/<image>.txt`` -- image name, box count, then
  ``x y w h score`` lines. A missing, empty or malformed file means "no detections for this
  image" (the MATLAB kit's ``read_pred``); its faces still count in the recall denominator.
* scores are min-max normalised over every prediction of every val image.
* boxes become ``x2 = x + w``, ``y2 = y + h`` and IoU uses the kit's ``+1`` pixel areas.
* each prediction is matched to its single highest-IoU face; at IoU >= 0.5 a face outside
  the setting's ``gt_list`` makes the prediction "ignored" (neither TP nor FP), a counted
  face is recalled once (later matches of it are false positives).
* precision and recall at 1,000 score thresholds ``1 - (t + 1) / 1000``, summed over images,
  and the VOC AP (sentinels, precision envelope, sum of delta-recall x precision).

The kit's per-image loops (``image_eval``, ``img_pr_info``) are order-dependent only in
appearance: the recall count at a threshold is the number of distinct counted faces that are
the best match of some prediction scoring at or above it, and the proposal count is the
number of non-ignored predictions at or above it. Both are computed here as sorted-array
counts. ``docs/widerface.md`` lists every convention and the few deliberate deviations.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ffedge.errors import FFEdgeError

SETTINGS: tuple[str, ...] = ("easy", "medium", "hard")
FACE_MAT = "wider_face_val.mat"
SETTING_MATS: dict[str, str] = {s: f"wider_{s}_val.mat" for s in SETTINGS}
IOU_THRESH = 0.5
THRESH_NUM = 1000
_IOU_CHUNK = 2_000_000  # IoU matrix entries computed at once (bounds memory on crowd images)

ImageKey = tuple[str, str]


class WiderFaceError(FFEdgeError):
    """Unusable ground truth or predictions (missing folder, not the kit's .mat files, ...)."""


class PredictionFormatError(WiderFaceError):
    """A prediction file that does not follow the submission layout."""


# --------------------------------------------------------------------------- ground truth


@dataclass(frozen=True)
class GroundTruth:
    """The val annotations, flattened to one entry per image (event order, then file order).

    ``boxes[i]`` is the (n, 4) float64 ``x y w h`` array of image ``image_keys[i]``;
    ``keep[setting][i]`` is a bool mask over those n faces: True for the faces the setting
    counts (its ``gt_list``), False for the ones it ignores.
    """

    events: tuple[str, ...]
    image_keys: tuple[ImageKey, ...]
    boxes: tuple[np.ndarray, ...]
    keep: Mapping[str, tuple[np.ndarray, ...]]
    source: str = ""

    @property
    def num_images(self) -> int:
        return len(self.image_keys)

    def num_faces(self, setting: str | None = None) -> int:
        """Faces counted by ``setting`` (the recall denominator), or all annotated boxes."""
        if setting is None:
            return int(sum(len(b) for b in self.boxes))
        return int(sum(int(k.sum()) for k in self.keep[setting]))

    def image_relpath(self, index: int, suffix: str = ".jpg") -> str:
        """``<event>/<image>.jpg``: where the image sits under ``WIDER_val/images``."""
        event, image = self.image_keys[index]
        return f"{event}/{image}{suffix}"


def load_ground_truth(gt_dir: str | os.PathLike[str]) -> GroundTruth:
    """Read the kit's four .mat files (``wider_face_val.mat`` + easy/medium/hard ``gt_list``).

    Boxes come from ``wider_face_val.mat`` like the Python port; the setting files must
    describe the same events and images (they do in the published kit), which is checked so
    that a mixed-up folder fails loudly instead of scoring against the wrong faces.
    """
    root = Path(gt_dir)
    if not root.exists():
        raise WiderFaceError(f"WIDER FACE ground-truth folder not found: {root}")
    if not root.is_dir():
        raise WiderFaceError(f"WIDER FACE ground truth must be a folder of .mat files: {root}")
    names = [FACE_MAT, *SETTING_MATS.values()]
    absent = [n for n in names if not (root / n).is_file()]
    if absent:
        raise WiderFaceError(f"{root} is not a WIDER FACE eval folder: missing {', '.join(absent)}")
    face = _load_mat(root / FACE_MAT, ("event_list", "file_list", "face_bbx_list"))
    events = [_cell_str(e) for e in _cells(face["event_list"])]
    files = [[_cell_str(f) for f in _cells(fl)] for fl in _cells(face["file_list"])]
    boxes_by_event = [[_as_boxes(b) for b in _cells(bl)] for bl in _cells(face["face_bbx_list"])]
    _check_lengths(root / FACE_MAT, events, files, boxes_by_event)
    keep: dict[str, tuple[np.ndarray, ...]] = {}
    for setting, name in SETTING_MATS.items():
        mat = _load_mat(root / name, ("event_list", "file_list", "gt_list"))
        _check_same_images(root / name, mat, events, files)
        keep[setting] = _keep_masks(root / name, mat["gt_list"], boxes_by_event)
    keys = tuple((e, f) for e, fl in zip(events, files, strict=True) for f in fl)
    boxes = tuple(b for bl in boxes_by_event for b in bl)
    return GroundTruth(tuple(events), keys, boxes, keep, source=str(root))


def select_images(gt: GroundTruth, indices: Iterable[int]) -> GroundTruth:
    """The ground truth restricted to ``indices`` (kept in kit order).

    Scoring a partial run against the full val set would count every unvisited image's
    faces as missed; restricting the truth to the images that were run keeps AP meaningful
    (the score normalisation and the recall denominators then cover those images only).
    """
    chosen = sorted(set(int(i) for i in indices))
    if chosen and (chosen[0] < 0 or chosen[-1] >= gt.num_images):
        raise WiderFaceError(f"image index outside 0..{gt.num_images - 1}")
    keys = tuple(gt.image_keys[i] for i in chosen)
    events = tuple(e for e in gt.events if any(k[0] == e for k in keys))
    return GroundTruth(
        events,
        keys,
        tuple(gt.boxes[i] for i in chosen),
        {s: tuple(m[i] for i in chosen) for s, m in gt.keep.items()},
        source=gt.source,
    )


def first_per_event(gt: GroundTruth, per_event: int) -> list[int]:
    """Indices of the first ``per_event`` images of every event (kit order).

    Per event rather than overall, so a quick subset still samples all 61 scene types
    (the val set is ordered by event; the first N overall would be parades only).
    """
    if per_event < 1:
        raise WiderFaceError(f"subset must be >= 1 image per event, got {per_event}")
    seen: dict[str, int] = {}
    out: list[int] = []
    for i, (event, _) in enumerate(gt.image_keys):
        if seen.get(event, 0) < per_event:
            seen[event] = seen.get(event, 0) + 1
            out.append(i)
    return out


def _load_mat(path: Path, keys: Sequence[str]) -> dict[str, Any]:
    """``scipy.io.loadmat`` with the failure modes turned into one-line user errors."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - scipy ships with the eval/test extras
        raise WiderFaceError(
            f"scipy is needed to read {path.name}: pip install 'featherface-edge[eval]' ({exc})"
        ) from None
    try:
        mat = loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError/TypeError/... on non-.mat input
        raise WiderFaceError(f"{path}: not a readable MATLAB .mat file ({exc})") from None
    lacking = [k for k in keys if k not in mat]
    if lacking:
        raise WiderFaceError(f"{path}: not a WIDER FACE eval file (no {', '.join(lacking)})")
    return mat


def _cells(cell: Any) -> list[Any]:
    """The items of a MATLAB cell array as loadmat returns it (an (n, 1) object array)."""
    return list(np.asarray(cell, dtype=object).ravel())


def _cell_str(item: Any) -> str:
    """A MATLAB char array (loadmat: a 1-element str array, possibly nested) -> str."""
    arr = np.asarray(item)
    while arr.dtype == object and arr.size == 1:
        arr = np.asarray(arr.ravel()[0])
    if arr.size != 1 or arr.dtype.kind != "U":
        raise WiderFaceError(f"expected a string in the ground-truth cell array, got {arr!r}")
    return str(arr.ravel()[0])


def _as_boxes(item: Any) -> np.ndarray:
    """One image's ``face_bbx_list`` entry -> (n, 4) float64 (the port's ``astype('float')``)."""
    arr = np.asarray(item, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise WiderFaceError(f"face boxes must be (n, 4) x y w h arrays, got shape {arr.shape}")
    return arr


def _check_lengths(
    path: Path, events: list[str], files: list[list[str]], boxes: list[list[np.ndarray]]
) -> None:
    if not (len(events) == len(files) == len(boxes)):
        raise WiderFaceError(f"{path}: event_list, file_list and face_bbx_list differ in length")
    for event, fl, bl in zip(events, files, boxes, strict=True):
        if len(fl) != len(bl):
            raise WiderFaceError(f"{path}: event {event} has {len(fl)} files, {len(bl)} box lists")


def _check_same_images(
    path: Path, mat: Mapping[str, Any], events: list[str], files: list[list[str]]
) -> None:
    """A setting file must list the very images of ``wider_face_val.mat``, in order."""
    other_events = [_cell_str(e) for e in _cells(mat["event_list"])]
    other_files = [[_cell_str(f) for f in _cells(fl)] for fl in _cells(mat["file_list"])]
    if other_events != events or other_files != files:
        raise WiderFaceError(f"{path} lists other events or images than {FACE_MAT}")


def _keep_masks(path: Path, gt_list: Any, boxes: list[list[np.ndarray]]) -> tuple[np.ndarray, ...]:
    """1-based ``gt_list`` indices -> a bool mask per image (the kit's ``ignore`` vector)."""
    per_event = _cells(gt_list)
    if len(per_event) != len(boxes):
        raise WiderFaceError(f"{path}: gt_list has {len(per_event)} events, expected {len(boxes)}")
    masks: list[np.ndarray] = []
    for ev_cells, ev_boxes in zip(per_event, boxes, strict=True):
        items = _cells(ev_cells)
        if len(items) != len(ev_boxes):
            raise WiderFaceError(f"{path}: gt_list and face_bbx_list differ in image count")
        for item, b in zip(items, ev_boxes, strict=True):
            # gt_list is uint8/uint16 in the kit: widen before any arithmetic.
            idx = np.asarray(item).ravel().astype(np.int64)
            if idx.size and (idx.min() < 1 or idx.max() > len(b)):
                raise WiderFaceError(f"{path}: gt_list index outside 1..{len(b)}")
            mask = np.zeros(len(b), dtype=bool)
            mask[idx - 1] = True
            masks.append(mask)
    return tuple(masks)


# --------------------------------------------------------------------------- predictions


class Predictions(dict[str, dict[str, np.ndarray]]):
    """``event -> image -> (N, 5)`` float64 ``x y w h score`` rows, by descending score.

    A dict, plus what reading the folder found wrong: ``missing`` ("event/image" of the
    requested images with no file) and ``invalid`` ("event/image" -> reason; such a file is
    held as an empty array, as the MATLAB kit's ``read_pred`` does after "Invalid format"),
    and ``num_files``, how many files were found.
    """

    def __init__(self) -> None:
        super().__init__()
        self.missing: list[str] = []
        self.invalid: dict[str, str] = {}
        self.num_files = 0


def read_prediction_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse one submission file into (N, 5) float64 rows, sorted by descending score.

    Follows the MATLAB kit's ``read_pred``: line 1 is the image name (not checked: the path
    says which image it is), line 2 the box count N, then exactly N lines whose first five
    numbers are ``x y w h score`` (further lines and numbers are ignored). N = 0 gives an
    empty array. Anything else raises ``PredictionFormatError``. Blank lines are skipped.
    The sort is stable, like MATLAB's ``sort(..., 'descend')``.
    """
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        raise PredictionFormatError(f"{path}: expected an image name line and a box-count line")
    count = _parse_count(lines[1], path)
    if len(lines) - 2 < count:
        raise PredictionFormatError(f"{path}: says {count} boxes but has {len(lines) - 2} lines")
    rows = np.zeros((count, 5), dtype=np.float64)
    for k, line in enumerate(lines[2 : 2 + count]):
        rows[k] = _parse_box_line(line, path, k + 3)
    order = np.argsort(-rows[:, 4], kind="stable")
    return rows[order]


def _parse_count(line: str, path: Any) -> int:
    try:
        value = float(line.strip())
    except ValueError:
        raise PredictionFormatError(f"{path}: line 2 must be the box count, got {line!r}") from None
    if not value.is_integer() or value < 0:
        raise PredictionFormatError(f"{path}: box count must be a whole number >= 0, got {line!r}")
    return int(value)


def _parse_box_line(line: str, path: Any, lineno: int) -> list[float]:
    tokens = line.replace(",", " ").split()
    try:
        values = [float(t) for t in tokens[:5]]
    except ValueError:
        raise PredictionFormatError(f"{path}:{lineno}: not numbers: {line!r}") from None
    if len(values) < 5:
        raise PredictionFormatError(f"{path}:{lineno}: expected 'x y w h score', got {line!r}")
    if not all(np.isfinite(values)):
        raise PredictionFormatError(f"{path}:{lineno}: non-finite value in {line!r}")
    return values


def read_predictions(
    pred_dir: str | os.PathLike[str], images: Iterable[ImageKey] | None = None
) -> Predictions:
    """Read a submission folder.

    With ``images`` (e.g. ``GroundTruth.image_keys``) exactly those files are looked up, as
    the kit does, and absent ones are listed in ``.missing``; without it every
    ``<event>/<image>.txt`` is read. Malformed files are recorded in ``.invalid`` and held as
    empty arrays rather than aborting the run, matching the kit.
    """
    root = Path(pred_dir)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "not found"
        raise WiderFaceError(f"predictions folder {what}: {root}")
    keys = list(images) if images is not None else _scan_folder(root)
    preds = Predictions()
    for event, image in keys:
        path = root / event / f"{image}.txt"
        slot = preds.setdefault(event, {})
        if not path.is_file():
            preds.missing.append(f"{event}/{image}")
            continue
        preds.num_files += 1
        try:
            slot[image] = read_prediction_file(path)
        except PredictionFormatError as exc:
            preds.invalid[f"{event}/{image}"] = str(exc)
            slot[image] = np.zeros((0, 5), dtype=np.float64)
    return preds


def _scan_folder(root: Path) -> list[ImageKey]:
    """Every ``<event>/<image>.txt`` under ``root``, in a stable (sorted) order."""
    return [
        (event_dir.name, txt.stem)
        for event_dir in sorted(p for p in root.iterdir() if p.is_dir())
        for txt in sorted(event_dir.glob("*.txt"))
    ]


def write_predictions(
    pred_dir: str | os.PathLike[str],
    event: str,
    image_name: str,
    boxes: np.ndarray | Sequence[Sequence[float]],
    scores: np.ndarray | Sequence[float],
    box_format: Literal["xyxy", "xywh"] = "xyxy",
) -> Path:
    """Write one image's detections as ``<pred_dir>/<event>/<image>.txt`` (submission layout).

    ``xyxy`` boxes become ``x y (x2 - x1) (y2 - y1)``: the kit adds w back (``x2 = x + w``),
    so the round trip is exact. Rows are written by descending score, which the MATLAB kit
    would do anyway and the Python port silently relies on. Numbers use Python's shortest
    round-trip repr, so reading the file back gives the same floats. The file appears
    atomically (temp file, then rename): a crashed run never leaves a truncated file that
    the kit would read as "invalid format".
    """
    name = image_name[:-4] if image_name.lower().endswith(".jpg") else image_name
    for part, label in ((event, "event"), (name, "image name")):
        if not part or "/" in part or "\\" in part or part in (".", ".."):
            raise WiderFaceError(f"invalid {label} for a prediction file: {part!r}")
    rows = _submission_rows(boxes, scores, box_format)
    lines = [name, str(len(rows))]
    lines += [" ".join(repr(float(v)) for v in row) for row in rows]
    target = Path(pred_dir) / event / f"{name}.txt"
    _atomic_write(target, "\n".join(lines) + "\n")
    return target


def _submission_rows(
    boxes: np.ndarray | Sequence[Sequence[float]],
    scores: np.ndarray | Sequence[float],
    box_format: str,
) -> np.ndarray:
    """(N, 5) ``x y w h score`` rows by descending score, after checking shapes and values."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(b) != len(s):
        raise WiderFaceError(f"{len(b)} boxes but {len(s)} scores")
    if not (np.isfinite(b).all() and np.isfinite(s).all()):
        raise WiderFaceError("boxes and scores must be finite numbers")
    if box_format == "xyxy":
        b = np.column_stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]])
    elif box_format != "xywh":
        raise WiderFaceError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}")
    rows = np.column_stack([b, s]) if len(b) else np.zeros((0, 5))
    return rows[np.argsort(-rows[:, 4], kind="stable")]


def _atomic_write(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class PRCurve:
    """One setting's precision/recall at the kit's score thresholds (for plotting).

    ``precision`` is NaN where no prediction passes the threshold (the kit's 0/0);
    ``proposals`` and ``true_positives`` are the summed ``img_pr_info`` columns.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    proposals: np.ndarray
    true_positives: np.ndarray
    num_faces: int


@dataclass(frozen=True)
class WiderFaceResult:
    """AP per setting (``ap["easy"]`` ...), the PR curves, and what was missing or invalid."""

    ap: dict[str, float]
    curves: dict[str, PRCurve]
    num_images: int
    num_faces: dict[str, int]
    num_predictions: int
    images_with_predictions: int
    missing: tuple[str, ...] = ()
    invalid: Mapping[str, str] = field(default_factory=dict)
    score_range: tuple[float, float] | None = None
    iou_thresh: float = IOU_THRESH

    def to_dict(self, curves: bool = False) -> dict[str, Any]:
        """JSON-ready summary (NaN -> None); ``curves=True`` adds the PR curves."""
        out: dict[str, Any] = {
            "ap": {s: _finite_or_none(v) for s, v in self.ap.items()},
            "num_images": self.num_images,
            "num_faces": dict(self.num_faces),
            "num_predictions": self.num_predictions,
            "images_with_predictions": self.images_with_predictions,
            "missing": list(self.missing),
            "invalid": dict(self.invalid),
            "score_range": list(self.score_range) if self.score_range else None,
            "iou_thresh": self.iou_thresh,
            "thresh_num": len(next(iter(self.curves.values())).thresholds) if self.curves else 0,
        }
        if curves:
            out["curves"] = {
                s: {
                    "thresholds": _jsonable(c.thresholds),
                    "precision": _jsonable(c.precision),
                    "recall": _jsonable(c.recall),
                    "proposals": c.proposals.astype(int).tolist(),
                    "true_positives": c.true_positives.astype(int).tolist(),
                }
                for s, c in self.curves.items()
            }
        return out


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _jsonable(values: np.ndarray) -> list[float | None]:
    return [_finite_or_none(v) for v in values.tolist()]


def kit_thresholds(thresh_num: int = THRESH_NUM) -> np.ndarray:
    """``1 - (t + 1) / thresh_num`` for t = 0..thresh_num-1, bit-identical to the kit's loop."""
    return 1.0 - (np.arange(thresh_num, dtype=np.float64) + 1.0) / thresh_num


def kit_iou(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
    """(m, n) IoU with the kit's conventions: ``x2 = x + w`` and ``+1`` pixel extents.

    Same operation order as the port's ``bbox_overlaps`` (union = pred area + gt area -
    intersection), so the >= 0.5 decisions agree bit for bit; no overlap (``iw <= 0`` or
    ``ih <= 0``) is 0.
    """
    p = _corners(pred_xywh)
    g = _corners(gt_xywh)
    iw = np.minimum(p[:, None, 2], g[None, :, 2]) - np.maximum(p[:, None, 0], g[None, :, 0]) + 1
    ih = np.minimum(p[:, None, 3], g[None, :, 3]) - np.maximum(p[:, None, 1], g[None, :, 1]) + 1
    valid = (iw > 0) & (ih > 0)
    inter = iw * ih
    p_area = (p[:, 2] - p[:, 0] + 1) * (p[:, 3] - p[:, 1] + 1)
    g_area = (g[:, 2] - g[:, 0] + 1) * (g[:, 3] - g[:, 1] + 1)
    union = p_area[:, None] + g_area[None, :] - inter
    out = np.zeros(inter.shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=valid)
    return out


def _corners(xywh: np.ndarray) -> np.ndarray:
    b = np.asarray(xywh, dtype=np.float64)[:, :4]
    return np.column_stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]])


def best_matches(
    pred: np.ndarray, gt_xywh: np.ndarray, iou_thresh: float = IOU_THRESH
) -> np.ndarray:
    """Per prediction, the index of its highest-IoU face if that IoU >= thresh, else -1.

    This is the kit's ``max``/``argmax`` (first face on ties); the ignore bookkeeping that
    follows it in ``image_eval`` depends only on this index, never on earlier predictions.
    """
    out = np.full(len(pred), -1, dtype=np.int64)
    if len(pred) == 0 or len(gt_xywh) == 0:
        return out
    step = max(1, _IOU_CHUNK // len(gt_xywh))
    for start in range(0, len(pred), step):
        iou = kit_iou(pred[start : start + step], gt_xywh)
        idx = iou.argmax(axis=1)
        hit = iou[np.arange(len(idx)), idx] >= iou_thresh
        out[start : start + step] = np.where(hit, idx, -1)
    return out


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """The kit's ``voc_ap``/``VOCap``: sentinels, precision envelope, sum of dR x P.

    The envelope ignores NaN precisions (thresholds with no proposal) like MATLAB's ``max``;
    those points have zero recall, so they never carry area in either kit.
    """
    mrec = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64), [0.0]))
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def normalize_scores(arrays: Iterable[np.ndarray]) -> tuple[float, float] | None:
    """Min and max score over all (N, 5) arrays (``None`` when there is no prediction)."""
    lo, hi = np.inf, -np.inf
    for a in arrays:
        if len(a):
            lo, hi = min(lo, float(a[:, 4].min())), max(hi, float(a[:, 4].max()))
    return (lo, hi) if lo <= hi else None


def _normalized(scores: np.ndarray, score_range: tuple[float, float]) -> np.ndarray:
    """``(s - min) / (max - min)``; all-equal scores map to 1.0 (the kit would divide by 0)."""
    lo, hi = score_range
    if hi > lo:
        return (scores - lo) / (hi - lo)
    return np.ones_like(scores)


def _prediction_array(value: Any, key: str) -> np.ndarray:
    """An in-memory prediction entry -> (N, 5) float64, rejecting what a file could not hold."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 5), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise WiderFaceError(
            f"predictions for {key}: expected (N, 5) x y w h score, got {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise WiderFaceError(f"predictions for {key}: non-finite values")
    return arr


def _gather(
    preds: Mapping[str, Mapping[str, Any]], gt: GroundTruth
) -> tuple[list[np.ndarray], list[str]]:
    """Per GT image, its prediction array (empty when absent) and the absent image names."""
    arrays: list[np.ndarray] = []
    missing: list[str] = []
    for event, image in gt.image_keys:
        value = preds.get(event, {}).get(image)
        if value is None:
            missing.append(f"{event}/{image}")
            arrays.append(np.zeros((0, 5), dtype=np.float64))
        else:
            arrays.append(_prediction_array(value, f"{event}/{image}"))
    return arrays, missing


def _match_all(
    arrays: list[np.ndarray], gt: GroundTruth, iou_thresh: float
) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores and global face index (-1: unmatched) of every evaluated prediction.

    Images without faces or without predictions are skipped, exactly like the kit's
    ``if len(gt_boxes) == 0 or len(pred_info) == 0: continue`` (their faces still count).
    """
    offsets = np.cumsum([0, *(len(b) for b in gt.boxes)])
    scores: list[np.ndarray] = []
    matches: list[np.ndarray] = []
    for i, (pred, boxes) in enumerate(zip(arrays, gt.boxes, strict=True)):
        if len(pred) == 0 or len(boxes) == 0:
            continue
        best = best_matches(pred, boxes, iou_thresh)
        scores.append(pred[:, 4])
        matches.append(np.where(best >= 0, best + offsets[i], -1))
    if not scores:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(scores), np.concatenate(matches)


def _count_at_or_above(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many ``values`` are >= each threshold (the kit's ``pred_info[:, 4] >= thresh``)."""
    ordered = np.sort(values)
    return len(ordered) - np.searchsorted(ordered, thresholds, side="left")


def _setting_curve(
    scores: np.ndarray, match: np.ndarray, keep: np.ndarray, thresholds: np.ndarray
) -> PRCurve:
    """Sum of the kit's ``img_pr_info`` over images, then ``dataset_pr_info``.

    proposals(t): predictions scoring >= t, except those whose best face is ignored.
    true positives(t): counted faces that are the best match of some prediction >= t (a
    face is recalled once; its other matches stay proposals, i.e. false positives).
    """
    matched = match >= 0
    ignored = np.zeros(len(match), dtype=bool)
    ignored[matched] = ~keep[match[matched]]
    proposals = _count_at_or_above(scores[~ignored], thresholds)
    hits = matched & ~ignored
    best_score = np.full(len(keep), -np.inf)
    np.maximum.at(best_score, match[hits], scores[hits])
    true_pos = _count_at_or_above(best_score[np.isfinite(best_score)], thresholds)
    num_faces = int(keep.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = true_pos / proposals.astype(np.float64)
        recall = true_pos / np.float64(num_faces)
    return PRCurve(thresholds, precision, recall, proposals, true_pos, num_faces)


def evaluate(
    predictions: str | os.PathLike[str] | Mapping[str, Mapping[str, Any]],
    gt: GroundTruth | str | os.PathLike[str],
    iou_thresh: float = IOU_THRESH,
    thresh_num: int = THRESH_NUM,
) -> WiderFaceResult:
    """Score predictions (a submission folder, or ``event -> image -> (N, 5)`` arrays).

    Returns AP for easy/medium/hard plus their PR curves. Images without predictions count
    as "detected nothing" (their faces stay in the recall denominator) and are listed in
    ``result.missing``; malformed files are in ``result.invalid``.
    """
    truth = gt if isinstance(gt, GroundTruth) else load_ground_truth(gt)
    if isinstance(predictions, (str, os.PathLike)):
        preds: Mapping[str, Mapping[str, Any]] = read_predictions(predictions, truth.image_keys)
    else:
        preds = predictions
    arrays, missing = _gather(preds, truth)
    invalid = dict(getattr(preds, "invalid", {}))
    score_range = normalize_scores(arrays)
    raw_scores, match = _match_all(arrays, truth, iou_thresh)
    scores = _normalized(raw_scores, score_range) if score_range else raw_scores
    thresholds = kit_thresholds(thresh_num)
    curves: dict[str, PRCurve] = {}
    for setting in SETTINGS:
        keep = np.concatenate(truth.keep[setting]) if truth.boxes else np.zeros(0, dtype=bool)
        curves[setting] = _setting_curve(scores, match, keep, thresholds)
    return WiderFaceResult(
        ap={s: voc_ap(c.recall, c.precision) for s, c in curves.items()},
        curves=curves,
        num_images=truth.num_images,
        num_faces={s: c.num_faces for s, c in curves.items()},
        num_predictions=int(sum(len(a) for a in arrays)),
        images_with_predictions=int(sum(1 for a in arrays if len(a))),
        missing=tuple(missing),
        invalid=invalid,
        score_range=score_range,
        iou_thresh=iou_thresh,
    )
