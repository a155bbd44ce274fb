"""Android over ``adb``: push a ``.tflite`` and LiteRT's ``benchmark_model``, run, parse.

``benchmark_model`` is the LiteRT / TensorFlow Lite benchmark binary (prebuilt
``android_aarch64_benchmark_model`` from the LiteRT releases, or built with bazel). ffbench
pushes the one given with ``--benchmark-model PATH``, else uses one already on the device.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from ffedge.benchmarks.devices.benchmark_model import parse_benchmark_model
from ffedge.benchmarks.devices.cache_keys import artifact_sha256
from ffedge.errors import FFEdgeError

DEVICE_DIR = "/data/local/tmp/ffedge"
SEARCH = ("/data/local/tmp/benchmark_model", f"{DEVICE_DIR}/bin/benchmark_model",
          "/data/local/tmp/android_aarch64_benchmark_model")
DELEGATE_FLAGS = {
    "cpu": ["--use_xnnpack=false"],
    "xnnpack": ["--use_xnnpack=true"],
    "gpu": ["--use_gpu=true"],
    "nnapi": ["--use_nnapi=true"],
}
GET_BENCHMARK_MODEL = ("download LiteRT's prebuilt android_aarch64_benchmark_model (see "
                       "docs/devices.md) and pass --benchmark-model PATH")


def benchmark_flags(graph: str, threads: int, warmup: int, runs: int, delegate: str) -> list[str]:
    if delegate not in DELEGATE_FLAGS:
        raise FFEdgeError(f"--delegate {delegate}: choose one of {', '.join(DELEGATE_FLAGS)}")
    return [f"--graph={graph}", f"--num_threads={threads}", f"--warmup_runs={warmup}",
            f"--num_runs={runs}", *DELEGATE_FLAGS[delegate]]


class AdbDevice:
    def __init__(self, serial: str | None = None, adb: str = "adb") -> None:
        if shutil.which(adb) is None:
            raise FFEdgeError("--device android needs adb on PATH (Android SDK platform-tools)")
        self.serial = serial
        self.base = [adb, *(["-s", serial] if serial else [])]
        state = self._run(["get-state"], check=False)
        if state.returncode != 0 or state.stdout.strip() != "device":
            why = (state.stderr or state.stdout).strip().splitlines()
            raise FFEdgeError(
                f"no Android device ready ({why[-1] if why else 'adb get-state failed'}): connect "
                "one with USB debugging on (see `adb devices`); with several, pass --serial S")

    def _run(self, args: list[str], check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run([*self.base, *args], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise FFEdgeError(f"adb {args[0]} took more than {timeout:.0f} s") from None
        if check and done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()
            raise FFEdgeError(f"adb {args[0]} failed: {why[-1] if why else done.returncode}")
        return done

    def shell(self, command: str, check: bool = True, timeout: float = 600) -> str:
        return self._run(["shell", command], check=check, timeout=timeout).stdout

    def push(self, local: Path, remote: str) -> None:
        self._run(["push", str(local), remote])

    def upload(self, path: Path) -> str:
        """``/data/local/tmp/ffedge/<sha256>/NAME``, pushed once."""
        sha = artifact_sha256(path)
        dest = f"{DEVICE_DIR}/{sha}/{path.name}"
        if self._run(["shell", f"test -f {shlex.quote(dest)}"], check=False).returncode != 0:
            self.shell(f"mkdir -p {shlex.quote(f'{DEVICE_DIR}/{sha}')}")
            self.push(path, dest)
        return dest

    def benchmark_model(self, given: str | None) -> str:
        """The binary's path on the device: pushed from ``given`` (a local file), ``given`` as a
        device path, or the first of the usual places."""
        if given and Path(given).is_file():
            dest = f"{DEVICE_DIR}/bin/benchmark_model"
            self.shell(f"mkdir -p {DEVICE_DIR}/bin")
            self.push(Path(given), dest)
            self.shell(f"chmod 755 {dest}")
            return dest
        for cand in ([given] if given else list(SEARCH)):
            if self._run(["shell", f"test -x {shlex.quote(cand)}"], check=False).returncode == 0:
                return cand
        where = given or ", ".join(SEARCH)
        raise FFEdgeError(f"benchmark_model not found on the device ({where}): {GET_BENCHMARK_MODEL}")

    def properties(self) -> dict:
        keys = {"manufacturer": "ro.product.manufacturer", "model": "ro.product.model",
                "android": "ro.build.version.release", "sdk": "ro.build.version.sdk",
                "soc": "ro.soc.model", "platform": "ro.board.platform", "abi": "ro.product.cpu.abi"}
        out = {}
        for name, prop in keys.items():
            out[name] = self.shell(f"getprop {prop}", check=False).strip() or None
        return out

    def thermal(self) -> dict[str, float]:
        text = self.shell("for z in /sys/class/thermal/thermal_zone*; do "
                          "echo \"$(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null)\"; done",
                          check=False)
        return parse_thermal_listing(text)

    def run_benchmark(self, graph: str, binary: str, threads: int, warmup: int, runs: int,
                      delegate: str) -> tuple[dict, str]:
        flags = benchmark_flags(graph, threads, warmup, runs, delegate)
        text = self.shell(" ".join([shlex.quote(binary), *map(shlex.quote, flags)]) + " 2>&1",
                          check=False)
        try:
            return parse_benchmark_model(text), text
        except ValueError:
            tail = [ln for ln in text.strip().splitlines() if ln.strip()][-3:]
            raise FFEdgeError("benchmark_model gave no timings: " + " | ".join(tail)) from None


def parse_thermal_listing(text: str) -> dict[str, float]:
    """``TYPE MILLIDEGREES`` lines -> ``{type: °C}`` (sensors reporting nonsense dropped)."""
    zones: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.strip().rsplit(" ", 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            continue
        milli = int(parts[1])
        if -40000 < milli <= 150000:
            name, n = parts[0] or "zone", 2
            key = name
            while key in zones:
                key, n = f"{name}#{n}", n + 1
            zones[key] = round(milli / 1000.0, 1)
    return zones
