"""``ffdetect`` end to end with the real V1 checkpoint on the shared photos."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ffedge.cli.detect import _output_path, main

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IMAGES = SHARED / "images"
CHECKPOINT = SHARED / "checkpoints" / "featherface_v1_widerface.pth"
PORTRAITS = ["portrait_a", "portrait_b", "portrait_c", "portrait_d", "portrait_e", "portrait_tall",
             "mobile_single"]

needs_shared = pytest.mark.skipif(
    not (CHECKPOINT.is_file() and IMAGES.is_dir()),
    reason=f"needs the V1 checkpoint and photos in {SHARED} (absent outside the dev setup)",
)
pytestmark = [pytest.mark.shared, needs_shared]


def model_args() -> list[str]:
    return ["--model", "v1", "--checkpoint", str(CHECKPOINT), "--threads", "1"]


def independent_count(name: str) -> int:
    with open(IMAGES / "independent_counts.tsv") as f:
        rows = {r[0]: r for r in csv.reader((line for line in f if not line.startswith("#")),
                                            delimiter="\t")}
    return int(rows[f"{name}.jpg"][3])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One run over the portraits and two groups, JSON and drawings into OUT_DIR."""
    out = tmp_path_factory.mktemp("ffdetect")
    names = [*PORTRAITS, "crowd_a", "family_group"]
    inputs = [IMAGES / f"{n}.jpg" for n in names]
    before = {p: p.read_bytes() for p in inputs}
    rc = main([*map(str, inputs), *model_args(), "-o", str(out), "--json"])
    return rc, out, names, before


def test_writes_drawings_and_json(run_dir):
    rc, out, names, before = run_dir
    assert rc == 0
    doc = json.loads((out / "detections.json").read_text())
    assert doc["model"] == "v1" and doc["runtime"] == "torch" and doc["input"] == [640, 640]
    assert doc["errors"] == []
    by_stem = {Path(e["image"]).stem: e for e in doc["images"]}
    assert set(by_stem) == set(names)
    for name in names:
        drawn = out / f"{name}_faces.jpg"
        assert drawn.is_file() and by_stem[name]["output"] == str(drawn)
        import cv2

        img = cv2.imread(str(drawn))
        original = cv2.imread(str(IMAGES / f"{name}.jpg"))
        assert img.shape == original.shape
        if by_stem[name]["count"]:
            assert not np.array_equal(img, original)  # something was drawn
    for path, data in before.items():
        assert path.read_bytes() == data  # inputs untouched


def test_portraits_have_a_face_and_crowd_count_is_plausible(run_dir):
    _, out, _, _ = run_dir
    doc = json.loads((out / "detections.json").read_text())
    by_stem = {Path(e["image"]).stem: e for e in doc["images"]}
    for name in PORTRAITS:
        faces = by_stem[name]["faces"]
        assert len(faces) >= 1, name
        best = max(faces, key=lambda f: f["score"])
        assert best["score"] > 0.9
        x1, y1, x2, y2 = best["box"]
        h, w = by_stem[name]["image_size"]["height"], by_stem[name]["image_size"]["width"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        # landmarks of the best face lie inside (or at the edge of) its box
        pts = np.array(best["landmarks"])
        assert pts.shape == (5, 2)
        assert ((pts[:, 0] > x1 - 0.1 * (x2 - x1)) & (pts[:, 0] < x2 + 0.1 * (x2 - x1))).all()
    expected = independent_count("crowd_a")
    found = by_stem["crowd_a"]["count"]
    assert abs(found - expected) <= 0.4 * expected, (found, expected)


def test_unreadable_image_is_reported_and_others_still_processed(tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    missing = tmp_path / "missing.jpg"
    good = IMAGES / "portrait_a.jpg"
    out = tmp_path / "out"
    rc = main([str(bad), str(good), str(missing), *model_args(), "-o", str(out)])
    captured = capsys.readouterr()
    assert rc != 0
    err_lines = [ln for ln in captured.err.splitlines() if ln.startswith("error:")]
    assert len(err_lines) == 2
    assert "broken.jpg" in err_lines[0] and "missing.jpg" in err_lines[1]
    assert "Traceback" not in captured.err
    assert f"{good}: 1 face" in captured.out
    assert (out / "portrait_a_faces.jpg").is_file()
    assert not (out / "broken_faces.jpg").exists()


def test_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    rc = main([str(IMAGES / "portrait_a.jpg"), "--model", "v1", "--checkpoint",
               str(tmp_path / "nope.pth")])
    captured = capsys.readouterr()
    assert rc != 0
    assert captured.err.strip().count("\n") == 0 and captured.err.startswith("error:")
    assert "nope.pth" in captured.err and "Traceback" not in captured.err
    assert captured.out == ""


def test_bad_arguments_are_one_line_errors(capsys):
    img = str(IMAGES / "portrait_a.jpg")
    assert main([img]) != 0
    assert "--model" in capsys.readouterr().err
    assert main([img, *model_args(), "--size", "500"]) != 0
    assert "multiple of 32" in capsys.readouterr().err


def test_json_to_stdout_and_original_size(capsys):
    img = IMAGES / "mobile_single.jpg"  # 240x320: runs at its own size, padded to 256x320
    rc = main([str(img), *model_args(), "--json", "--original-size", "--threshold", "0.6"])
    captured = capsys.readouterr()
    assert rc == 0
    doc = json.loads(captured.out)  # stdout is pure JSON
    assert doc["input"] == "original" and doc["score_threshold"] == 0.6
    (entry,) = doc["images"]
    assert entry["image_size"] == {"height": 320, "width": 240}
    assert entry["count"] >= 1 and "output" not in entry


def test_size_option_letterboxes(capsys):
    img = IMAGES / "portrait_b.jpg"
    rc = main([str(img), *model_args(), "--json", "--size", "320"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["input"] == [320, 320] and doc["images"][0]["count"] >= 1


def test_output_names_are_unique_and_never_the_input(tmp_path, capsys):
    used: set[Path] = set()
    a = _output_path(tmp_path, Path("x/photo.png"), used, set())
    b = _output_path(tmp_path, Path("y/photo.jpg"), used, set())
    assert a.name == "photo_faces.jpg" and b.name == "photo_2_faces.jpg"
    # an input that sits where another input's drawing would go is not overwritten
    out = tmp_path / "out"
    out.mkdir()
    data = (IMAGES / "portrait_a.jpg").read_bytes()
    earlier = out / "face_faces.jpg"
    earlier.write_bytes(data)
    source = tmp_path / "face.jpg"
    source.write_bytes(data)
    rc = main([str(earlier), str(source), *model_args(), "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert earlier.read_bytes() == data
    assert (out / "face_faces_faces.jpg").is_file() and (out / "face_2_faces.jpg").is_file()
