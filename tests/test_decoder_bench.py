"""Decoder speed: pytest-benchmark cases (run with ``--benchmark-enable``) and the
``ffbench decoder`` command. Timings only *measure* here, except one generous ratio check
on a dense crowd where the reference is ~10x slower; the numbers live in docs/decoder.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ffedge.benchmarks.decoder_bench import (
    Case,
    ours_fn,
    reference_fn,
    resample_anchors,
    synthetic_case,
    three_anchor_spec,
    time_case,
    v1_cases,
)
from ffedge.cli.ffbench import main as ffbench
from ffedge.spec import DeploymentSpec

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CROWD = SHARED / "images" / "crowd_b.jpg"


@pytest.fixture(scope="module")
def nano_synthetic() -> Case:
    case = synthetic_case(three_anchor_spec(), seed=2)
    assert case.scores.shape[0] == 25_200
    return case


@pytest.fixture(scope="module")
def real_cases() -> dict[str, Case]:
    from ffedge.weights import bundled_checkpoint

    if not CROWD.is_file():
        pytest.skip(f"needs the crowd photo {CROWD} (absent outside the dev setup)")
    v1 = v1_cases([CROWD], bundled_checkpoint("v1"), threads=1)[0]
    return {"v1": v1, "nano_b": resample_anchors(v1, three_anchor_spec())}


@pytest.mark.parametrize("threshold", [0.5, 0.02])
@pytest.mark.parametrize("side", ["ours", "reference"])
def test_bench_25200_priors_synthetic(benchmark, nano_synthetic, side, threshold):
    fn = ours_fn(nano_synthetic, threshold) if side == "ours" else reference_fn(nano_synthetic, threshold)
    result = benchmark(fn)
    check_decoded(nano_synthetic, threshold, side, result, min_faces=40)  # 58 of 60 drawn


def check_decoded(case: Case, threshold: float, side: str, result, min_faces: int) -> None:
    """What the timed call returned is a real decode: ours equals the continuous-IoU
    reference bit for bit, the classic (+1 px IoU) loop keeps within 2 % of it, and faces
    above the threshold were found."""
    cont = reference_fn(case, threshold, plus_one=False)()
    if side == "ours":
        boxes, scores = result.boxes, result.scores
        assert np.array_equal(boxes, cont[0]) and np.array_equal(scores, cont[1])
        assert np.array_equal(result.landmarks, cont[2])
    else:
        boxes, scores = result[0], result[1]
        assert abs(len(scores) - len(cont[1])) <= max(1, len(cont[1]) // 50)
    assert len(scores) >= min_faces
    assert boxes.shape == (len(scores), 4) and bool((scores > threshold - 1e-6).all())


@pytest.mark.shared
@pytest.mark.parametrize("threshold", [0.5, 0.02])
@pytest.mark.parametrize("model", ["v1", "nano_b"])
@pytest.mark.parametrize("side", ["ours", "reference"])
def test_bench_real_crowd(benchmark, real_cases, model, side, threshold):
    case = real_cases[model]
    fn = ours_fn(case, threshold) if side == "ours" else reference_fn(case, threshold)
    check_decoded(case, threshold, side, benchmark(fn), min_faces=20)  # crowd_b: 40 at 0.5


def test_dense_crowd_at_low_threshold_beats_the_reference(nano_synthetic):
    t = time_case(nano_synthetic, 0.02, repeats=15, ref_repeats=5)
    assert t.identical_to_reference
    assert t.candidates > 1000 and t.kept > 100
    assert t.speedup > 2.0, t  # measured ~10x; generous for a noisy 2-core machine


def test_resampled_three_anchor_outputs_keep_v1_faces(real_cases):
    v1, nano = real_cases["v1"], real_cases["nano_b"]
    assert nano.scores.shape[0] == nano.spec.priors.num_priors(*nano.transform.input_size)
    a = time_case(v1, 0.5, repeats=2, ref_repeats=2)
    b = time_case(nano, 0.5, repeats=2, ref_repeats=2)
    assert a.identical_to_reference and b.identical_to_reference
    assert abs(a.kept - b.kept) <= max(3, a.kept // 5)  # same photo, about the same faces


def test_synthetic_case_for_any_spec():
    case = synthetic_case(DeploymentSpec(input_size=(320, 480)), faces=10, seed=0)
    t = time_case(case, 0.5, repeats=2, ref_repeats=2)
    assert t.priors == case.spec.num_priors and t.identical_to_reference and t.kept >= 3


@pytest.mark.shared
def test_ffbench_decoder_command(capsys):
    if not (SHARED / "checkpoints" / "featherface_v1_widerface.pth").is_file():
        pytest.skip(f"needs the V1 checkpoint in {SHARED} (absent outside the dev setup)")
    rc = ffbench(["decoder", "--images", "crowd_a", "--thresholds", "0.5", "--repeats", "3",
                  "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| v1/crowd_a | 16,800 | 0.5 |" in out and "| nano_b/crowd_a | 25,200 | 0.5 |" in out


def test_ffbench_decoder_without_shared(tmp_path, capsys):
    rc = ffbench(["decoder", "--shared", str(tmp_path), "--thresholds", "0.5", "--repeats", "2",
                  "--json"])
    assert rc == 0
    assert '"nano_b/synthetic"' in capsys.readouterr().out
