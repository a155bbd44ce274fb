"""Issue 11 replayed: what a new user types, and what they must get back.

Every bad input gives exit code 2, no traceback, exactly one ``error:`` line that names the
fix, and nothing left at ``-o``. Random weights are said once, wherever they are used;
third-party chatter and onnxruntime telemetry stay off unless asked for; long steps say
what they are doing. The CLIs run in-process (``main(argv)`` + capsys) except where
file-descriptor-level output or a fresh process matters (subprocess).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from ffedge.cli.detect import main as ffdetect
from ffedge.cli.ffbench import main as ffbench
from ffedge.cli.ffexport import main as ffexport

from .conftest import ROOT, synthetic_images

SMALL = ["--imgsz", "160"]


@pytest.fixture(autouse=True)
def _fresh_warnings():
    """The random-weights warnings are once per process: start each test afresh."""
    from ffedge.cli import args
    from ffedge.models import registry

    args._WARNED_RANDOM.clear()
    registry._WARNED_RANDOM.clear()
    yield


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    return synthetic_images(tmp_path_factory.mktemp("photo"), 1, size=(192, 256)) / "img_00.png"


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    """An ONNX model that is not a detector, an empty .onnx, non-TFLite bytes named .tflite."""
    import onnx
    from onnx import TensorProto, helper

    d = tmp_path_factory.mktemp("bad")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 64, 64])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), d / "plain.onnx")
    (d / "empty.onnx").write_bytes(b"")
    (d / "fake.tflite").write_bytes(b"hello, this is not a TFLite model")
    (d / "tiny.tflite").write_bytes(b"ab")
    (d / "existing").write_text("a file, not a folder")
    return {p.name: p for p in d.iterdir()}


def one_error(rc: int, out: str, err: str, *fix: str) -> str:
    """Exit 2, no traceback, exactly one ``error:`` line, naming every word in ``fix``."""
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in out + err
    lines = [ln for ln in (out + err).splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for word in fix:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def cli(capsys, main, argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# --- item 4: tracebacks become one error line ------------------------------------------------

@pytest.mark.parametrize("target, suffix", [("onnx", ".onnx"), ("tflite", ".tflite")])
def test_huge_imgsz_is_refused_with_the_size_that_fits(capsys, tmp_path, target, suffix):
    out = tmp_path / f"a{suffix}"
    line = one_error(*cli(capsys, ffexport, [target, "--model", "nano_b", "--imgsz", "100000",
                                             "-o", out]), "--imgsz", "or less", "GiB")
    side = int(re.search(r"--imgsz (\d+) or less", line).group(1))
    assert 0 < side < 100000 and side % 32 == 0
    assert not out.exists()


def test_ffdetect_huge_size_is_refused_up_front(capsys, tmp_path, photo):
    out = tmp_path / "out"
    one_error(*cli(capsys, ffdetect, [photo, "--model", "nano_b", "--size", "100000", "-o", out]),
              "--size 100000", "GiB", "or less")
    assert not out.exists()


def test_ffdetect_original_size_refuses_a_photo_too_large_for_memory(capsys, tmp_path, photo,
                                                                     monkeypatch):
    from ffedge.cli import args

    monkeypatch.setattr(args, "available_memory", lambda: 2**20)  # a 1 MiB machine
    out = tmp_path / "out"
    line = one_error(*cli(capsys, ffdetect, [photo, "--model", "nano_b", "--original-size",
                                             "-o", out]), "--original-size", "--size")
    assert "256x192" in line  # the padded size it would have run at
    assert not out.exists()


def test_ffdetect_original_size_says_what_it_runs_at(capsys, tmp_path, photo, monkeypatch):
    from ffedge.cli import detect

    monkeypatch.setattr(detect, "SLOW_PIXELS", 10_000)
    rc, out, err = cli(capsys, ffdetect, [photo, photo, "--model", "nano_b", "--original-size"])
    assert rc == 0
    assert "[1/2] img_00.png: running at 256x192" in err and "[2/2]" in err
    assert out.count("img_00.png:") == 2


@pytest.mark.parametrize("argv, fix", [
    (["--model", "nano_b", "--opset", "7"], ["--opset 7", "9-", "default 17"]),
    (["--model", "nano_b", "--opset", "99"], ["--opset 99", "9-"]),
    (["--model", "v1", "--dcn", "gridsample", "--opset", "12"], ["--dcn gridsample", "--opset 16"]),
    (["--model", "v1", "--opset", "12"], ["--dcn native", "--dcn gridsample"]),
])
def test_unusable_opsets_are_refused(capsys, tmp_path, argv, fix):
    out = tmp_path / "m.onnx"
    one_error(*cli(capsys, ffexport, ["onnx", *argv, *SMALL, "-o", out]), *fix)
    assert not out.exists()


@pytest.mark.slow
def test_opset_range_matches_what_torch_can_export():
    """The refused range is the real one: the lowest and highest accepted opsets export."""
    from ffedge.export.onnx_export import MIN_OPSET, OnnxOptions, max_opset, trace_to_onnx
    from ffedge.models import create_model

    net = create_model("nano_b", pretrained=False)
    for opset in (MIN_OPSET, max_opset()):
        assert trace_to_onnx(net, (64, 64), OnnxOptions(opset=opset, simplify=False)).opset == opset


@pytest.mark.parametrize("main, argv, fix", [
    (ffbench, ["--artifact", "plain.onnx", "--model", "v1"], ["not a v1 detector", "three outputs"]),
    (ffbench, ["--artifact", "plain.onnx"], ["no FeatherFace metadata", "--model"]),
    (ffbench, ["--artifact", "empty.onnx", "--model", "v1"], ["no ONNX graph", "ffexport onnx"]),
    (ffbench, ["--artifact", "fake.tflite"], ["not a TFLite model", "ffexport tflite"]),
    (ffbench, ["--artifact", "tiny.tflite", "--model", "v1"], ["not a TFLite model"]),
    (ffdetect, ["PHOTO", "--artifact", "empty.onnx"], ["no ONNX graph", "ffexport onnx"]),
    (ffdetect, ["PHOTO", "--artifact", "fake.tflite"], ["not a TFLite model", "ffexport tflite"]),
    (ffdetect, ["PHOTO", "--artifact", "plain.onnx", "--model", "nano_b"], ["not a nano_b detector"]),
])
def test_bad_artifacts_give_one_error_line(capsys, bad_files, photo, main, argv, fix):
    argv = [photo if a == "PHOTO" else bad_files.get(a, a) for a in argv]
    one_error(*cli(capsys, main, [*argv, "--iterations", "1"] if main is ffbench else argv), *fix)


@pytest.mark.parametrize("flag, value", [("--iterations", "0"), ("--warmup", "-1"),
                                         ("--threads", "0")])
def test_ffbench_counts_are_checked_before_any_work(capsys, flag, value):
    one_error(*cli(capsys, ffbench, ["--model", "nano_b", flag, value]), flag)


def test_ffdetect_output_that_is_a_file(capsys, bad_files, photo):
    existing = bad_files["existing"]
    one_error(*cli(capsys, ffdetect, [photo, "--model", "nano_b", "-o", existing]),
              "-o", "folder")
    assert existing.read_text() == "a file, not a folder"  # untouched


@pytest.mark.parametrize("main, argv, fix", [
    (ffexport, ["openvino", "--model", "v1", "--optimize", "5"], ["--optimize", "0, 1, 2"]),
    (ffdetect, [], ["IMAGE"]),
    (ffbench, ["sweep", "--model", "nano_b"], ["--images"]),
])
def test_usage_errors_are_one_line_without_the_usage_block(capsys, main, argv, fix):
    """argparse's own errors too: one ``error:`` line naming the flag and ``--help``, not the
    whole usage block above it."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    rc, cap = exc.value.code, capsys.readouterr()
    one_error(rc, cap.out, cap.err, *fix, "--help")
    assert "usage:" not in cap.out + cap.err


