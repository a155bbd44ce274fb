"""``ffbench widerface``: detector -> submission folder -> official-protocol AP, end to end.

The val images are not here, so a WIDER-like tree (2 events x 3 images of drawn faces) is
made in a temp folder. The ground truth is the detector's own output, computed directly
(read, preprocess, infer, decode) rather than through the code under test: the CLI must
then score AP 1.0 exactly (every prediction matches its own box at IoU 1, precision 1 at
every threshold), which checks image order, coordinate mapping, file layout and scoring in
one number. The bundled V1 weights at 320 keep it quick.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

sio = pytest.importorskip("scipy.io")

from ffedge.benchmarks import widerface_run as wr  # noqa: E402
from ffedge.benchmarks.widerface import load_ground_truth, select_images  # noqa: E402
from ffedge.cli.ffbench import main as ffbench  # noqa: E402
from ffedge.decoder import Decoder, preprocess  # noqa: E402
from ffedge.runtimes.torch_runner import TorchRunner  # noqa: E402
from ffedge.weights import bundled_checkpoint  # noqa: E402

EVENTS = {"0--Parade": ["0_Parade_a_1", "0_Parade_a_2", "0_Parade_a_3"],
          "1--Handshaking": ["1_Handshaking_b_1", "1_Handshaking_b_2", "1_Handshaking_b_3"]}
SIZE = 320
Faces = dict[str, dict[str, np.ndarray]]  # event -> image -> (n, 4) x y w h


def draw_face(img: np.ndarray, cx: int, cy: int, s: int) -> None:
    """A cartoon face (hair, skin oval, eyes, brows, nose, mouth) V1 detects confidently."""
    t = max(1, s // 25)
    cv2.ellipse(img, (cx, cy - int(s * 0.35)), (int(s * 0.75), int(s * 0.6)), 0, 180, 360,
                (30, 30, 60), -1)
    cv2.ellipse(img, (cx, cy), (int(s * 0.62), int(s * 0.8)), 0, 0, 360, (140, 170, 220), -1)
    for dx in (-1, 1):
        eye = (cx + dx * int(s * 0.25), cy - int(s * 0.15))
        cv2.ellipse(img, eye, (int(s * 0.12), int(s * 0.06)), 0, 0, 360, (255, 255, 255), -1)
        cv2.circle(img, eye, max(1, int(s * 0.05)), (20, 20, 20), -1)
        cv2.line(img, (cx + dx * int(s * 0.13), cy - int(s * 0.3)),
                 (cx + dx * int(s * 0.38), cy - int(s * 0.32)), (30, 30, 50), t)
    cv2.line(img, (cx, cy - int(s * 0.1)), (cx - int(s * 0.05), cy + int(s * 0.15)),
             (100, 120, 170), t)
    cv2.ellipse(img, (cx, cy + int(s * 0.38)), (int(s * 0.22), int(s * 0.08)), 0, 0, 180,
                (60, 60, 160), t)


def make_tree(root: Path) -> Path:
    """``root/WIDER_val/images/<event>/<image>.jpg``; every image 180x240 (one shape)."""
    rng = np.random.default_rng(0)
    k = 0
    for event, names in EVENTS.items():
        (root / "WIDER_val" / "images" / event).mkdir(parents=True)
        for name in names:
            img = (np.full((180, 240, 3), (90, 140, 110)) + rng.integers(0, 20, (180, 240, 3)))
            img = img.astype(np.uint8)
            draw_face(img, 70, 90, 40 + 5 * k)
            draw_face(img, 170, 80 + 5 * k, 25 + 3 * k)
            cv2.imwrite(str(root / "WIDER_val" / "images" / event / f"{name}.jpg"), img)
            k += 1
    return root


def direct_faces(runner, images: Path, size: str | None = None, per_event: int = 3) -> Faces:
    """Each image's detections with the evaluation settings, as ``x y w h`` ground truth
    (empty for images after the first ``per_event`` of an event)."""
    decoder = Decoder(runner.spec, score_threshold=0.02, nms_threshold=0.4, top_k=5000,
                      max_detections=750)
    faces: Faces = {}
    for event, names in EVENTS.items():
        for k, name in enumerate(names):
            if k >= per_event:
                faces.setdefault(event, {})[name] = np.zeros((0, 4))
                continue
            img = cv2.imread(str(images / event / f"{name}.jpg"))
            x, t = preprocess(img, runner.spec, mode=size)
            det = decoder(*runner.infer(x[None]), transforms=[t], scores_are="probabilities")[0]
            b = det.boxes.astype(np.float64)
            faces.setdefault(event, {})[name] = np.column_stack(
                [b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]])
    return faces


def _cell(items: list) -> np.ndarray:
    cell = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        cell[i, 0] = item
    return cell


def write_gt(folder: Path, faces: Faces) -> Path:
    """The kit's four .mat files; every face counts in every setting."""
    folder.mkdir(parents=True, exist_ok=True)
    events = list(faces)
    common = {
        "event_list": _cell(events),
        "file_list": _cell([_cell(list(faces[e])) for e in events]),
        "face_bbx_list": _cell([_cell([b.reshape(-1, 4) for b in faces[e].values()])
                                for e in events]),
    }
    sio.savemat(folder / "wider_face_val.mat", common)
    gt_list = _cell([_cell([np.arange(1, len(b) + 1, dtype=np.uint16).reshape(-1, 1)
                            for b in faces[e].values()]) for e in events])
    for setting in ("easy", "medium", "hard"):
        sio.savemat(folder / f"wider_{setting}_val.mat", {**common, "gt_list": gt_list})
    return folder


