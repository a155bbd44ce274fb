"""``tegrastats``: power rails sampled in the background during a run; energy per frame.

A line holds rails as ``NAME cur/avg`` (JetPack 4: numbers in mW) or ``NAME curmW/avgmW``
(JetPack 5+, JetPack 7 adds a third ``/max``). The board total is ``VDD_IN`` (Orin Nano/NX,
Xavier NX) or ``POM_5V_IN`` (Nano, TX2); AGX Orin has no total rail, so its rails are summed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*)\s+(\d+)(?:mW)?/(\d+)(?:mW)?(?:/\d+(?:mW)?)?(?=\s|$)")
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "CPU", "EMC_FREQ", "GR3D_FREQ"}
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
_GPU = re.compile(r"GR3D_FREQ\s+(\d+)%")
_RAM = re.compile(r"RAM\s+(\d+)/(\d+)MB")


def parse_line(line: str) -> dict:
    """One tegrastats line -> ``{"rails_mw": {name: current mW}, "temps_c": {...}, ...}``."""
    rails = {name: int(cur) for name, cur, _avg in _RAIL.findall(line) if name not in _NOT_RAILS}
    temps = {name: float(t) for name, t in _TEMP.findall(line) if float(t) > -40}
    gpu = _GPU.search(line)
    ram = _RAM.search(line)
    return {
        "rails_mw": rails,
        "temps_c": temps,
        "gpu_pct": int(gpu.group(1)) if gpu else None,
        "ram_mb": int(ram.group(1)) if ram else None,
    }


def total_mw(rails: dict[str, int]) -> tuple[int | None, str | None]:
    """The board's power: its input rail, else the sum of every rail (named ``sum``)."""
    for name in TOTAL_RAILS:
        if name in rails:
            return rails[name], name
    if rails:
        return sum(rails.values()), "sum(" + "+".join(sorted(rails)) + ")"
    return None, None


@dataclass
class PowerSummary:
    samples: int
    total_rail: str | None
    mean_mw: float | None
    max_mw: int | None
    rails_mean_mw: dict[str, float] = field(default_factory=dict)
    gpu_mean_pct: float | None = None

    def energy_mj_per_frame(self, latency_ms: float | None) -> float | None:
        """Board energy of one inference: mean power (mW) x mean latency (ms) / 1000."""
        if self.mean_mw is None or not latency_ms:
            return None
        return self.mean_mw * latency_ms / 1000.0

    def to_dict(self, latency_ms: float | None = None) -> dict:
        e = self.energy_mj_per_frame(latency_ms)
        return {
            "samples": self.samples,
            "total_rail": self.total_rail,
            "mean_mw": None if self.mean_mw is None else round(self.mean_mw, 1),
            "max_mw": self.max_mw,
            "rails_mean_mw": {k: round(v, 1) for k, v in self.rails_mean_mw.items()},
            "gpu_mean_pct": None if self.gpu_mean_pct is None else round(self.gpu_mean_pct, 1),
            "energy_mj_per_frame": None if e is None else round(e, 3),
        }


def summarize(lines: list[str]) -> PowerSummary:
    parsed = [parse_line(ln) for ln in lines if ln.strip()]
    parsed = [p for p in parsed if p["rails_mw"]]
    if not parsed:
        return PowerSummary(0, None, None, None)
    totals = [total_mw(p["rails_mw"]) for p in parsed]
    values = [t for t, _ in totals if t is not None]
    names = sorted({k for p in parsed for k in p["rails_mw"]})
    rails = {n: sum(p["rails_mw"].get(n, 0) for p in parsed) / len(parsed) for n in names}
    gpu = [p["gpu_pct"] for p in parsed if p["gpu_pct"] is not None]
    return PowerSummary(
        samples=len(parsed), total_rail=totals[0][1],
        mean_mw=sum(values) / len(values) if values else None,
        max_mw=max(values) if values else None, rails_mean_mw=rails,
        gpu_mean_pct=sum(gpu) / len(gpu) if gpu else None,
    )


class TegrastatsSampler:
    """Run ``tegrastats --interval MS`` in the background and keep its lines.

    ``command`` replaces the tool (tests feed recorded lines through a small script).
    """

    def __init__(self, interval_ms: int = 100, command: list[str] | None = None) -> None:
        self.command = command or ["tegrastats", "--interval", str(interval_ms)]
        self.lines: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("tegrastats") is not None

    def start(self) -> TegrastatsSampler:
        try:
            self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self._proc = None
            return self
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> PowerSummary:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return summarize(self.lines)

    def __enter__(self) -> TegrastatsSampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for_samples(sampler: TegrastatsSampler, n: int = 1, timeout_s: float = 2.0) -> None:
    """Block until the sampler holds ``n`` lines (so a short run still gets a reading)."""
    end = time.monotonic() + timeout_s
    while len(sampler.lines) < n and time.monotonic() < end:
        time.sleep(0.02)