# --- item 5 (the lead's fixes, replayed) -----------------------------------------------------

def test_output_suffix_must_match_the_target(capsys, tmp_path):
    out = tmp_path / "x.tflite"
    one_error(*cli(capsys, ffexport, ["onnx", "--model", "nano_b", *SMALL, "-o", out]), ".onnx")
    assert not out.exists()


def test_unknown_runtime_lists_the_real_ones(capsys):
    line = one_error(*cli(capsys, ffbench, ["--runtime", "nosuch", "--model", "nano_b"]),
                     "nosuch")
    for runtime in ("onnxruntime", "openvino", "tflite"):
        assert runtime in line


# --- item 2: small calibration folders -------------------------------------------------------

@pytest.mark.slow  # the folder is read after the model is traced (~5-10 s here)
def test_a_calibration_folder_of_three_photos_names_the_fix(capsys, tmp_path):
    calib = synthetic_images(tmp_path / "calib", 3)
    out = tmp_path / "q.onnx"
    one_error(*cli(capsys, ffexport, ["int8", "--model", "nano_b", *SMALL, "--calib", calib,
                                      "-o", out]), "at least 4", "--eval-images")
    assert not out.exists()


# --- item 6: random weights are said, once ---------------------------------------------------

def test_python_create_model_loads_the_bundled_weights_like_the_cli():
    from ffedge.models import create_model
    from ffedge.models.checkpoint import read_state_dict
    from ffedge.weights import bundled_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # v1 has weights: no warning at all
        v1 = create_model("v1")
    assert v1.trained
    published = read_state_dict(bundled_checkpoint("v1"))
    key = "ClassHead.0.conv1x1.weight"
    assert np.array_equal(v1.state_dict()[key].numpy(), published[key].numpy())
    random_v1 = create_model("v1", pretrained=False)
    assert not random_v1.trained
    assert not np.array_equal(random_v1.state_dict()[key].numpy(), published[key].numpy())


