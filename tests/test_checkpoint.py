"""Checkpoint loading: the formats users have, and one clear line for each failure."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ffedge.errors import CheckpointError, FFEdgeError
from ffedge.models import create_model
from ffedge.models.checkpoint import read_state_dict, unwrap_state_dict
from ffedge.weights import bundled_checkpoint


@pytest.fixture(scope="module")
def v1_state() -> dict:
    return create_model("v1").state_dict()


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model_state_dict", "model", "module"])
def test_accepted_layouts_load_strictly(tmp_path, v1_state, wrap):
    sd = {k: v.clone() for k, v in v1_state.items()}
    sd["ClassHead.0.conv1x1.bias"] = torch.full_like(sd["ClassHead.0.conv1x1.bias"], 0.25)
    if wrap == "module":
        obj = {f"module.{k}": v for k, v in sd.items()}
    elif wrap == "raw":
        obj = sd
    else:
        obj = {wrap: sd, "epoch": 3}
    path = tmp_path / "ck.pth"
    torch.save(obj, path)
    m = create_model("v1", checkpoint=path)
    assert torch.all(m.state_dict()["ClassHead.0.conv1x1.bias"] == 0.25)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        create_model("v1", checkpoint=tmp_path / "nope.pth")


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "junk.pth"
    p.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        create_model("v1", checkpoint=p)


def test_checkpoint_without_tensors(tmp_path):
    p = tmp_path / "meta.pth"
    torch.save({"epoch": 1, "arch": "resnet18"}, p)
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        read_state_dict(p)


def test_other_architecture_names_keys(v1_state):
    sd = dict(v1_state)
    sd.pop("bifpn.0.p4_w1")
    sd["extra.weight"] = torch.zeros(3)
    sd["ClassHead.0.conv1x1.weight"] = torch.zeros(6, 56, 1, 1)
    with pytest.raises(CheckpointError) as exc:
        create_model("v1", checkpoint=sd)
    msg = str(exc.value)
    assert "'v1'" in msg and "\n" not in msg
    assert "1 missing: bifpn.0.p4_w1" in msg
    assert "1 unexpected: extra.weight" in msg
    assert "ClassHead.0.conv1x1.weight (6, 56, 1, 1) vs (4, 56, 1, 1)" in msg


def test_unwrap_nested_and_prefix():
    sd = {"module.a": torch.zeros(1), "module.b": torch.ones(1)}
    assert set(unwrap_state_dict({"model": {"state_dict": sd}})) == {"a", "b"}


def test_unknown_model_is_user_error():
    with pytest.raises(FFEdgeError, match="unknown model 'nope'"):
        create_model("nope")


def test_bundled_v1_weights_are_the_published_ones():
    from ffedge.digest import file_sha256

    p = bundled_checkpoint("v1")
    assert p is not None
    assert file_sha256(p) == "3271e30763c069c9dcad6368ae048c53b6be2acf60179240e6b147e6359ef80d"
    assert bundled_checkpoint("nano_b") is None


@pytest.mark.parametrize("case", ["missing", "junk", "wrong"])
def test_cli_one_line_errors(tmp_path, case):
    if case == "missing":
        ck = tmp_path / "none.pth"
    elif case == "junk":
        ck = tmp_path / "junk.pth"
        ck.write_text("garbage")
    else:
        ck = tmp_path / "wrong.pth"
        torch.save({"state_dict": {"conv.weight": torch.zeros(2, 3, 3, 3)}}, ck)
    out = tmp_path / "m.onnx"
    r = subprocess.run(
        [sys.executable, "-m", "ffedge.cli.ffexport", "onnx", "--model", "v1", "--checkpoint",
         str(ck), "-o", str(out)], capture_output=True, text=True, timeout=120,
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: ")
    assert not out.exists()
