"""The shared decoder: priors, decode/encode, exact NMS, mapping back, results, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ffedge.decoder import (
    Decoder,
    Detections,
    decode_boxes,
    decode_landmarks,
    encode_boxes,
    encode_landmarks,
    face_scores,
    generate_priors,
    preprocess,
)
from ffedge.decoder.decode import logits_to_face_probability
from ffedge.decoder.nms import nms
from ffedge.decoder.reference import py_cpu_nms, reference_postprocess
from ffedge.errors import FFEdgeError
from ffedge.spec import DeploymentSpec, PriorSpec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CHECKPOINT = SHARED / "checkpoints" / "featherface_v1_widerface.pth"
V1_PRIORS = PriorSpec(steps=(8, 16, 32), min_sizes=((16, 32), (64, 128), (256, 512)))
THREE_ANCHORS = PriorSpec(steps=(8, 16, 32), min_sizes=((8, 16, 32), (48, 64, 96), (128, 256, 512)))
TINY = PriorSpec(steps=(32, 64), min_sizes=((16, 32), (64,)))


# ------------------------------------------------------------------------------ priors


def test_tiny_spec_priors_by_hand():
    p = generate_priors(TINY, 64, 64)
    # level 0: 2x2 cells x 2 sizes, then level 1: 1 cell x 1 size
    expected = np.array([
        [0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.5, 0.5],   # row 0, col 0
        [0.75, 0.25, 0.25, 0.25], [0.75, 0.25, 0.5, 0.5],   # row 0, col 1
        [0.25, 0.75, 0.25, 0.25], [0.25, 0.75, 0.5, 0.5],   # row 1, col 0
        [0.75, 0.75, 0.25, 0.25], [0.75, 0.75, 0.5, 0.5],   # row 1, col 1
        [0.5, 0.5, 1.0, 1.0],                                # level 1
    ], dtype=np.float32)
    assert p.dtype == np.float32
    np.testing.assert_array_equal(p, expected)


def test_non_square_priors_normalise_by_width_and_height():
    p = generate_priors(TINY, 64, 128)  # H=64, W=128: level 0 is 2 rows x 4 cols
    assert p.shape == (2 * 4 * 2 + 1 * 2 * 1, 4)
    np.testing.assert_allclose(p[2], [48 / 128, 16 / 64, 16 / 128, 16 / 64])  # row 0, col 1
    np.testing.assert_allclose(p[8], [16 / 128, 48 / 64, 16 / 128, 16 / 64])  # row 1, col 0
    np.testing.assert_allclose(p[-1], [96 / 128, 32 / 64, 64 / 128, 64 / 64])


def test_prior_counts_and_ceil_feature_sizes():
    assert generate_priors(V1_PRIORS, 640, 640).shape == (16_800, 4)
    assert generate_priors(THREE_ANCHORS, 640, 640).shape == (25_200, 4)
    for h, w in [(480, 800), (736, 1280), (32, 32), (96, 160)]:
        assert generate_priors(V1_PRIORS, h, w).shape[0] == V1_PRIORS.num_priors(h, w)
    # 32x32 at steps 8/16/32: 4x4, 2x2, 1x1 cells x 2 anchors
    assert V1_PRIORS.num_priors(32, 32) == 2 * (16 + 4 + 1)


def test_priors_are_cached_read_only_and_clip():
    a = generate_priors(V1_PRIORS, 640, 640)
    assert generate_priors(V1_PRIORS, 640, 640) is a
    with pytest.raises(ValueError):
        a[0, 0] = 1.0
    clipped = generate_priors(PriorSpec(steps=(32,), min_sizes=((128,),), clip=True), 64, 64)
    assert clipped.max() == 1.0 and clipped.min() > 0
    unclipped = generate_priors(PriorSpec(steps=(32,), min_sizes=((128,),)), 64, 64)
    assert unclipped[:, 2:].max() == 2.0


# ------------------------------------------------------------------------------ decode


def test_zero_deltas_give_prior_boxes_and_centres():
    pri = generate_priors(TINY, 64, 64)
    boxes = decode_boxes(np.zeros((9, 4), np.float32), pri, (0.1, 0.2))
    np.testing.assert_allclose(boxes[0], [0.125, 0.125, 0.375, 0.375])
    np.testing.assert_allclose(boxes[-1], [0.0, 0.0, 1.0, 1.0])
    pts = decode_landmarks(np.zeros((9, 10), np.float32), pri, (0.1, 0.2))
    assert pts.shape == (9, 5, 2)
    np.testing.assert_allclose(pts[2], np.tile([0.75, 0.25], (5, 1)))


def test_decode_formula_by_hand():
    prior = np.array([[0.5, 0.5, 0.2, 0.1]], np.float32)
    d = np.array([[1.0, -2.0, np.log(2.0) / 0.2, 0.0]], np.float32)
    # cx = 0.5 + 1*0.1*0.2 = 0.52, cy = 0.5 - 2*0.1*0.1 = 0.48, w = 0.4, h = 0.1
    np.testing.assert_allclose(decode_boxes(d, prior, (0.1, 0.2)), [[0.32, 0.43, 0.72, 0.53]],
                               atol=1e-6)
    lm = np.array([[1, 2, -1, 0, 0, 0, 3, 3, 0, -5]], np.float32)
    np.testing.assert_allclose(decode_landmarks(lm, prior, (0.1, 0.2))[0, :2],
                               [[0.52, 0.52], [0.48, 0.5]], atol=1e-6)


def test_decode_encode_round_trip():
    rng = np.random.default_rng(0)
    pri = generate_priors(V1_PRIORS, 320, 480)
    d = rng.normal(0, 1.0, (pri.shape[0], 4)).astype(np.float32)
    back = encode_boxes(decode_boxes(d, pri, (0.1, 0.2)), pri, (0.1, 0.2))
    np.testing.assert_allclose(back, d, atol=2e-3)
    lm = rng.normal(0, 1.0, (pri.shape[0], 10)).astype(np.float32)
    lm_back = encode_landmarks(decode_landmarks(lm, pri, (0.1, 0.2)), pri, (0.1, 0.2))
    np.testing.assert_allclose(lm_back, lm, atol=2e-3)
    boxes = np.array([[0.1, 0.2, 0.3, 0.5]], np.float32)
    p1 = pri[:1]
    np.testing.assert_allclose(decode_boxes(encode_boxes(boxes, p1, (0.1, 0.2)), p1, (0.1, 0.2)),
                               boxes, atol=1e-6)


def test_scores_kind_is_explicit():
    logits = np.array([[2.0, -1.0], [-3.0, 4.0]], np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(face_scores(logits, "logits"), probs[:, 1], rtol=1e-6)
    np.testing.assert_array_equal(face_scores(probs, "probabilities"), probs[:, 1].astype(np.float32))
    with pytest.raises(ValueError, match="scores_are"):
        face_scores(probs, "softmax")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Decoder(DeploymentSpec())(np.zeros((1, 16800, 4)), np.zeros((1, 16800, 2)),
                                  np.zeros((1, 16800, 10)))  # type: ignore[call-arg]
    # huge logit gaps: no overflow warnings, exact 0 / 1
    with np.errstate(all="raise"):
        p = logits_to_face_probability(np.array([200.0, -200.0], np.float32),
                                       np.array([-200.0, 200.0], np.float32))
    np.testing.assert_array_equal(p, [0.0, 1.0])


# ------------------------------------------------------------------------------ NMS


def random_boxes(seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Random crowds with exact score ties, duplicate boxes, integer and float coordinates."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 250))
    xy = rng.uniform(0, 300, (n, 2))
    wh = rng.uniform(0.5, 80, (n, 2))
    if seed % 3 == 0:
        xy, wh = np.round(xy), np.round(wh) + 1
    boxes = np.hstack([xy, xy + wh]).astype(np.float32)
    if seed % 2:
        scores = rng.choice(np.linspace(0.05, 1.0, 8), n).astype(np.float32)  # many ties
    else:
        scores = rng.random(n).astype(np.float32)
    if n > 4:
        boxes[rng.integers(0, n, n // 4)] = boxes[rng.integers(0, n, n // 4)]  # duplicates
        scores[rng.integers(0, n, n // 8)] = scores[0]
    t = float(rng.choice([0.0, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0]))
    return boxes, scores, t


@pytest.mark.parametrize("block", range(4))
def test_nms_keep_set_equals_reference_on_random_boxes(block):
    for seed in range(block * 100, block * 100 + 100):
        boxes, scores, t = random_boxes(seed)
        fast = nms(boxes, scores, t)
        ref = py_cpu_nms(np.hstack([boxes, scores[:, None]]), t, plus_one=False)
        assert fast.tolist() == ref, f"seed {seed}, threshold {t}"


def test_nms_ties_keep_the_lower_index_and_duplicates_collapse():
    boxes = np.array([[0, 0, 10, 10]] * 3 + [[100, 100, 110, 110]], np.float32)
    scores = np.array([0.9, 0.9, 0.9, 0.9], np.float32)
    assert nms(boxes, scores, 0.4).tolist() == [0, 3]
    assert py_cpu_nms(np.hstack([boxes, scores[:, None]]), 0.4, plus_one=False) == [0, 3]


def test_iou_conventions_differ_exactly_where_expected():
    boxes = np.array([[0, 0, 9, 9], [5, 0, 14, 9]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    dets = np.hstack([boxes, scores[:, None]])
    # continuous IoU = 36 / 126 = 0.286; with +1 pixel: 50 / 150 = 0.333
    assert nms(boxes, scores, 0.3).tolist() == [0, 1]
    assert py_cpu_nms(dets, 0.3, plus_one=False) == [0, 1]
    assert py_cpu_nms(dets, 0.3, plus_one=True) == [0]
    # exactly at the threshold a box is kept (suppression needs IoU > threshold)
    half = np.array([[0, 0, 3, 1], [1, 0, 4, 1]], np.float32)  # IoU = 2 / 4
    assert nms(half, scores, 0.5).tolist() == [0, 1]


def test_nms_edge_cases():
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32)).size == 0
    assert nms(np.array([[1, 1, 5, 5]], np.float32), np.array([0.3], np.float32)).tolist() == [0]
    boxes, scores, _ = random_boxes(7)
    full = nms(boxes, scores, 0.4)
    assert nms(boxes, scores, 0.4, max_keep=3).tolist() == full[:3].tolist()
    with pytest.raises(ValueError):
        nms(boxes, scores, -0.1)


# ------------------------------------------------------------------------------ decoder


def synthetic_outputs(spec: DeploymentSpec, seed: int, faces: int = 30):
    from ffedge.benchmarks.decoder_bench import synthetic_case

    c = synthetic_case(spec, faces=faces, seed=seed)
    return c.boxes, c.scores, c.landmarks


def test_decoder_equals_reference_pipeline_on_synthetic_crowds():
    spec = DeploymentSpec(input_size=(320, 480), priors=V1_PRIORS)
    for seed in range(3):
        b, s, lm = synthetic_outputs(spec, seed)
        for thr in (0.5, 0.02):
            dec = Decoder(spec, score_threshold=thr, clip=False)
            got = dec.decode_one(b, s, lm, scores_are="probabilities")
            rb, rs, rl = reference_postprocess(b, s, lm, spec.priors, spec.input_size,
                                               "probabilities", thr, plus_one=False)
            np.testing.assert_array_equal(got.boxes, rb)
            np.testing.assert_array_equal(got.scores, rs)
            np.testing.assert_array_equal(got.landmarks, rl)


def test_logits_and_probabilities_agree():
    spec = DeploymentSpec(input_size=(320, 320), priors=V1_PRIORS)
    b, s, lm = synthetic_outputs(spec, 4)
    rng = np.random.default_rng(0)
    bg = rng.normal(0, 1, s.shape[0]).astype(np.float32)
    odds = np.clip(s[:, 1], 1e-6, 1 - 1e-6) / np.clip(s[:, 0], 1e-6, 1 - 1e-6)
    fg = (bg + np.log(odds)).astype(np.float32)
    logits = np.stack([bg, fg], 1)
    probs = logits_to_face_probability(bg, fg)
    as_probs = np.stack([1 - probs, probs], 1)
    for thr in (0.5, 0.02, 0.9):
        dec = Decoder(spec, score_threshold=thr)
        a = dec.decode_one(b, logits, lm, scores_are="logits")
        c = dec.decode_one(b, as_probs, lm, scores_are="probabilities")
        assert len(a) > 0
        assert a == c


def test_top_k_and_max_detections():
    spec = DeploymentSpec(input_size=(320, 320), priors=V1_PRIORS)
    b, s, lm = synthetic_outputs(spec, 5, faces=40)
    full = Decoder(spec, score_threshold=0.02, max_detections=None).decode_one(
        b, s, lm, scores_are="probabilities")
    capped = Decoder(spec, score_threshold=0.02, max_detections=7).decode_one(
        b, s, lm, scores_are="probabilities")
    assert len(capped) == 7 and capped == full[:7]
    small_k = Decoder(spec, score_threshold=0.02, top_k=50, clip=False).decode_one(
        b, s, lm, scores_are="probabilities")
    ref = reference_postprocess(b, s, lm, spec.priors, spec.input_size, "probabilities", 0.02,
                                top_k=50, plus_one=False)
    np.testing.assert_array_equal(small_k.boxes, ref[0])
    assert len(small_k) <= 50


def test_empty_below_threshold_single_candidate_and_empty_batch():
    spec = DeploymentSpec(input_size=(64, 64), priors=TINY)
    p = 9
    boxes = np.zeros((1, p, 4), np.float32)
    lms = np.zeros((1, p, 10), np.float32)
    scores = np.tile(np.array([0.99, 0.01], np.float32), (1, p, 1))
    dec = Decoder(spec, score_threshold=0.5)
    (none,) = dec(boxes, scores, lms, scores_are="probabilities")
    assert len(none) == 0 and none.boxes.shape == (0, 4) and none.landmarks.shape == (0, 5, 2)
    assert none.to_dict()["faces"] == []
    scores[0, 4] = [0.1, 0.9]
    (one,) = dec(boxes, scores, lms, scores_are="probabilities")
    assert len(one) == 1
    np.testing.assert_allclose(one.boxes[0], [8, 40, 24, 56])  # prior 4: 16 px at (16, 48)
    np.testing.assert_allclose(one.landmarks[0], np.tile([16, 48], (5, 1)))
    assert dec(boxes[:0], scores[:0], lms[:0], scores_are="probabilities") == []
    with pytest.raises(FFEdgeError, match="priors"):
        dec(boxes[:, :5], scores[:, :5], lms[:, :5], scores_are="probabilities")


def test_batched_input_gives_one_result_per_image():
    spec = DeploymentSpec(input_size=(320, 320), priors=V1_PRIORS)
    outs = [synthetic_outputs(spec, seed) for seed in (10, 11, 12)]
    b, s, lm = (np.stack([o[k] for o in outs]) for k in range(3))
    dec = Decoder(spec, score_threshold=0.5)
    batched = dec(b, s, lm, scores_are="probabilities")
    assert len(batched) == 3
    for k in range(3):
        assert batched[k] == dec.decode_one(*outs[k], scores_are="probabilities")
    assert len({len(d) for d in batched}) > 1 or batched[0] != batched[1]


# ------------------------------------------------------------------------------ mapping


def crafted_outputs(spec: DeploymentSpec, size: tuple[int, int], box_in: np.ndarray,
                    prior_index: int):
    """Raw outputs whose only face is ``box_in`` (input pixels) on prior ``prior_index``."""
    h, w = size
    pri = generate_priors(spec.priors, h, w)
    p = pri.shape[0]
    scale = np.array([w, h, w, h], np.float32)
    boxes = np.zeros((1, p, 4), np.float32)
    boxes[0, prior_index] = encode_boxes(box_in[None] / scale, pri[prior_index:prior_index + 1],
                                         spec.priors.variances)[0]
    scores = np.tile(np.array([0.98, 0.02], np.float32), (1, p, 1))
    scores[0, prior_index] = [0.03, 0.97]
    corners = box_in[[0, 1, 2, 1, 0, 3, 2, 3]].reshape(4, 2)
    pts = np.vstack([corners, ((box_in[:2] + box_in[2:]) / 2)[None]])  # 4 corners + centre
    lms = np.zeros((1, p, 10), np.float32)
    lms[0, prior_index] = encode_landmarks(pts[None] / scale[:2], pri[prior_index:prior_index + 1],
                                           spec.priors.variances)[0]
    return boxes, scores, lms, pts


@pytest.mark.parametrize("mode", ["letterbox", "resize", "original"])
def test_known_box_maps_back_to_the_original_image(mode):
    spec = DeploymentSpec(input_size=(320, 320), priors=V1_PRIORS)
    image = np.zeros((150, 250, 3), np.uint8)  # non-square original (H=150, W=250)
    _, t = preprocess(image, spec, mode=mode)
    original_box = np.array([40.0, 30.0, 120.0, 110.0], np.float32)
    # the forward mapping: input pixel = original pixel * scale (+ pad)
    box_in = original_box * np.array([t.scale_x, t.scale_y, t.scale_x, t.scale_y], np.float32)
    box_in[0::2] += t.pad_x
    box_in[1::2] += t.pad_y
    pri = generate_priors(spec.priors, *t.input_size)
    centre = (box_in[:2] + box_in[2:]) / 2 / np.array(t.input_size[::-1])
    prior_index = int(np.argmin(np.abs(pri[:, :2] - centre).sum(1)))
    b, s, lm, pts_in = crafted_outputs(spec, t.input_size, box_in, prior_index)
    (dets,) = Decoder(spec, score_threshold=0.5)(b, s, lm, [t], scores_are="probabilities")
    assert len(dets) == 1 and dets.image_size == (150, 250)
    np.testing.assert_allclose(dets.boxes[0], original_box, atol=2e-3)
    expected_pts = np.array([[40, 30], [120, 30], [40, 110], [120, 110], [80, 70]], np.float32)
    np.testing.assert_allclose(dets.landmarks[0], expected_pts, atol=2e-3)
    if mode == "resize":
        assert t.scale_x != t.scale_y  # the non-uniform case really is exercised


def test_boxes_are_clipped_to_the_original_image():
    spec = DeploymentSpec(input_size=(320, 320), priors=V1_PRIORS)
    _, t = preprocess(np.zeros((150, 250, 3), np.uint8), spec, mode="letterbox")
    box_in = np.array([-20.0, -10.0, 60.0, 50.0], np.float32)
    b, s, lm, _ = crafted_outputs(spec, t.input_size, box_in, 0)
    (d,) = Decoder(spec)(b, s, lm, [t], scores_are="probabilities")
    assert d.boxes[0, 0] == 0 and d.boxes[0, 1] == 0
    (raw,) = Decoder(spec, clip=False)(b, s, lm, [t], scores_are="probabilities")
    assert raw.boxes[0, 0] < 0


# ------------------------------------------------------------------------------ results


def test_detections_json_round_trip():
    spec = DeploymentSpec(input_size=(320, 320), priors=V1_PRIORS)
    d = Decoder(spec).decode_one(*synthetic_outputs(spec, 3), scores_are="probabilities")
    assert len(d) > 0
    text = d.to_json()
    doc = json.loads(text)
    assert doc["count"] == len(d) and set(doc["faces"][0]) == {"box", "score", "landmarks"}
    assert Detections.from_json(text) == d  # bit-exact float32 round trip
    assert Detections.from_dict(Detections().to_dict()) == Detections()
    assert len(d[d.scores > 0.9]) == int((d.scores > 0.9).sum())


# ------------------------------------------------------------------------------ no torch


def test_decoder_imports_and_decodes_without_torch():
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # any "import torch" now raises ImportError
        import numpy as np
        from ffedge.decoder import Decoder, preprocess
        from ffedge.decoder.reference import reference_postprocess
        from ffedge.spec import DeploymentSpec
        spec = DeploymentSpec(input_size=(64, 64))
        p = spec.num_priors
        s = np.tile(np.array([0.9, 0.1], np.float32), (1, p, 1)); s[0, 3] = [0.2, 0.8]
        x, t = preprocess(np.zeros((48, 80, 3), np.uint8), spec)
        (d,) = Decoder(spec)(np.zeros((1, p, 4)), s, np.zeros((1, p, 10)), [t],
                             scores_are="probabilities")
        assert len(d) == 1, d
        assert sys.modules["torch"] is None
        print("ok", d.to_json())
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")


def test_no_torch_import_in_decoder_sources():
    for f in (ROOT / "ffedge" / "decoder").glob("*.py"):
        text = f.read_text()
        assert "import torch" not in text and "from torch" not in text, f.name


# ------------------------------------------------------------------------------ real model


@pytest.fixture(scope="module")
def v1_outputs():
    if not CHECKPOINT.is_file():
        pytest.skip(f"needs the V1 checkpoint in {SHARED} (absent outside the dev setup)")
    from ffedge.imageio import read_image
    from ffedge.runtimes import load_runner

    runner = load_runner(model="v1", checkpoint=CHECKPOINT, threads=1)
    out = {}
    for name in ("crowd_a", "crowd_b", "crowd_tiny_faces", "family_group"):
        x, t = preprocess(read_image(SHARED / "images" / f"{name}.jpg"), runner.spec)
        out[name] = (runner.spec, runner.infer(x[None]), t)
    return out


@pytest.mark.shared
@pytest.mark.parametrize("threshold", [0.5, 0.02])
def test_real_v1_outputs_match_reference_exactly(v1_outputs, threshold):
    for name, (spec, (b, s, lm), t) in v1_outputs.items():
        (d,) = Decoder(spec, score_threshold=threshold, clip=False)(
            b, s, lm, [t], scores_are="probabilities")
        rb, rs, rl = reference_postprocess(b[0], s[0], lm[0], spec.priors, t.input_size,
                                           "probabilities", threshold, plus_one=False)
        assert len(d) == len(rs) > 0, name
        np.testing.assert_array_equal(d.boxes, t.boxes_to_original(rb, clip=False))
        np.testing.assert_array_equal(d.scores, rs)
        np.testing.assert_array_equal(d.landmarks, t.points_to_original(rl))
        # and the keep-set of the NMS alone, on the decoded candidates
        scale = np.array([*t.input_size[::-1]] * 2, np.float32)
        idx = np.flatnonzero(s[0, :, 1] > np.float32(threshold))
        pri = generate_priors(spec.priors, *t.input_size)
        boxes = decode_boxes(b[0, idx], pri[idx], spec.priors.variances) * scale
        dets = np.hstack([boxes, s[0, idx, 1:2]])
        assert nms(boxes, s[0, idx, 1], 0.4).tolist() == py_cpu_nms(dets, 0.4, plus_one=False)


def test_float64_and_float16_outputs_decode_like_float32():
    spec = DeploymentSpec(input_size=(320, 320), priors=V1_PRIORS)
    b, s, lm = synthetic_outputs(spec, 6)
    dec = Decoder(spec, score_threshold=0.3)
    ref = dec.decode_one(b, s, lm, scores_are="probabilities")
    wide = dec.decode_one(b.astype(np.float64), s.astype(np.float64), lm.astype(np.float64),
                          scores_are="probabilities")
    assert wide == ref
    half = dec.decode_one(b.astype(np.float16), s.astype(np.float16), lm.astype(np.float16),
                          scores_are="probabilities")
    assert half.boxes.dtype == np.float32 and abs(len(half) - len(ref)) <= 2
