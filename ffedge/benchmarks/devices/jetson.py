"""NVIDIA Jetson: detection, L4T -> JetPack, TensorRT version, ``nvpmodel -q``."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ffedge.benchmarks.devices._proc import read_text, run_text

_L4T_LINE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)")
_BOARD = re.compile(r"BOARD:\s*([\w.-]+)")

# L4T release -> JetPack, exact releases only (NVIDIA's JetPack archive). An unknown
# revision reports the JetPack major series instead of a guessed minor.
L4T_TO_JETPACK = {
    "32.4.3": "4.4", "32.4.4": "4.4.1", "32.5.0": "4.5", "32.5.1": "4.5.1", "32.5.2": "4.5.1",
    "32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4",
    "32.7.5": "4.6.5", "32.7.6": "4.6.6",
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
    "35.6.0": "5.1.4", "35.6.1": "5.1.5",
    "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1",
    "38.2.0": "7.0",
}
_JETPACK_SERIES = {"32": "4.x", "34": "5.0 DP", "35": "5.x", "36": "6.x", "38": "7.x", "39": "7.x"}


@dataclass
class L4TRelease:
    major: str
    revision: str
    board: str | None = None

    @property
    def version(self) -> str:
        """``35.4.1`` (a revision with one part is padded: ``R36 REVISION: 3`` -> ``36.3.0``)."""
        parts = self.revision.split(".")
        while len(parts) < 2:
            parts.append("0")
        return ".".join([self.major, *parts])


def parse_nv_tegra_release(text: str | None) -> L4TRelease | None:
    """The first line of ``/etc/nv_tegra_release``: ``# R35 (release), REVISION: 4.1, ...``."""
    if not text:
        return None
    m = _L4T_LINE.search(text)
    if not m:
        return None
    board = _BOARD.search(text)
    return L4TRelease(m.group(1), m.group(2), board.group(1) if board else None)


def jetpack_for(l4t: str | None) -> str | None:
    """JetPack version for an L4T version (``35.4.1`` -> ``5.1.2``); series when unknown."""
    if not l4t:
        return None
    if l4t in L4T_TO_JETPACK:
        return L4T_TO_JETPACK[l4t]
    series = _JETPACK_SERIES.get(l4t.split(".")[0])
    return f"{series} (L4T {l4t})" if series else None


def parse_nvpmodel(text: str | None) -> tuple[str | None, int | None]:
    """``nvpmodel -q`` -> (mode name, mode id): ``NV Power Mode: MAXN`` then ``0``."""
    if not text:
        return None, None
    lines = [ln.strip() for ln in text.splitlines()]
    for i, line in enumerate(lines):
        m = re.search(r"NV Power Mode:\s*(\S.*)$", line)
        if not m:
            continue
        mode_id = None
        for nxt in lines[i + 1:]:
            if nxt.isdigit():
                mode_id = int(nxt)
                break
            if nxt and not nxt.startswith("NVPM"):
                break
        return m.group(1).strip(), mode_id
    return None, None


def parse_trt_version_header(text: str | None) -> str | None:
    """``NvInferVersion.h``: ``#define NV_TENSORRT_MAJOR 8`` (MINOR, PATCH) -> ``8.5.2``."""
    if not text:
        return None
    parts = []
    for key in ("MAJOR", "MINOR", "PATCH"):
        m = re.search(rf"#define\s+(?:NV_)?TENSORRT_{key}\s+(\d+)", text)
        if not m:
            return None
        parts.append(m.group(1))
    return ".".join(parts)


def tensorrt_version(root: Path = Path("/")) -> str | None:
    """TensorRT on this machine: the Python package, dpkg, or the C header."""
    from importlib import metadata

    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-libs"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    for pkg in ("tensorrt", "libnvinfer10", "libnvinfer8"):
        out = run_text(["dpkg-query", "--show", "--showformat=${Version}", pkg])
        if out and out[0].isdigit():
            return out.split("-")[0].split("+")[0]
    for inc in ("usr/include/aarch64-linux-gnu", "usr/include/x86_64-linux-gnu", "usr/include"):
        ver = parse_trt_version_header(read_text(root / inc / "NvInferVersion.h"))
        if ver:
            return ver
    return None


@dataclass
class JetsonInfo:
    model: str | None
    l4t: str | None
    jetpack: str | None
    soc_board: str | None
    tensorrt: str | None
    power_mode: str | None
    power_mode_id: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def is_jetson(root: Path = Path("/")) -> bool:
    """``/etc/nv_tegra_release`` exists, or the device tree names a Jetson / Tegra board."""
    if (root / "etc/nv_tegra_release").exists():
        return True
    model = read_text(root / "proc/device-tree/model") or ""
    compatible = read_text(root / "proc/device-tree/compatible") or ""
    return "jetson" in model.lower() or "nvidia,tegra" in compatible.lower()


def jetson_info(root: Path = Path("/"), query_tools: bool = True) -> JetsonInfo | None:
    """Everything the report says about a Jetson, or None when this is not one."""
    if not is_jetson(root):
        return None
    rel = parse_nv_tegra_release(read_text(root / "etc/nv_tegra_release"))
    l4t = rel.version if rel else None
    mode, mode_id = parse_nvpmodel(run_text(["nvpmodel", "-q"])) if query_tools else (None, None)
    return JetsonInfo(
        model=read_text(root / "proc/device-tree/model"),
        l4t=l4t,
        jetpack=jetpack_for(l4t),
        soc_board=rel.board if rel else None,
        tensorrt=tensorrt_version(root) if query_tools else None,
        power_mode=mode,
        power_mode_id=mode_id,
    )