def test_python_create_model_warns_once_for_random_weights():
    from ffedge.models import create_model
    from ffedge.models.registry import RandomWeightsWarning

    with pytest.warns(RandomWeightsWarning, match="nano_b has no trained weights"):
        assert not create_model("nano_b").trained
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_model("nano_b")  # once per process
        create_model("v2_ultra", pretrained=False)  # asked for: silent


def test_pipeline_trained_flag_follows_the_weights_it_used(tmp_path):
    """The pipeline's ``trained`` flag (gate on/off, verification images) is true exactly
    when trained weights were loaded; a random export says so in its notes."""
    import dataclasses

    from ffedge.artifact.targets import find_target
    from ffedge.export.pipeline import ExportRequest, _context
    from ffedge.weights import bundled_checkpoint

    record = find_target("onnx")
    fields = {f.name for f in dataclasses.fields(ExportRequest)}
    random_request = (ExportRequest("v1", random_init=True) if "random_init" in fields
                      else ExportRequest("v1"))  # before random_init: None meant random
    ctx = _context(record, random_request, tmp_path)
    assert not ctx.trained and not ctx.checkpoint_sha and not ctx.net.trained
    assert any("random weights" in n for n in ctx.notes)
    trained = _context(record, ExportRequest("v1", bundled_checkpoint("v1")), tmp_path)
    assert trained.trained and trained.checkpoint_sha and trained.net.trained
    nano = _context(record, ExportRequest("nano_b"), tmp_path)  # no bundled weights exist
    assert not nano.trained and any("random weights" in n for n in nano.notes)


def test_ffdetect_warns_once_about_random_weights(capsys, photo):
    rc, _, err = cli(capsys, ffdetect, [photo, photo, "--model", "nano_b", "--size", "160"])
    assert rc == 0 and err.count("RANDOM weights") == 1


@pytest.fixture(scope="module")
def random_nano_onnx(tmp_path_factory) -> Path:
    from ffedge.export.onnx_target import export_onnx

    out = tmp_path_factory.mktemp("art") / "nano_b.onnx"
    return export_onnx("nano_b", output=out, input_size=(160, 160), verify=False).path


def test_ffbench_warns_about_random_weights_and_says_what_it_times(capsys, random_nano_onnx):
    rc, out, err = cli(capsys, ffbench, ["--artifact", random_nano_onnx, "--iterations", "2",
                                         "--warmup", "1", "--threads", "1"])
    assert rc == 0 and "| onnxruntime |" in out
    assert err.count("RANDOM weights") == 1 and "nano_b.onnx" in err
    assert "1 warmup + 2 timed runs" in err  # a line before the timing starts


def test_ffdetect_warns_about_a_random_weights_artifact(capsys, random_nano_onnx, photo):
    rc, _, err = cli(capsys, ffdetect, [photo, "--artifact", random_nano_onnx, "--size", "160"])
    assert rc == 0 and err.count("RANDOM weights") == 1


