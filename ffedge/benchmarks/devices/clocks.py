"""CPU clocks: cpufreq state, ``jetson_clocks --show``, and ``--lock-clocks`` (restored after)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ffedge.benchmarks.devices._proc import read_text
from ffedge.errors import FFEdgeError

_CPU_LINE = re.compile(
    r"cpu(\d+):\s+Online=(\d)\s+Governor=(\S+)\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)")
_UNIT_LINE = re.compile(r"^(GPU|EMC)\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)", re.M)


def cpufreq(root: Path = Path("/")) -> dict:
    """Governor and min/max/current MHz over the online CPUs; ``locked`` when min == max."""
    cpus = sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq"))
    govs, mins, maxs, curs = set(), [], [], []
    for d in cpus:
        vals = [read_text(d / f) for f in ("scaling_min_freq", "scaling_max_freq", "scaling_cur_freq")]
        if not all(v and v.isdigit() for v in vals):
            continue
        lo, hi, cur = (int(v) for v in vals)  # kHz
        mins.append(lo)
        maxs.append(hi)
        curs.append(cur)
        govs.add(read_text(d / "scaling_governor") or "?")
    if not mins:
        return {"governor": None, "min_mhz": None, "max_mhz": None, "cur_mhz": None, "locked": None}
    return {
        "governor": ",".join(sorted(govs)),
        "min_mhz": round(min(mins) / 1000),
        "max_mhz": round(max(maxs) / 1000),
        "cur_mhz": round(max(curs) / 1000),
        "locked": all(lo == hi for lo, hi in zip(mins, maxs)) or govs == {"performance"},
    }


def parse_jetson_clocks_show(text: str) -> dict:
    """``jetson_clocks --show`` -> per-CPU and GPU/EMC clocks; ``locked`` when CPU and GPU
    minimum equals maximum (what ``jetson_clocks`` does)."""
    cpus = [
        {"cpu": int(m[0]), "online": m[1] == "1", "governor": m[2], "min_khz": int(m[3]),
         "max_khz": int(m[4]), "cur_khz": int(m[5])}
        for m in _CPU_LINE.findall(text)
    ]
    units = {m[0]: {"min_hz": int(m[1]), "max_hz": int(m[2]), "cur_hz": int(m[3])}
             for m in _UNIT_LINE.findall(text)}
    online = [c for c in cpus if c["online"]]
    locked = bool(online) and all(c["min_khz"] == c["max_khz"] for c in online)
    if "GPU" in units:
        locked = locked and units["GPU"]["min_hz"] == units["GPU"]["max_hz"]
    mode = re.search(r"NV Power Mode:\s*(\S+)", text)
    return {"cpus": cpus, **{k.lower(): v for k, v in units.items()}, "locked": locked,
            "power_mode": mode.group(1) if mode else None}


def _privileged(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return argv
    return ["sudo", "-n", *argv]


def _jetson_clocks(args: list[str]) -> None:
    argv = _privileged(["jetson_clocks", *args])
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise FFEdgeError(f"jetson_clocks failed: {exc}") from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        raise FFEdgeError(
            f"`{' '.join(argv)}` failed ({why[-1] if why else done.returncode}); --lock-clocks "
            "needs root: run ffbench with sudo, or allow jetson_clocks in sudoers")


@contextmanager
def locked_clocks(enabled: bool) -> Iterator[bool]:
    """With ``enabled``: store the clocks, run ``jetson_clocks``, and restore them on the way out,
    also after an error or Ctrl-C. Yields whether ffbench locked them."""
    if not enabled:
        yield False
        return
    if shutil.which("jetson_clocks") is None:
        raise FFEdgeError("--lock-clocks uses jetson_clocks, which is not here (a Jetson only); "
                          "drop --lock-clocks")
    with tempfile.TemporaryDirectory(prefix="ffbench-clocks-") as tmp:
        store = str(Path(tmp) / "clocks.conf")
        _jetson_clocks(["--store", store])
        _jetson_clocks([])
        try:
            yield True
        finally:
            try:
                _jetson_clocks(["--restore", store])
            except FFEdgeError as exc:
                print(f"warning: clocks not restored: {exc}", file=sys.stderr)
