#!/usr/bin/env python3
"""Reference detections for the mobile contract (docs/mobile.md), from a ``.tflite``.

An app checks its integration by feeding the reference image to its embedded model and
comparing what it finds with the JSON this script writes. The image is synthetic (three
drawn faces on a smooth noise background, made here from a seed), so nothing copyrighted
ships with the project.

Everything between the image and the detections is implemented here with numpy, OpenCV's
resize and the LiteRT interpreter only, step by step as an app would (letterbox, normalise,
NHWC, quantise when the input is integer, dequantise outputs, decode unless the model
decodes in its graph, threshold, NMS, map back), independently of ``ffedge.decoder``; the
test suite checks both give the same faces.

    python scripts/mobile_reference.py model.tflite --json ref.json --image ref.png
    python scripts/mobile_reference.py model.tflite --check ref.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

SCORE_THRESHOLD = 0.5
NMS_IOU = 0.4
TOP_K = 5000  # candidates into NMS at most (highest scores)
MAX_DETECTIONS = 750  # faces out at most
IMAGE_SIZE = (480, 640)  # (H, W): a 4:3 camera frame, so the letterbox pads the bottom
# --check tolerances: pixels for boxes/landmarks, absolute for scores. Quantised models
# and other CPUs move values a little; the faces must not change.
TOLERANCES = {"fp32": (1.0, 0.01), "fp16": (2.0, 0.02), "int8": (6.0, 0.08)}


def reference_image(seed: int = 0) -> np.ndarray:
    """The 640x480 BGR reference image: three cartoon faces (about 180, 130 and 75 px
    tall) on blurred colour noise. Deterministic for a given OpenCV build; the PNG written
    by ``--image`` is the canonical copy for apps."""
    h, w = IMAGE_SIZE
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(60, 200, (6, 8, 3), dtype=np.uint8), (w, h),
                     interpolation=cv2.INTER_CUBIC)
    for cx, cy, r in ((160, 200, 70), (420, 180, 50), (530, 360, 30)):
        cv2.ellipse(img, (cx, cy), (r, int(r * 1.3)), 0, 0, 360, (140, 170, 215), -1)
        for dx in (-0.4, 0.4):
            ex, ey = int(cx + dx * r), int(cy - 0.25 * r)
            cv2.ellipse(img, (ex, ey), (int(0.18 * r), int(0.09 * r)), 0, 0, 360,
                        (255, 255, 255), -1)
            cv2.circle(img, (ex, ey), int(0.08 * r), (40, 30, 30), -1)
            cv2.line(img, (int(ex - 0.2 * r), int(cy - 0.45 * r)),
                     (int(ex + 0.2 * r), int(cy - 0.45 * r)), (50, 50, 70), max(1, int(0.05 * r)))
        cv2.line(img, (cx, int(cy - 0.1 * r)), (int(cx - 0.08 * r), int(cy + 0.2 * r)),
                 (110, 130, 180), max(1, int(0.04 * r)))
        cv2.ellipse(img, (cx, int(cy + 0.5 * r)), (int(0.3 * r), int(0.1 * r)), 0, 0, 360,
                    (90, 90, 170), -1)
        cv2.ellipse(img, (cx, int(cy - 1.0 * r)), (int(1.05 * r), int(0.5 * r)), 0, 180, 360,
                    (30, 40, 60), -1)
    return img


def read_contract(path: Path) -> dict[str, Any]:
    """The artifact's metadata: the embedded ``ffedge`` entry, else the ``.json`` sidecar."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ffedge.artifact.formats import read_tflite as read_embedded

    props = read_embedded(path.read_bytes())
    if props:
        return {k.split(".", 1)[1]: _maybe_json(v) for k, v in props.items()}
    side = path.with_name(path.name + ".json")
    if side.is_file():
        return json.loads(side.read_text())
    raise SystemExit(f"{path} has no FeatherFace metadata (embedded or sidecar)")


def _maybe_json(v: str) -> Any:
    try:
        return json.loads(v)
    except ValueError:
        return v


