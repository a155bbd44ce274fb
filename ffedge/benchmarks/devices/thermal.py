"""Thermal state from ``/sys/class/thermal``: every zone's type and temperature in °C."""

from __future__ import annotations

from pathlib import Path

from ffedge.benchmarks.devices._proc import read_text


def thermal_zones(root: Path = Path("/")) -> dict[str, float]:
    """``{zone type: °C}``; sensors that report nonsense (Jetson's -256 °C, off) are left out."""
    zones: dict[str, float] = {}
    base = root / "sys/class/thermal"
    if not base.is_dir():
        return zones
    for zone in sorted(base.glob("thermal_zone*"), key=lambda p: int(p.name[12:] or 0)):
        raw = read_text(zone / "temp")
        try:
            millideg = int(raw) if raw is not None else None
        except ValueError:
            millideg = None
        if millideg is None or millideg <= -40000 or millideg > 150000:
            continue
        name = read_text(zone / "type") or zone.name
        key, n = name, 2
        while key in zones:
            key, n = f"{name}#{n}", n + 1
        zones[key] = round(millideg / 1000.0, 1)
    return zones


def hottest(zones: dict[str, float]) -> float | None:
    return max(zones.values()) if zones else None
