"""ffedge.calibration: sources, seeded sampling, the dataset, its cache and its adapters.

Everything runs on tiny synthetic images made in tmp_path; one optional test reads the
shared photos.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

import ffedge.calibration.dataset as dataset_module
from ffedge.calibration import (
    CalibrationDataset,
    CalibrationSource,
    clear_cache,
    default_cache_dir,
    detect_source_kind,
    open_source,
    sample_source,
    split_source,
)
from ffedge.decoder.transform import preprocess
from ffedge.errors import FFEdgeError
from ffedge.imageio import read_image
from ffedge.spec import DeploymentSpec

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SPEC = DeploymentSpec(input_size=(64, 64))
EVENTS = {"0--Parade": 2, "1--Handshaking": 5, "12--Group": 9}


def write_image(path: Path, h: int = 30, w: int = 40, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def make_wider(root: Path, events: dict[str, int] = EVENTS, reverse: bool = False) -> Path:
    """WIDER_train/images/<event>/*.jpg with ``events[name]`` images each."""
    items = [(e, i) for e, n in events.items() for i in range(n)]
    for k, (event, i) in enumerate(reversed(items) if reverse else items):
        write_image(root / "images" / event / f"{event.split('--')[1]}_{i}.jpg", seed=k)
    return root


def rel(files: list[Path], root: Path) -> list[str]:
    return [f.relative_to(root).as_posix() for f in files]


def event_counts(files: list[Path]) -> dict[str, int]:
    counts = dict.fromkeys(EVENTS, 0)
    for f in files:
        counts[f.parent.name] += 1
    return counts


@pytest.fixture
def wider(tmp_path: Path) -> Path:
    return make_wider(tmp_path / "WIDER_train")


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """Five ordinary images of different sizes and aspect ratios."""
    shapes = [(30, 40), (50, 20), (64, 64), (17, 90), (80, 33)]
    return [write_image(tmp_path / "imgs" / f"im{i}.jpg", h, w, seed=i)
            for i, (h, w) in enumerate(shapes)]


# -- sources ------------------------------------------------------------------------


def test_detect_kinds(tmp_path: Path, wider: Path, images: list[Path]) -> None:
    assert detect_source_kind(wider) == "widerface"
    assert detect_source_kind(wider / "images") == "widerface"
    assert detect_source_kind(images[0].parent) == "folder"
    assert detect_source_kind(images[0]) == "folder"
    paths = tmp_path / "calib.txt"
    paths.write_text("# my calibration set\nimgs/im0.jpg\n")
    assert detect_source_kind(paths) == "list"
    label = tmp_path / "annotations.txt"
    label.write_text("# 0--Parade/a.jpg\n1 2 3 4\n")
    assert detect_source_kind(label) == "label"
    # A folder with one event-named subfolder among others is just a folder.
    write_image(tmp_path / "mixed" / "3--Riot" / "a.jpg")
    write_image(tmp_path / "mixed" / "holidays" / "b.jpg")
    assert detect_source_kind(tmp_path / "mixed") == "folder"
    with pytest.raises(FFEdgeError, match="not found"):
        detect_source_kind(tmp_path / "nope")


def test_wider_samples_evenly_across_events(wider: Path) -> None:
    src = open_source(wider)
    assert src.kind == "widerface" and len(src) == 16
    assert set(src.groups) == set(EVENTS)
    assert event_counts(src.sample(6, seed=3)) == {e: 2 for e in EVENTS}
    counts = event_counts(src.sample(11, seed=3))
    assert counts["0--Parade"] == 2  # exhausted: the others share the rest evenly
    assert sorted([counts["1--Handshaking"], counts["12--Group"]]) == [4, 5]
    with pytest.warns(UserWarning, match="fewer than the 100 asked for"):
        assert event_counts(src.sample(100)) == EVENTS


def test_wider_given_images_folder_selects_the_same(wider: Path) -> None:
    a = sample_source(wider, 7, seed=1)
    b = sample_source(wider / "images", 7, seed=1)
    assert a == b


def test_forced_kind(tmp_path: Path, wider: Path, images: list[Path]) -> None:
    flat = open_source(wider, kind="folder")
    assert flat.kind == "folder" and list(flat.groups) == [""] and len(flat) == 16
    with pytest.raises(FFEdgeError, match="not a WIDER FACE tree"):
        open_source(images[0].parent, kind="widerface")
    with pytest.raises(FFEdgeError, match="unknown calibration source kind"):
        open_source(wider, kind="coco")


def test_label_txt_layout(tmp_path: Path) -> None:
    root = tmp_path / "widerface" / "train"
    lines = []
    for event, n in EVENTS.items():
        for i in range(n):
            name = f"{event}/img_{i}.jpg"
            write_image(root / "images" / name, seed=i)
            lines += [f"# {name}", "10 10 20 20 1 1 0.0 1 1 0.0 1 1 0.0 1 1 0.0 1 1 0.0 1 0.9"]
    write_image(root / "images" / "0--Parade" / "unlabelled.jpg")
    lines += ["# 0--Parade/gone.jpg", "1 1 2 2"]
    (root / "label.txt").write_text("\n".join(lines) + "\n")

    with pytest.warns(UserWarning, match="1 listed image"):
        src = open_source(root)
    assert src.kind == "label" and len(src) == 16
    assert [m.name for m in src.missing] == ["gone.jpg"]
    assert all("unlabelled" not in f.name for f in src.files)
    assert event_counts(src.sample(6)) == {e: 2 for e in EVENTS}
    with pytest.warns(UserWarning):
        assert open_source(root / "label.txt").files == src.files


def test_nested_folder(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_image(root / "a.jpg")
    write_image(root / "2024" / "b.png")
    write_image(root / "2024" / "deep" / "c.JPG")
    (root / "notes.txt").write_text("not an image")
    src = open_source(root)
    assert src.kind == "folder"
    assert rel(src.files, root) == ["2024/b.png", "2024/deep/c.JPG", "a.jpg"]
    with pytest.warns(UserWarning, match="3 usable candidates"):
        assert sorted(rel(sample_source(root, 10), root)) == rel(src.files, root)


def test_paths_file(tmp_path: Path, images: list[Path]) -> None:
    lst = tmp_path / "lists" / "calib.txt"
    lst.parent.mkdir()
    lst.write_text(
        "# calibration images\n\n"
        "../imgs/im0.jpg\n"
        f"{images[1]}\n"
        "   ../imgs/im2.jpg   \n"
        "../imgs/missing.jpg\n"
        "../imgs/im0.jpg\n"
    )
    with pytest.warns(UserWarning, match="do not exist"):
        src = open_source(lst)
    assert src.kind == "list"
    assert src.files == sorted(images[:3])
    assert len(src.missing) == 1


def test_empty_source_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FFEdgeError, match="no images found"):
        open_source(tmp_path / "empty")


def test_seeded_sampling_is_deterministic(tmp_path: Path) -> None:
    a = make_wider(tmp_path / "a")
    b = make_wider(tmp_path / "b", reverse=True)  # other creation order, other location
    for seed in (0, 1, 7):
        s1 = sample_source(a, 8, seed=seed)
        assert s1 == sample_source(a, 8, seed=seed)
        assert rel(s1, a) == rel(sample_source(b, 8, seed=seed), b)
    samples = {tuple(rel(sample_source(a, 5, seed=s), a)) for s in range(4)}
    assert len(samples) == 4, "different seeds choose different images"
    # A smaller sample is a prefix of a larger one with the same seed.
    assert sample_source(a, 4, seed=2) == sample_source(a, 9, seed=2)[:4]


def test_disjoint_held_out_split(wider: Path) -> None:
    src = open_source(wider)
    calib, held = src.split(6, 6, seed=5)
    assert len(calib) == 6 and len(held) == 6 and not set(calib) & set(held)
    assert calib == src.sample(6, seed=5), "adding an evaluation set changes nothing"
    # Parade (2 images) is used up by the calibration set; the others share the rest.
    assert event_counts(held) == {"0--Parade": 0, "1--Handshaking": 3, "12--Group": 3}
    other = sample_source(src, 8, seed=9, exclude=calib)
    assert not set(other) & set(calib)
    assert split_source(wider, 6, 6, seed=5) == (calib, held)
    with pytest.warns(UserWarning, match="evaluation set gets 4"):
        _, small = src.split(12, 10)
    assert len(small) == 4
    with pytest.raises(FFEdgeError, match="no images left"):
        src.sample(3, exclude=src.files)


# -- dataset --------------------------------------------------------------------------


SPECS = {
    "letterbox-bgr": DeploymentSpec(input_size=(64, 64)),
    "resize-bgr": DeploymentSpec(input_size=(64, 96), resize_mode="resize"),
    "letterbox-rgb-std": DeploymentSpec(input_size=(96, 64), channel_order="RGB",
                                        mean=(123.675, 116.28, 103.53),
                                        std=(58.395, 57.12, 57.375), pad_value=114.0),
}


@pytest.mark.parametrize("name", SPECS)
def test_preprocessing_is_inference_preprocessing(tmp_path: Path, images: list[Path],
                                                  name: str) -> None:
    spec = SPECS[name]
    for cache in (True, False):
        for _ in range(2):  # first decode, then (with the cache) served from disk
            ds = CalibrationDataset(images, spec, cache_dir=tmp_path / "cache", cache=cache)
            assert len(ds) == len(images) and ds.files == images
            for path, x in zip(images, ds):
                ref = preprocess(read_image(path), spec)[0]
                assert x.dtype == np.float32 and x.shape == (1, 3, *spec.input_size)
                assert np.array_equal(x[0], ref), f"{path.name} differs from inference input"
    sized = CalibrationDataset(images, spec, size=(32, 32), cache_dir=tmp_path / "cache")
    assert np.array_equal(sized[1][0], preprocess(read_image(images[1]), spec, (32, 32))[0])


def counting_reader(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []

    def reader(path):
        calls.append(Path(path))
        return read_image(path)

    monkeypatch.setattr(dataset_module, "read_image", reader)
    return calls


def test_cache_hit_decodes_nothing(tmp_path: Path, images: list[Path],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting_reader(monkeypatch)
    bad = images[0].parent / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="skipped 1 of 6"):
        first = CalibrationDataset([*images, bad], SPEC, cache_dir=cache)
    assert first.decoded == 6 and len(calls) == 6 and first.cache_hits == 0
    calls.clear()
    with pytest.warns(UserWarning, match="skipped 1 of 6"):
        second = CalibrationDataset([*images, bad], SPEC, cache_dir=cache)
    assert calls == [] and second.decoded == 0 and second.cache_hits == 6
    assert [s.path for s in second.skipped] == [bad]
    assert np.array_equal(first.arrays(), second.arrays())
    assert not list(cache.glob("*.tmp")), "atomic writes leave no temporaries"
    assert len(list(cache.glob("*.npy"))) == 5 and len(list(cache.glob("*.skip"))) == 1
    # A subset (in another order) reuses the per-image entries too.
    assert CalibrationDataset(images[::-2], SPEC, cache_dir=cache).decoded == 0


def test_cache_invalidation(tmp_path: Path, images: list[Path],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    CalibrationDataset(images, SPEC, cache_dir=cache)
    calls = counting_reader(monkeypatch)
    other_mean = DeploymentSpec(input_size=(64, 64), mean=(0.0, 0.0, 0.0))
    assert CalibrationDataset(images, other_mean, cache_dir=cache).decoded == len(images)
    assert CalibrationDataset(images, SPEC, size=(32, 64), cache_dir=cache).decoded == len(images)
    calls.clear()
    # Rewrite one file with other pixels (and a different mtime even on coarse clocks).
    write_image(images[2], 64, 64, seed=99)
    st = images[2].stat()
    os.utime(images[2], ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    ds = CalibrationDataset(images, SPEC, cache_dir=cache)
    assert calls == [images[2]] and ds.decoded == 1
    assert np.array_equal(ds[2][0], preprocess(read_image(images[2]), SPEC)[0])


def test_damaged_or_cleared_cache_is_a_miss(tmp_path: Path, images: list[Path]) -> None:
    cache = tmp_path / "cache"
    ds = CalibrationDataset(images, SPEC, cache_dir=cache)
    ref = ds.arrays()
    victim = sorted(cache.glob("*.npy"))[0]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated
    again = CalibrationDataset(images, SPEC, cache_dir=cache)
    assert again.decoded == 1
    assert clear_cache(cache) > 0 and not cache.exists()
    assert np.array_equal(again.arrays(), ref), "tensors are re-made from the files"


def test_unwritable_cache_falls_back_to_memory(tmp_path: Path, images: list[Path]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="keeping tensors in memory"):
        ds = CalibrationDataset(images, SPEC, cache_dir=blocker / "calib")
    assert len(ds) == len(images)
    assert np.array_equal(ds[0][0], preprocess(read_image(images[0]), SPEC)[0])


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FFEDGE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "calib"
    monkeypatch.delenv("FFEDGE_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "ffedge" / "calib"


def test_odd_and_broken_images(tmp_path: Path) -> None:
    d = tmp_path / "odd"
    d.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(d / "gray.png"), rng.integers(0, 256, (20, 30), dtype=np.uint8))
    cv2.imwrite(str(d / "rgba.png"), rng.integers(0, 256, (25, 25, 4), dtype=np.uint8))
    cv2.imwrite(str(d / "deep.png"), rng.integers(0, 65536, (30, 20, 3), dtype=np.uint16))
    cv2.imwrite(str(d / "deep_gray.png"), rng.integers(0, 65536, (30, 20), dtype=np.uint16))
    write_image(d / "ok.jpg")
    (d / "empty.jpg").write_bytes(b"")
    (d / "corrupt.png").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (d / "text.jpg").write_text("hello")
    files = sorted(d.iterdir()) + [d / "vanished.jpg"]

    with pytest.warns(UserWarning, match="skipped 4 of 9 calibration images"):
        ds = CalibrationDataset(files, SPEC, cache_dir=tmp_path / "cache")
    assert sorted(f.name for f in ds.files) == [
        "deep.png", "deep_gray.png", "gray.png", "ok.jpg", "rgba.png"]
    reasons = {s.path.name: s.reason for s in ds.skipped}
    assert set(reasons) == {"empty.jpg", "corrupt.png", "text.jpg", "vanished.jpg"}
    assert "cannot decode" in reasons["corrupt.png"] and reasons["vanished.jpg"] == "file not found"
    for path, x in zip(ds.files, ds):
        assert np.array_equal(x[0], preprocess(read_image(path), SPEC)[0])
    gray = ds[ds.files.index(d / "gray.png")][0] + np.asarray(SPEC.mean, np.float32)[:, None, None]
    assert np.array_equal(gray[0], gray[1]) and np.array_equal(gray[1], gray[2])
    assert ds.to_dict()["skipped"][0].keys() == {"path", "reason"}


def test_zero_usable_images_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(FFEdgeError, match=r"no usable calibration images: all 2 failed") as info:
        CalibrationDataset([bad, tmp_path / "gone.jpg"], SPEC, cache_dir=tmp_path / "c")
    assert "\n" not in str(info.value)
    with pytest.raises(FFEdgeError, match="no calibration images given"):
        CalibrationDataset([], SPEC, cache=False)
    with pytest.raises(FFEdgeError, match="from_source"):
        CalibrationDataset(str(tmp_path), SPEC)  # type: ignore[arg-type]


def test_from_source_and_report(tmp_path: Path, wider: Path) -> None:
    held = sample_source(wider, 4, seed=2)
    ds = CalibrationDataset.from_source(wider, SPEC, 6, seed=2, exclude=held,
                                        cache_dir=tmp_path / "c")
    assert len(ds) == 6 and not set(ds.files) & set(held)
    assert min(event_counts(ds.files).values()) >= 1, "every event still contributes"
    report = ds.to_dict()
    assert report["source_kind"] == "widerface" and report["seed"] == 2
    assert report["num_images"] == 6 and report["input_size"] == [64, 64]
    assert isinstance(ds.source, CalibrationSource) and "6 images" in repr(ds)


def test_progress_bar(tmp_path: Path, images: list[Path], capsys: pytest.CaptureFixture) -> None:
    CalibrationDataset(images, SPEC, cache=False, progress=True)
    assert "reading calibration images" in capsys.readouterr().err
    CalibrationDataset(images, SPEC, cache=False, progress=False)
    assert capsys.readouterr().err == ""


# -- adapters -------------------------------------------------------------------------


@pytest.fixture
def ds(tmp_path: Path, images: list[Path]) -> CalibrationDataset:
    return CalibrationDataset(images, SPEC, cache_dir=tmp_path / "cache")


def test_ort_reader_protocol(ds: CalibrationDataset) -> None:
    reader = ds.as_ort_reader("images")
    try:
        from onnxruntime.quantization import CalibrationDataReader
    except ImportError:
        CalibrationDataReader = None
    if CalibrationDataReader is not None:
        assert isinstance(reader, CalibrationDataReader)
    feeds = []
    while (feed := reader.get_next()) is not None:
        feeds.append(feed)
    assert len(feeds) == len(ds) == len(reader)
    assert all(set(f) == {"images"} and f["images"].shape == (1, 3, 64, 64) for f in feeds)
    assert reader.get_next() is None
    reader.rewind()
    assert np.array_equal(reader.get_next()["images"], feeds[0]["images"])
    reader.set_range(start_index=2, end_index=4)
    assert [np.array_equal(f["images"], feeds[i]["images"]) for i, f in zip((2, 3), reader)] \
        == [True, True]
    assert reader.get_next() is None


def test_ort_static_quantisation_runs(tmp_path: Path, ds: CalibrationDataset) -> None:
    onnx = pytest.importorskip("onnx", reason="onnx extra not installed")
    quant = pytest.importorskip("onnxruntime.quantization", reason="onnxruntime not installed")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(
        np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["out"], pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 64, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "fp32.onnx")
    quant.quantize_static(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", ds.as_ort_reader(),
                          quant_format=quant.QuantFormat.QDQ)
    assert (tmp_path / "int8.onnx").stat().st_size > 0


def test_representative_dataset_and_batches(ds: CalibrationDataset) -> None:
    reps = list(ds.representative_dataset())
    assert len(reps) == len(ds)
    assert all(isinstance(r, list) and len(r) == 1 and r[0].shape == (1, 64, 64, 3) for r in reps)
    assert np.array_equal(reps[3][0], ds[3].transpose(0, 2, 3, 1))
    assert reps[0][0].flags["C_CONTIGUOUS"]
    assert [r[0].shape for r in ds.representative_dataset(nhwc=False)] == [(1, 3, 64, 64)] * 5
    assert [b.shape[0] for b in ds.batches(2)] == [2, 2, 1]
    assert [b.shape[0] for b in ds.batches(2, drop_last=True)] == [2, 2]
    assert np.array_equal(np.concatenate(list(ds.batches(3))), ds.arrays())
    assert ds.arrays().shape == (5, 3, 64, 64)
    ds[0][...] = 0  # callers get their own copy
    assert ds[0].any()


def test_nncf_dataset(ds: CalibrationDataset) -> None:
    pytest.importorskip("nncf", reason="nncf (openvino extra) not installed")
    plain = ds.as_nncf_dataset()
    assert plain.get_length() == len(ds)
    items = list(plain.get_inference_data())
    assert len(items) == len(ds) and items[0].shape == (1, 3, 64, 64)
    feed = next(iter(ds.as_nncf_dataset("images").get_inference_data()))
    assert set(feed) == {"images"} and np.array_equal(feed["images"], ds[0])


def test_shared_photos(tmp_path: Path) -> None:
    photos = SHARED / "images"
    if not photos.is_dir():
        pytest.skip("needs ../shared/images (absent on this machine)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every shared photo must be usable
        ds = CalibrationDataset.from_source(photos, SPEC.with_input_size(160, 160), 8, seed=0,
                                            cache_dir=tmp_path / "c")
    assert len(ds) == 8 and not ds.skipped and ds.source.kind == "folder"
    path = ds.files[0]
    assert np.array_equal(ds[0][0], preprocess(read_image(path), ds.spec)[0])
    shutil.rmtree(tmp_path / "c")