def letterbox(image: np.ndarray, size: tuple[int, int], pad: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Scale to fit ``size`` (H, W) keeping aspect, pad bottom/right.

    Returns (canvas, [sx, sy]): input pixel = original pixel * s (per axis, after rounding
    the resized size)."""
    h, w = image.shape[:2]
    th, tw = size
    scale = min(th / h, tw / w)
    nh, nw = max(1, min(th, round(h * scale))), max(1, min(tw, round(w * scale)))
    canvas = np.full((th, tw, 3), pad, dtype=np.uint8)
    canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) \
        if (nh, nw) != (h, w) else image
    return canvas, np.array([nw / w, nh / h], dtype=np.float32)


def priors(spec: dict[str, Any]) -> np.ndarray:
    """(P, 4) cx, cy, w, h normalised: level, row, column, min size order."""
    h, w = spec["input_size"]
    ps = spec["priors"]
    out = []
    for step, sizes in zip(ps["steps"], ps["min_sizes"]):
        fh, fw = -(-h // step), -(-w // step)
        for i in range(fh):
            for j in range(fw):
                for m in sizes:
                    out.append(((j + 0.5) * step / w, (i + 0.5) * step / h, m / w, m / h))
    return np.asarray(out, dtype=np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, max_keep: int = MAX_DETECTIONS
        ) -> list[int]:
    """Greedy NMS: by descending score (ties: lower index first), a box is dropped when its
    IoU (continuous coordinates, no +1) with a kept box exceeds ``iou``."""
    order = list(np.argsort(-scores, kind="stable"))
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    keep: list[int] = []
    alive = np.ones(len(order), dtype=bool)
    ranked = boxes[order]
    ranked_area = area[order]
    for pos in range(len(order)):
        if not alive[pos]:
            continue
        keep.append(int(order[pos]))
        if len(keep) == max_keep:
            break
        tl = np.maximum(ranked[pos, :2], ranked[pos + 1:, :2])
        br = np.minimum(ranked[pos, 2:], ranked[pos + 1:, 2:])
        inter = np.prod(np.clip(br - tl, 0, None), axis=1)
        union = ranked_area[pos] + ranked_area[pos + 1:] - inter
        over = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0) > iou
        alive[pos + 1:] &= ~over
    return keep


def run_model(path: Path, nhwc: np.ndarray, threads: int = 2) -> dict[str, np.ndarray]:
    """One inference; integer tensors (de)quantised with their own scale and zero point."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    runner = it.get_signature_runner()
    inp = runner.get_input_details()["images"]
    x = nhwc[None].astype(np.float32)
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(inp["dtype"])
    outs = runner(images=x)
    details = runner.get_output_details()
    result = {}
    for name, value in outs.items():
        scale, zero = details[name]["quantization"]
        result[name] = value.astype(np.float32) if value.dtype == np.float32 else \
            (value.astype(np.float32) - zero) * np.float32(scale)
    return result


def detect(path: Path, image: np.ndarray, score_threshold: float = SCORE_THRESHOLD,
           nms_iou: float = NMS_IOU, threads: int = 2) -> list[dict[str, Any]]:
    """The whole app-side pipeline; detections in original-image pixels, best first."""
    meta = read_contract(path)
    spec = meta["spec"]
    h, w = spec["input_size"]
    canvas, scale = letterbox(image, (h, w), spec.get("pad_value", 0.0))
    x = canvas.astype(np.float32)
    if spec["channel_order"] == "RGB":
        x = x[:, :, ::-1]
    x = (x - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    out = run_model(path, x, threads)
    size = np.array([w, h, w, h], dtype=np.float32)
    if meta.get("decode_in_graph"):
        boxes, face, points = out["boxes"][0], out["scores"][0], out["landmarks"][0]
    else:
        p = priors(spec)
        v0, v1 = spec["priors"]["variances"]
        d, lm = out["boxes"][0], out["landmarks"][0]
        wh = p[:, 2:] * np.exp(d[:, 2:] * np.float32(v1))
        x1y1 = p[:, :2] + d[:, :2] * np.float32(v0) * p[:, 2:] - wh / 2
        boxes = np.concatenate([x1y1, x1y1 + wh], axis=1)
        points = (p[:, None, :2] + lm.reshape(-1, 5, 2) * np.float32(v0) * p[:, None, 2:]).reshape(-1, 10)
        face = out["scores"][0][:, 1]
    cand = np.flatnonzero(face > score_threshold)
    cand = cand[np.argsort(-face[cand], kind="stable")[:TOP_K]]
    px = boxes[cand] * size
    keep = [int(cand[k]) for k in nms(px, face[cand], nms_iou)]
    dets = []
    oh, ow = image.shape[:2]
    for i in keep:
        b = boxes[i] * size / np.tile(scale, 2)
        b = np.clip(b, 0, [ow, oh, ow, oh])
        pts = points[i].reshape(5, 2) * size[:2] / scale
        dets.append({"box": [round(float(v), 2) for v in b], "score": round(float(face[i]), 4),
                     "landmarks": [round(float(v), 2) for v in pts.ravel()]})
    return dets


def reference(path: Path, threads: int = 2) -> dict[str, Any]:
    img = reference_image()
    meta = read_contract(path)
    return {
        "artifact": path.name, "model": meta["model"], "precision": meta["precision"],
        "decode_in_graph": bool(meta.get("decode_in_graph", False)),
        "image": {"size_hw": list(img.shape[:2]),
                  "sha256": hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()},
        "score_threshold": SCORE_THRESHOLD, "nms_iou": NMS_IOU,
        "detections": detect(path, img, threads=threads),
    }


def compare(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Differences beyond the precision's tolerances, as readable lines (empty: match)."""
    px, ds = TOLERANCES.get(expected.get("precision", "fp32"), TOLERANCES["int8"])
    e, g = expected["detections"], got["detections"]
    if len(e) != len(g):
        return [f"{len(g)} faces, expected {len(e)}"]
    problems = []
    for k, (a, b) in enumerate(zip(e, g)):
        db = max(abs(x - y) for x, y in zip(a["box"] + a["landmarks"], b["box"] + b["landmarks"]))
        if db > px or abs(a["score"] - b["score"]) > ds:
            problems.append(f"face {k}: coordinates off by {db:.2f} px, score "
                            f"{b['score']:.4f} vs {a['score']:.4f}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--json", type=Path, help="write the reference detections here")
    ap.add_argument("--image", type=Path, help="write the reference image (PNG) here")
    ap.add_argument("--check", type=Path, help="compare with a reference JSON; exit 1 on mismatch")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.image:
        cv2.imwrite(str(args.image), reference_image())
    ref = reference(args.artifact, args.threads)
    text = json.dumps(ref, indent=2) + "\n"
    if args.json:
        args.json.write_text(text)
    if args.check:
        problems = compare(json.loads(args.check.read_text()), ref)
        for p in problems:
            print(p, file=sys.stderr)
        print("reference check: " + ("FAIL" if problems else "OK"))
        return 1 if problems else 0
    if not args.json:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
