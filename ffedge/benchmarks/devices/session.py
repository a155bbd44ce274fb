"""A local run on a device: clocks locked (optional), power sampled, thermal before and after."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from ffedge.benchmarks.devices.clocks import cpufreq, locked_clocks
from ffedge.benchmarks.devices.sysinfo import device_info
from ffedge.benchmarks.devices.tegrastats import TegrastatsSampler, wait_for_samples
from ffedge.benchmarks.devices.thermal import thermal_zones


class DeviceSession:
    """``with DeviceSession("jetson", lock_clocks=True) as s: ...; block = s.finish(results)``.

    On enter: lock the clocks (restored on exit, also after an error), read the device block
    (so ``clocks`` shows the state during the run) and start ``tegrastats`` when it exists.
    ``finish`` stops sampling, reads the thermal zones again and returns the device block with
    power and energy per frame (mean board power x mean model latency).
    """

    def __init__(self, kind: str = "local", lock_clocks: bool = False,
                 sampler: TegrastatsSampler | None = None) -> None:
        self.kind = kind
        self.lock_clocks = lock_clocks
        self.sampler = sampler
        self.block: dict[str, Any] = {}
        self._stack = ExitStack()
        self._finished = False

    def __enter__(self) -> DeviceSession:
        with ExitStack() as stack:
            locked = stack.enter_context(locked_clocks(self.lock_clocks))
            self.block = device_info(self.kind)
            self.block["clocks"]["locked_by_ffbench"] = locked
            if self.sampler is None and TegrastatsSampler.available():
                self.sampler = TegrastatsSampler()
            if self.sampler is not None:
                self.sampler.start()
                wait_for_samples(self.sampler, 1, timeout_s=1.5)
            self._stack = stack.pop_all()
        return self

    def finish(self, results: list | None = None) -> dict[str, Any]:
        if self._finished:
            return self.block
        self._finished = True
        latency = None
        if results:
            lat = getattr(results[0], "model_latency", None)
            latency = getattr(lat, "mean_ms", None)
        if self.sampler is not None:
            summary = self.sampler.stop()
            self.block["power"] = summary.to_dict(latency) if summary.samples else None
        else:
            self.block["power"] = None
        self.block["thermal_c"]["after"] = thermal_zones()
        after = cpufreq()
        self.block["clocks"]["cur_mhz_after"] = after.get("cur_mhz")
        return self.block

    def __exit__(self, *exc) -> None:
        try:
            if not self._finished and self.sampler is not None:
                self.sampler.stop()
        finally:
            self._stack.close()
