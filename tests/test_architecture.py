"""The house rules of issue 10, checked on the source: layers import downward only, no
import cycles between packages, short functions in export/, and the target registry as
the one place a target is added (a throwaway target works end to end with no other edit)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

PKG = Path(__file__).resolve().parents[1] / "ffedge"
# cli -> benchmarks -> export/runtimes/calibration -> artifact/decoder/models -> the rest
LAYERS = {"cli": 5, "benchmarks": 4, "export": 3, "runtimes": 3, "calibration": 3,
          "artifact": 2, "decoder": 2, "models": 2, "weights": 2}
BASE = 1  # spec, specs, errors, progress, imageio, drawn_faces


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(mod: str) -> int:
    return LAYERS.get(package(mod), BASE)


def imports() -> list[tuple[str, str, int]]:
    """(importer, imported, line) for every ffedge import, lazy ones included."""
    out = []
    for f in sorted(PKG.rglob("*.py")):
        mod = module_name(f)
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            out.extend((mod, n, node.lineno) for n in names if n.startswith("ffedge."))
    return out


def test_layers_import_downward_only():
    upward = [f"{a}:{line} imports {b}" for a, b, line in imports()
              if a != "ffedge" and layer(b) > layer(a) and package(a) != package(b)]
    assert upward == []


def test_no_import_cycles_between_packages():
    graph: dict[str, set[str]] = {}
    for a, b, _ in imports():
        if a != "ffedge" and package(a) != package(b):
            graph.setdefault(package(a), set()).add(package(b))
    seen: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert seen.get(nxt) != 1, "import cycle: " + " -> ".join(path + [node, nxt])
            if nxt not in seen:
                visit(nxt, path + [node])
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node, [])


def test_export_functions_are_short():
    long = []
    for f in sorted((PKG / "export").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > 60:
                    long.append(f"{f.relative_to(PKG)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def test_spec_layer_imports_without_torch():
    import subprocess
    import sys

    code = ("import sys; import ffedge.specs, ffedge.spec, ffedge.artifact.targets, "
            "ffedge.artifact.metadata, ffedge.artifact.formats; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- a throwaway target: one record, no other edit ------------------------------------------

class Fp32OnnxUnderAnotherSuffix:
    """Conversion = the FP32 ONNX target's, written under ``.ffx``."""

    def __new__(cls):
        from ffedge.export.onnx_target import OnnxTarget

        return OnnxTarget()


@pytest.fixture
def throwaway_target():
    from ffedge.artifact.targets import TargetRecord, register_target, unregister_target

    register_target(TargetRecord(
        name="ffx", runtime="ffx-runtime", suffixes=(".ffx",),
        summary="test target: FP32 ONNX under another suffix",
        exporter=f"{__name__}:Fp32OnnxUnderAnotherSuffix",
        runner="ffedge.runtimes.onnxruntime_runner:OnnxRuntimeRunner"))
    yield "ffx"
    unregister_target("ffx")


@pytest.mark.slow
def test_a_registry_record_is_all_a_target_needs(throwaway_target, tmp_path, capsys):
    from ffedge.cli.ffbench import main as ffbench
    from ffedge.cli.ffdetect import main as ffdetect
    from ffedge.cli.ffexport import main as ffexport
    from ffedge.runtimes import load_runner

    out = tmp_path / "nano.ffx"
    assert ffexport(["ffx", "--model", "nano_b", "--imgsz", "160", "-o", str(out)]) == 0
    assert out.is_file() and "exported nano_b" in capsys.readouterr().out
    runner = load_runner(artifact=out)
    assert runner.spec.input_size == (160, 160)
    assert runner.infer(np.zeros((1, 3, 160, 160), np.float32))[1].shape[-1] == 2
    assert ffbench(["--runtime", "ffx-runtime", "--model", "nano_b", "--imgsz", "160",
                    "--iterations", "2", "--warmup", "1", "--no-parity"]) == 0
    assert "nano_b.ffx" in capsys.readouterr().out  # built through the record, benchmarked
    img = tmp_path / "face.png"
    import cv2

    from ffedge.drawn_faces import drawn_faces

    cv2.imwrite(str(img), drawn_faces(0, (160, 160)))
    assert ffdetect([str(img), "--artifact", str(out)]) == 0
    assert "face" in capsys.readouterr().out
    assert ffexport(["ffx", "--model", "nano_b", "-o", str(tmp_path / "wrong.onnx")]) == 2
    assert "must end in .ffx" in capsys.readouterr().err


def test_unknown_runtime_lists_the_registered_ones(capsys):
    from ffedge.cli.ffbench import main as ffbench

    assert ffbench(["--runtime", "nosuch", "--model", "nano_b"]) == 2
    err = capsys.readouterr().err
    assert "unknown runtime or target 'nosuch'" in err
    for name in ("torch", "onnxruntime", "openvino", "tflite"):
        assert name in err