@pytest.fixture(scope="module")
def wider(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("wider"))


@pytest.fixture(scope="module")
def torch_runner() -> TorchRunner:
    return TorchRunner("v1", bundled_checkpoint("v1"), (SIZE, SIZE), threads=2)


@pytest.fixture(scope="module")
def faces(wider, torch_runner) -> Faces:
    found = direct_faces(torch_runner, wider / "WIDER_val" / "images")
    assert all(len(b) >= 1 for ev in found.values() for b in ev.values())
    return found


@pytest.fixture(scope="module")
def gt_dir(tmp_path_factory, faces) -> Path:
    return write_gt(tmp_path_factory.mktemp("gt"), faces)


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory) -> Path:
    from ffedge.export.onnx_target import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "v1_320.onnx"
    return export_onnx("v1", bundled_checkpoint("v1"), out, (SIZE, SIZE), verify=False).path


def cli(*args: object) -> int:
    return ffbench(["widerface", "--no-progress", *(str(a) for a in args)])


def model_args(wider: Path, gt: Path, out: Path, *extra: object) -> list[object]:
    return ["--root", wider, "--gt", gt, "--model", "v1", "--size", SIZE, "--out", out,
            "--threads", 2, *extra]


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_end_to_end_scores_own_detections_perfectly_and_writes_reports(tmp_path, wider, gt_dir,
                                                                       faces, capsys):
    out, js = tmp_path / "pred", tmp_path / "wf.json"
    assert cli(*model_args(wider, gt_dir, out, "--json", js)) == 0
    doc = load(js)
    assert doc["ap"] == {"easy": 1.0, "medium": 1.0, "hard": 1.0}
    assert doc["run"]["inferred"] == 6 and doc["run"]["resumed"] == 0
    assert doc["run"]["unreadable"] == {}
    n_faces = sum(len(b) for ev in faces.values() for b in ev.values())
    assert doc["num_predictions"] == n_faces == doc["run"]["faces_written"]
    assert doc["settings"] == {"score_threshold": 0.02, "nms_threshold": 0.4, "top_k": 5000,
                               "max_detections": 750, "size": SIZE, "subset_per_event": None}
    assert (out / "0--Parade" / "0_Parade_a_1.txt").read_text().startswith("0_Parade_a_1\n")
    printed = capsys.readouterr().out
    assert "easy      1.0000" in printed and "6 inferred" in printed
    # reports next to the JSON carry the measured AP and latency
    rows = (tmp_path / "wf.csv").read_text().splitlines()
    header, values = rows[0].split(","), rows[1].split(",")
    row = dict(zip(header, values, strict=True))
    assert float(row["ap_easy"]) == float(row["ap_hard"]) == 1.0
    assert row["runtime"] == "torch" and row["size"] == f"letterbox {SIZE}x{SIZE}"
    assert float(row["latency_p50_ms"]) == pytest.approx(doc["run"]["latency_ms"]["p50_ms"],
                                                         abs=1e-3)
    assert "1.0000" in (tmp_path / "wf.md").read_text()
    for png in ("wf-pr.png", "wf-latency.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_resume_skips_done_images_and_redoes_partial_ones(tmp_path, wider, gt_dir):
    out, js = tmp_path / "pred", tmp_path / "r.json"
    assert cli(*model_args(wider, gt_dir, out)) == 0
    assert cli(*model_args(wider, gt_dir, out, "--json", js)) == 0
    assert load(js)["run"]["inferred"] == 0 and load(js)["run"]["resumed"] == 6
    assert load(js)["ap"]["hard"] == 1.0
    # a killed run leaves no truncated .txt (atomic writes) but may leave a temp file;
    # a hand-truncated .txt does not parse and is redone
    (out / "0--Parade" / "0_Parade_a_2.txt").unlink()
    (out / "0--Parade" / ".0_Parade_a_2.txt.x.tmp").write_text("0_Parade_a_2\n5\n1 2")
    (out / "1--Handshaking" / "1_Handshaking_b_3.txt").write_text("1_Handshaking_b_3\n4\n")
    assert cli(*model_args(wider, gt_dir, out, "--json", js)) == 0
    assert load(js)["run"]["inferred"] == 2 and load(js)["run"]["resumed"] == 4
    assert load(js)["ap"] == {"easy": 1.0, "medium": 1.0, "hard": 1.0}
    assert not list(out.glob("*/.*.tmp"))


def test_other_settings_in_same_folder_refused(tmp_path, wider, gt_dir, capsys):
    out = tmp_path / "pred"
    assert cli(*model_args(wider, gt_dir, out, "--subset", 1)) == 0
    capsys.readouterr()
    assert cli(*model_args(wider, gt_dir, out, "--threshold", 0.5)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "score_threshold: 0.02 -> 0.5" in err


def test_subset_scores_only_the_images_run(tmp_path, wider, gt_dir):
    js = tmp_path / "s.json"
    assert cli(*model_args(wider, gt_dir, tmp_path / "pred", "--subset", 1, "--json", js)) == 0
    doc = load(js)
    assert doc["num_images"] == 2 and doc["run"]["inferred"] == 2 and doc["missing"] == []
    assert doc["ap"]["easy"] == 1.0  # not diluted by the 4 images that were not run
    assert sorted(p.name for p in (tmp_path / "pred").glob("*/*.txt")) == [
        "0_Parade_a_1.txt", "1_Handshaking_b_1.txt"]


def test_unreadable_image_counted_listed_and_scored_as_missed(tmp_path, wider, gt_dir, faces,
                                                              capsys):
    root = tmp_path / "copy"
    shutil.copytree(wider / "WIDER_val", root / "WIDER_val")
    bad = "1--Handshaking/1_Handshaking_b_2.jpg"
    (root / "WIDER_val" / "images" / bad).write_bytes(b"\xff\xd8 not really a jpeg")
    js, out = tmp_path / "u.json", tmp_path / "pred"
    # --root at WIDER_val itself this time
    assert cli("--root", root / "WIDER_val", "--gt", gt_dir, "--model", "v1", "--size", SIZE,
               "--threads", 2, "--out", out, "--json", js) == 1
    doc = load(js)
    assert list(doc["run"]["unreadable"]) == [bad]
    assert "cannot decode" in doc["run"]["unreadable"][bad]
    assert doc["run"]["inferred"] == 5 and doc["missing"] == ["1--Handshaking/1_Handshaking_b_2"]
    assert not (out / "1--Handshaking" / "1_Handshaking_b_2.txt").exists()
    total = sum(len(b) for ev in faces.values() for b in ev.values())
    lost = len(faces["1--Handshaking"]["1_Handshaking_b_2"])
    assert doc["ap"]["easy"] == pytest.approx((total - lost) / total)
    printed = capsys.readouterr().out
    assert "1 unreadable" in printed and bad in printed


def test_onnx_artifact_through_onnxruntime(tmp_path, wider, gt_dir, onnx_artifact):
    js = tmp_path / "o.json"
    # --root at the images/ folder itself this time
    assert cli("--root", wider / "WIDER_val" / "images", "--gt", gt_dir, "--artifact",
               onnx_artifact, "--out", tmp_path / "pred", "--json", js) == 0
    doc = load(js)
    assert doc["runner"]["runtime"] == "onnxruntime" and doc["run"]["inferred"] == 6
    # the same network in another runtime: only borderline (~0.02) detections may flip
    assert min(doc["ap"].values()) > 0.99


def test_size_original_refused_for_fixed_size_artifact(tmp_path, wider, gt_dir, onnx_artifact,
                                                       capsys):
    rc = cli("--root", wider, "--gt", gt_dir, "--artifact", onnx_artifact, "--size", "original",
             "--out", tmp_path / "pred")
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --size original") and "fixed at 320x320" in err
    assert "\n" not in err  # nothing but the one-line refusal
    assert not (tmp_path / "pred").exists()


def test_size_original_runs_each_image_at_its_own_size(tmp_path, wider, torch_runner):
    faces = direct_faces(torch_runner, wider / "WIDER_val" / "images", "original", per_event=1)
    gt = write_gt(tmp_path / "gt", faces)
    js = tmp_path / "orig.json"
    assert cli("--root", wider, "--gt", gt, "--model", "v1", "--size", "original", "--subset", 1,
               "--threads", 2, "--out", tmp_path / "pred", "--json", js) == 0
    doc = load(js)
    assert doc["num_images"] == 2 and doc["num_predictions"] == sum(
        len(b) for ev in faces.values() for b in ev.values())
    assert doc["ap"] == {"easy": 1.0, "medium": 1.0, "hard": 1.0}
    assert doc["runner"]["size"] == "original"


def test_run_detector_api_and_roots(tmp_path, wider, gt_dir, torch_runner):
    images = wr.find_images_root(wider)
    assert images == wr.find_images_root(wider / "WIDER_val") == wr.find_images_root(images)
    gt = select_images(load_ground_truth(gt_dir), [0, 3])
    seen: list[str] = []
    summary = wr.run_detector(torch_runner, gt, images, tmp_path / "p", progress=False,
                              on_image=seen.append)
    assert seen == ["0--Parade/0_Parade_a_1.jpg", "1--Handshaking/1_Handshaking_b_1.jpg"]
    assert summary.inferred == 2 and summary.latency is not None
    with pytest.raises(wr.WiderFaceError, match="no WIDER FACE event folder"):
        wr.run_detector(torch_runner, gt, tmp_path, tmp_path / "q")
    with pytest.raises(wr.WiderFaceError, match="not found"):
        wr.find_images_root(tmp_path / "absent")