# --- item 7: noise and telemetry -------------------------------------------------------------

def _run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120)


def test_third_party_output_is_hidden_ours_is_not():
    """fd-level stderr (C++ notices) and Python stdout inside an export (NNCF's bars) vanish;
    our own stderr lines and the results printed after the block stay."""
    code = (
        "import os, sys\n"
        "from ffedge.cli.verbosity import quiet_unless_verbose\n"
        "with quiet_unless_verbose(False, stdout=True):\n"
        "    print('third-party bar')\n"
        "    os.write(2, b'native notice\\n')\n"
        "    print('our line', file=sys.stderr)\n"
        "print('result')\n"
    )
    quiet = _run_python(code, {"FFEDGE_VERBOSE": "0"})
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "result\n" and quiet.stderr == "our line\n"
    loud = _run_python(code, {"FFEDGE_VERBOSE": "1"})
    assert "third-party bar" in loud.stdout and "native notice" in loud.stderr


def test_onnxruntime_writes_nothing_under_home(tmp_path, bad_files):
    """onnxruntime's 1DS telemetry writes ~/.cache/Microsoft/DeveloperTools on import unless
    ORT_DISABLE_TELEMETRY=1 is set first: importing ffedge sets it."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    env_clean = {k: v for k, v in os.environ.items()
                 if k not in ("ORT_DISABLE_TELEMETRY", "FFEDGE_ORT_TELEMETRY")}
    code = ("import ffedge, onnxruntime as ort\n"
            f"ort.InferenceSession({str(bad_files['plain.onnx'])!r}, "
            "providers=['CPUExecutionProvider'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**env_clean, **env}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert list(home.rglob("*")) == []


# --- item 8: progress on long steps ----------------------------------------------------------

@pytest.mark.slow
def test_fallback_search_counts_its_trials_and_the_gate_still_refuses(capsys, tmp_path,
                                                                      monkeypatch):
    from ffedge.export import onnx_target, pipeline  # the target registers its strategy

    assert onnx_target.INT8_FALLBACK in pipeline.FALLBACK

    def two_trials(build, names, reference, batches, min_f1):
        build(names[:1])
        build(names[:2])
        return None, 2

    for name in list(pipeline.FALLBACK):  # whichever strategy the target picks
        monkeypatch.setitem(pipeline.FALLBACK, name, two_trials)
    calib = synthetic_images(tmp_path / "calib", 8)
    out = tmp_path / "q.onnx"
    rc, o, err = cli(capsys, ffexport, ["int8", "--model", "nano_b", *SMALL, "--calib", calib,
                                        "--min-f1", "0.9999", "-o", out])
    assert "fallback trial 1: 1 of" in err and "fallback trial 2: 2 of" in err
    one_error(rc, o, err, "fidelity gate failed", "nothing written")
    assert not out.exists()


# --- item 9: README and ignore rules ---------------------------------------------------------

def test_readme_api_snippet_defines_every_name_it_uses():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    tree = ast.parse(block)
    import builtins

    defined = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.alias):
            defined.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    assert used <= defined, used - defined
    assert "image_bgr = cv2.imread(" in block
    assert "pip install 'featherface-edge" not in text  # no PyPI release exists
    assert "download.pytorch.org/whl/cpu" in text


def test_default_outputs_in_the_repo_root_are_ignored():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT
                              ).returncode == 0

    for name in ("v1.onnx", "nano_b_int8.onnx", "v1.xml", "v1.bin", "nano_b.tflite",
                 "nano_b.tflite.json"):
        assert ignored(name), name
    assert not ignored("tests/fixtures/model.onnx") and not ignored("docs/v1.onnx")


# --- item 1: the real-photo V1 export verifies -----------------------------------------------

@pytest.mark.slow
def test_v1_onnx_verifies_on_real_photos(capsys, tmp_path, shared_images):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("couple.jpg", "crowd_b.jpg", "portrait_a.jpg"):
        img = cv2.imread(str(shared_images / name))
        cv2.imwrite(str(photos / name), img)
    out = tmp_path / "v1.onnx"
    rc, o, err = cli(capsys, ffexport, ["onnx", "--model", "v1", "--verify-images", photos,
                                        "-o", out])
    assert rc == 0, err
    assert out.is_file() and "PASS" in o
