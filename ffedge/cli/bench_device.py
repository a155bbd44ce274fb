"""``ffbench --device local|linux|jetson|android`` (and ``--host``): where the benchmark runs.

- no ``--host``: here, with a device block in the report (board, OS, CPU, runtimes, clocks,
  thermal before/after; on a Jetson also L4T/JetPack, TensorRT, power mode and tegrastats power);
- ``--host user@addr``: over SSH on that machine (``ffbench`` must be installed there);
- ``--device android``: LiteRT's ``benchmark_model`` on a phone over ``adb``.

See docs/devices.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ffedge.errors import FFEdgeError

DEVICES = ("local", "linux", "jetson", "android")
# Options that only make sense on this side of an SSH run: never sent to the device.
_LOCAL_ONLY = {"host", "port", "identity", "ssh_option", "remote_ffbench", "remote_cache",
               "serial", "benchmark_model", "json", "help", "verbose_remote"}
_UPLOADED = ("artifact", "images", "checkpoint")


def add_device_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("device (see docs/devices.md)")
    g.add_argument("--device", choices=DEVICES, default="local",
                   help="where the model runs: local (here), linux or jetson (here, or on --host "
                        "over SSH), android (over adb)")
    g.add_argument("--host", metavar="USER@ADDR", default=None,
                   help="run on this machine over SSH (system ssh/scp, key login)")
    g.add_argument("--port", type=int, default=None, help="SSH port (default: ssh's)")
    g.add_argument("--identity", type=Path, default=None, metavar="FILE", help="SSH private key")
    g.add_argument("--ssh-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra `ssh -o` option (repeatable), e.g. ProxyJump=gw")
    g.add_argument("--remote-ffbench", default=os.environ.get("FFEDGE_REMOTE_FFBENCH", "ffbench"),
                   metavar="PATH", help="ffbench on the device (default: ffbench on its PATH; "
                                        "env FFEDGE_REMOTE_FFBENCH)")
    g.add_argument("--remote-cache", default=os.environ.get("FFEDGE_REMOTE_CACHE", "~/.cache/ffedge"),
                   metavar="DIR", help="artifact cache on the device (default ~/.cache/ffedge)")
    g.add_argument("--verbose-remote", action="store_true",
                   help="also show what ffbench prints on the device's stdout")
    g.add_argument("--lock-clocks", action="store_true",
                   help="Jetson: jetson_clocks for the run, previous clocks restored after")
    g.add_argument("--serial", default=None, metavar="S", help="android: adb device serial")
    g.add_argument("--benchmark-model", default=None, metavar="PATH",
                   help="android: LiteRT benchmark_model binary to push (or its path on the device)")
    g.add_argument("--delegate", choices=("cpu", "xnnpack", "gpu", "nnapi"), default="xnnpack",
                   help="android: benchmark_model delegate (default xnnpack)")
    p.set_defaults(device_parser=p)


def run_on_device(args: argparse.Namespace, run_here: Callable[[argparse.Namespace], int]) -> int:
    """The hook of ``ffbench run``: dispatch on --device/--host, else run here in a session."""
    from ffedge.benchmarks.devices.jetson import is_jetson
    from ffedge.benchmarks.devices.session import DeviceSession

    device = getattr(args, "device", "local")
    if getattr(args, "host", None):
        if device == "android":
            raise FFEdgeError("--device android runs over adb, not SSH: drop --host (--serial S "
                              "picks the phone)")
        return run_remote(args)
    if device == "android":
        return run_android(args)
    if device == "jetson" and not is_jetson():
        raise FFEdgeError("--device jetson: this machine is not a Jetson (no /etc/nv_tegra_release); "
                          "run ffbench on the Jetson itself, or pass --host user@jetson to run it "
                          "there over SSH")
    if getattr(args, "lock_clocks", False) and not is_jetson():
        raise FFEdgeError("--lock-clocks uses jetson_clocks and works on a Jetson only; drop it")
    with DeviceSession(device, lock_clocks=getattr(args, "lock_clocks", False)) as session:
        args.device_session = session
        return run_here(args)


def device_doc(args: argparse.Namespace, results: list) -> dict:
    """What the report JSON gains: ``{"device": {...}}`` (and one summary line on stdout)."""
    block = getattr(args, "device_block", None)
    session = getattr(args, "device_session", None)
    if block is None and session is not None:
        block = session.finish(results)
    if block is None:  # ffbench compare, or a run without the device options
        from ffedge.benchmarks.devices.sysinfo import device_info

        block = device_info("local")
        block["thermal_c"]["after"] = block["thermal_c"]["before"]
        return {"device": block}
    print(device_summary(block))
    return {"device": block}


def device_summary(block: dict) -> str:
    parts = [block.get("board") or block.get("hostname") or "unknown board"]
    jet = block.get("jetson") or {}
    if jet.get("jetpack"):
        parts.append(f"JetPack {jet['jetpack']}")
    if block.get("power_mode"):
        parts.append(f"power mode {block['power_mode']}")
    clocks = block.get("clocks") or {}
    if clocks.get("locked") is not None:
        parts.append("clocks locked" if clocks["locked"] else "clocks dynamic")
    power = block.get("power") or {}
    if power.get("mean_mw") is not None:
        parts.append(f"{power['mean_mw'] / 1000:.2f} W ({power['total_rail']})")
    if power.get("energy_mj_per_frame") is not None:
        parts.append(f"{power['energy_mj_per_frame']:.2f} mJ/frame")
    remote = block.get("remote") or {}
    where = f" on {remote['host']}" if remote.get("host") else ""
    return f"device{where}: " + ", ".join(parts)


# -- SSH ---------------------------------------------------------------------------------
def remote_argv(args: argparse.Namespace, replace: dict[str, str]) -> list[str]:
    """The same ``ffbench run`` options for the device, rebuilt from the parser's actions
    (the paths in ``replace`` swapped for their copies on the device)."""
    parser: argparse.ArgumentParser = args.device_parser
    out: list[str] = []
    for action in parser._actions:
        dest = action.dest
        if not action.option_strings or dest in _LOCAL_ONLY or dest == "device_parser":
            continue
        value = replace.get(dest, getattr(args, dest, None))
        if value is None or value is False or value == []:
            continue  # every other value is sent, defaults too: the same run, whatever its defaults
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            out += [flag] if value else []
        elif isinstance(action, argparse._StoreFalseAction):
            out += [] if value else [flag]
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                out += [flag, str(item)]
        elif isinstance(value, (list, tuple)):
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


def run_remote(args: argparse.Namespace) -> int:
    from ffedge import __version__
    from ffedge.benchmarks.devices.remote import Remote
    from ffedge.benchmarks.devices.side_by_side import result_from_dict
    from ffedge.cli.bench_run import emit

    if args.artifact is not None and not Path(args.artifact).exists():
        raise FFEdgeError(f"--artifact {args.artifact}: no such file")
    remote = Remote(args.host, args.port, args.identity, args.ssh_option,
                    ffbench=args.remote_ffbench, cache=args.remote_cache)
    version = remote.check_ffbench(__version__)
    print(f"{args.host}: ffbench {version}", file=sys.stderr)
    replace, hashes = {}, {}
    for dest in _UPLOADED:
        path = getattr(args, dest, None)
        if path is None:
            continue
        if not Path(path).exists():
            raise FFEdgeError(f"--{dest} {path}: no such file or folder")
        where, sha, copied = remote.upload(Path(path))
        replace[dest], hashes[dest] = where, sha
        print(f"{'copied' if copied else 'already there'}: {Path(path).name} -> {args.host}:{where}",
              file=sys.stderr)
    argv = remote_argv(args, replace)
    print(f"running on {args.host}: ffbench run {' '.join(argv)}", file=sys.stderr)
    doc = remote.run_ffbench(argv, echo_stdout=args.verbose_remote)
    try:
        results = [result_from_dict(r) for r in doc["results"]]
    except (KeyError, TypeError) as exc:
        raise FFEdgeError(f"the JSON from {args.host} lacks {exc}: is its ffbench current?") from None
    block = doc.get("device") or {"kind": args.device}
    block["remote"] = {"host": args.host, "ffbench": version, "artifact_sha256": hashes.get("artifact")}
    args.device_block = block
    emit(results, args)
    return 0


# -- Android -----------------------------------------------------------------------------
def run_android(args: argparse.Namespace) -> int:
    from ffedge.benchmarks.devices.android import AdbDevice

    artifact = _tflite_artifact(args)
    phone = AdbDevice(args.serial)
    props = phone.properties()
    binary = phone.benchmark_model(args.benchmark_model)
    graph = phone.upload(artifact)
    before = phone.thermal()
    print(f"running benchmark_model on {props.get('model') or 'the phone'} "
          f"({args.delegate}, {args.threads} threads) ...", file=sys.stderr)
    report, _text = phone.run_benchmark(graph, binary, args.threads, args.warmup,
                                        args.iterations, args.delegate)
    after = phone.thermal()
    result = android_result(artifact, args, report)
    block = {
        "kind": "android", "board": " ".join(p for p in (props.get("manufacturer"),
                                                          props.get("model")) if p) or None,
        "os": f"Android {props.get('android')} (SDK {props.get('sdk')})", "android": props,
        "cpu_model": props.get("soc") or props.get("platform"), "runtimes": {"benchmark_model": binary},
        "power_mode": None, "clocks": {"locked": None}, "power": None,
        "thermal_c": {"before": before, "after": after}, "serial": args.serial,
    }
    doc = {"results": [result], "device": block}
    return _emit_docs([("android", doc)], args.json, doc)


def _tflite_artifact(args: argparse.Namespace) -> Path:
    if args.artifact is None:
        raise FFEdgeError("--device android: give --artifact MODEL.tflite (`ffexport tflite "
                          "--model NAME` makes one)")
    if Path(args.artifact).suffix.lower() != ".tflite":
        raise FFEdgeError(f"--device android runs .tflite models; {args.artifact} is not one "
                          "(`ffexport tflite` makes one)")
    if not Path(args.artifact).is_file():
        raise FFEdgeError(f"--artifact {args.artifact}: no such file")
    return Path(args.artifact)


def android_result(artifact: Path, args: argparse.Namespace, report: dict) -> dict:
    """benchmark_model's report in the shape of a ``ffbench`` result (no end-to-end, no parity:
    the phone runs the model only)."""
    model, precision, size = args.model or artifact.stem, "?", None
    try:
        from ffedge.artifact.formats import read_tflite
        from ffedge.artifact.metadata import ArtifactMetadata

        meta = ArtifactMetadata.from_props(read_tflite(artifact.read_bytes()))
        if meta is not None:
            model, precision, size = meta.model, meta.precision, list(meta.spec.input_size)
    except Exception:  # noqa: BLE001 - metadata is a nicety here; the numbers stand without it
        pass
    return {
        "runtime": "tflite", "artifact": artifact.name, "model": model, "precision": precision,
        "size_bytes": artifact.stat().st_size, "input_size": size, "threads": args.threads,
        "load_s": None if report["init_ms"] is None else round(report["init_ms"] / 1000, 4),
        "latency_ms": report["latency_ms"], "end_to_end_ms": None,
        "first_inference_ms": report["first_inference_ms"], "warmup_avg_ms": report["warmup_avg_ms"],
        "memory_mb": report["memory_mb"], "peak_rss_mb": report["memory_mb"]["peak"],
        "delegate": args.delegate, "delegates": report["delegates"],
        "partially_delegated": report["partially_delegated"], "parity": None,
    }


# -- several devices side by side --------------------------------------------------------
def add_json_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("reports", nargs="*", type=Path, metavar="REPORT.json",
                   help="ffbench --json files (from several devices) to show side by side")


def compare_reports(args: argparse.Namespace) -> int:
    from ffedge.benchmarks.devices.side_by_side import load_reports

    if getattr(args, "model", None) or getattr(args, "artifacts", None):
        raise FFEdgeError("give REPORT.json files, or --model/--artifacts to run now; not both")
    reports = load_reports(args.reports)
    merged = {"reports": [{"file": name, **doc} for name, doc in reports]}
    return _emit_docs(reports, args.json, merged)


def _emit_docs(reports: list[tuple[str, dict]], out: Path | None, doc: dict) -> int:
    from ffedge.artifact.atomic import write_bytes_atomic
    from ffedge.benchmarks.devices.side_by_side import render_side_by_side

    print(render_side_by_side(reports))
    for name, d in reports:
        for r in d["results"]:
            if r.get("partially_delegated"):
                print(f"warning: {name}: {r['artifact']} is only partly on the delegate "
                      f"({r.get('delegate')}); the rest runs on the CPU", file=sys.stderr)
    if out is not None:
        write_bytes_atomic(out, (json.dumps(doc, indent=2) + "\n").encode())
        print(f"wrote {out}")
    return 0
