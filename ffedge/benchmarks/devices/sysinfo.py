"""The device block of a report: what machine produced these numbers.

Read at run time, on the machine that runs the model: board, OS, CPU model, runtime versions,
CPU clocks, thermal zones, and on a Jetson its L4T/JetPack, TensorRT and power mode.
"""

from __future__ import annotations

import os
import platform
import re
import socket
from importlib import metadata
from pathlib import Path

from ffedge.benchmarks.devices._proc import read_text
from ffedge.benchmarks.devices.clocks import cpufreq
from ffedge.benchmarks.devices.jetson import jetson_info
from ffedge.benchmarks.devices.thermal import thermal_zones

RUNTIME_DISTS = ("onnxruntime", "onnxruntime-gpu", "openvino", "ai-edge-litert", "tflite-runtime",
                 "tensorrt", "torch", "numpy", "opencv-python-headless")


def cpu_model(root: Path = Path("/")) -> str | None:
    """``model name`` (x86), else ``Hardware`` / ``Model`` (Arm boards), else the device tree."""
    text = read_text(root / "proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model", "cpu model", "Processor"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.M)
        if m and m.group(1).strip():
            return m.group(1).strip()
    parts = re.findall(r"^CPU part\s*:\s*(0x[0-9a-f]+)$", text, re.M)
    if parts:
        return f"Arm (CPU part {', '.join(sorted(set(parts)))})"
    return platform.processor() or None


def board_name(root: Path = Path("/")) -> str | None:
    """Device-tree model (Arm boards), else the DMI vendor + product (PCs)."""
    model = read_text(root / "proc/device-tree/model")
    if model:
        return model
    vendor = read_text(root / "sys/class/dmi/id/sys_vendor")
    product = read_text(root / "sys/class/dmi/id/product_name")
    named = " ".join(p for p in (vendor, product) if p and p.lower() not in ("", "none"))
    return named or None


def os_name(root: Path = Path("/")) -> str:
    text = read_text(root / "etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', text, re.M)
    return m.group(1) if m else platform.system()


def runtime_versions() -> dict[str, str]:
    """Installed versions of the packages that decide the numbers (no imports)."""
    import ffedge

    out = {"ffedge": ffedge.__version__, "python": platform.python_version()}
    for dist in RUNTIME_DISTS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def device_info(kind: str = "local", root: Path = Path("/"), query_tools: bool = True) -> dict:
    """The static part of the device block (thermal is read again after the run)."""
    jet = jetson_info(root, query_tools=query_tools)
    versions = runtime_versions()
    if jet and jet.tensorrt:
        versions.setdefault("tensorrt", jet.tensorrt)
    return {
        "kind": kind,
        "hostname": socket.gethostname(),
        "board": board_name(root),
        "os": os_name(root),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu_model": cpu_model(root),
        "cpu_count": os.cpu_count(),
        "runtimes": versions,
        "power_mode": jet.power_mode if jet else None,
        "clocks": cpufreq(root),
        "jetson": jet.to_dict() if jet else None,
        "thermal_c": {"before": thermal_zones(root), "after": None},
    }
