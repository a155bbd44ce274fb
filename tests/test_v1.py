"""FeatherFace V1 with the published WIDER FACE checkpoint: loads strictly, finds the faces."""

from __future__ import annotations

import pytest
import torch

from ffedge.decoder import Decoder, preprocess
from ffedge.imageio import read_image
from ffedge.models import create_model
from ffedge.models.checkpoint import read_state_dict
from ffedge.runtimes.torch_runner import TorchRunner


@pytest.fixture(scope="module")
def v1(request):
    from .conftest import need_shared

    ck = need_shared("checkpoints", "featherface_v1_widerface.pth")
    return create_model("v1", checkpoint=ck)


def test_published_checkpoint_loads_strictly():
    """The bundled copy (sha256-checked against the published file): no ../shared needed."""
    from ffedge.weights import bundled_checkpoint

    ckpt = bundled_checkpoint("v1")
    assert ckpt is not None, "the v1 weights must ship with the package"
    sd = read_state_dict(ckpt)
    assert len(sd) == 437
    m = create_model("v1", checkpoint=ckpt)
    assert m.trained
    assert m.num_parameters() == 489_015
    own = m.state_dict()
    assert set(own) == set(sd)
    assert all(torch.equal(own[k], sd[k]) for k in sd)
    parts = m.component_parameters()
    assert parts["body"] == 213_072 and parts["bifpn"] == 77_916
    assert parts["ssh1"] + parts["ssh2"] + parts["ssh3"] == 192_555


def read_counts(images):
    rows = {}
    for line in (images / "independent_counts.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        f, _, _, n, _ = line.split("\t")
        rows[f] = int(n)
    return rows


@pytest.mark.slow
def test_finds_the_faces_on_shared_photos(v1, shared_images):
    """Original-size inference (the papers' setting) at the demo threshold 0.5, compared with
    the counts of an independent detector (YuNet, score >= 0.6)."""
    runner = TorchRunner("v1", module=v1, threads=2)
    decoder = Decoder(v1.spec, score_threshold=0.5)
    counts = read_counts(shared_images)
    ours = {}
    for name in counts:
        x, t = preprocess(read_image(shared_images / name), v1.spec, mode="original")
        dets = decoder(*runner.infer(x[None]), transforms=[t], scores_are="probabilities")[0]
        ours[name] = dets
        if len(dets):
            assert dets.scores.max() > 0.9
    for name, n in counts.items():
        got = len(ours[name])
        if n <= 11:  # portraits, pairs, small groups: the same faces, give or take two
            assert abs(got - n) <= 2, (name, got, n)
        else:  # crowds: at least most of what the other detector finds
            assert got >= 0.6 * n, (name, got, n)
    portraits = [k for k in counts if k.startswith("portrait")]
    assert all(len(ours[k]) == 1 for k in portraits)
    total, theirs = sum(len(d) for d in ours.values()), sum(counts.values())
    assert 0.8 * theirs <= total <= 1.5 * theirs
    # a portrait's face box is large and its landmarks lie inside it
    d = ours["portrait_tall.jpg"]
    x1, y1, x2, y2 = d.boxes[0]
    assert x2 - x1 > 200
    lm = d.landmarks[0]
    assert ((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2)).all()
