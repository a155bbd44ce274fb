"""ffbench --device: parsers on the real text formats, the device block, SSH for real, adb, compare."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ffedge.benchmarks.devices import android, clocks, jetson, tegrastats, thermal
from ffedge.benchmarks.devices.benchmark_model import parse_benchmark_model
from ffedge.benchmarks.devices.cache_keys import artifact_sha256, engine_cache_key
from ffedge.benchmarks.devices.trtexec import parse_trtexec
from ffedge.cli.ffbench import main as ffbench

FIX = Path(__file__).parent / "fixtures" / "devices"
LATENCY_FIELDS = {"iterations", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "fps"}


def fixture(name: str) -> str:
    return (FIX / name).read_text()


# -- Jetson ------------------------------------------------------------------------------
def test_nv_tegra_release_and_jetpack():
    r35 = jetson.parse_nv_tegra_release(fixture("nv_tegra_release_r35.txt"))
    assert (r35.version, r35.board) == ("35.4.1", "t186ref")
    assert jetson.jetpack_for(r35.version) == "5.1.2"
    r32 = jetson.parse_nv_tegra_release(fixture("nv_tegra_release_r32.txt"))
    assert (r32.version, jetson.jetpack_for(r32.version)) == ("32.7.1", "4.6.1")
    assert jetson.jetpack_for("36.4.3") == "6.2"
    assert jetson.jetpack_for("36.9.9") == "6.x (L4T 36.9.9)"  # never a guessed minor
    assert jetson.parse_nv_tegra_release("Ubuntu 22.04") is None


def test_nvpmodel_query():
    assert jetson.parse_nvpmodel(fixture("nvpmodel_q_orin.txt")) == ("MAXN", 0)
    assert jetson.parse_nvpmodel(fixture("nvpmodel_q_nano.txt")) == ("5W", 1)
    assert jetson.parse_nvpmodel("") == (None, None)


def test_jetson_detection_on_a_board_tree(tmp_path):
    assert not jetson.is_jetson(tmp_path)
    assert jetson.jetson_info(tmp_path) is None
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text(fixture("nv_tegra_release_r35.txt"))
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes((FIX / "device_tree_model.txt").read_bytes())
    inc = tmp_path / "usr/include/aarch64-linux-gnu"
    inc.mkdir(parents=True)
    (inc / "NvInferVersion.h").write_text(
        "#define NV_TENSORRT_MAJOR 8 //!< major\n#define NV_TENSORRT_MINOR 5\n#define NV_TENSORRT_PATCH 2\n")
    info = jetson.jetson_info(tmp_path, query_tools=False)
    assert info.model == "NVIDIA Jetson Orin Nano Developer Kit"
    assert (info.l4t, info.jetpack, info.soc_board) == ("35.4.1", "5.1.2", "t186ref")
    assert jetson.parse_trt_version_header((inc / "NvInferVersion.h").read_text()) == "8.5.2"


def test_jetson_clocks_show_locked_or_not():
    free = clocks.parse_jetson_clocks_show(fixture("jetson_clocks_show.txt"))
    locked = clocks.parse_jetson_clocks_show(fixture("jetson_clocks_show_locked.txt"))
    assert len(free["cpus"]) == 4 and free["gpu"]["max_hz"] == 921600000
    assert free["locked"] is False and locked["locked"] is True
    assert locked["power_mode"] == "MAXN"


@pytest.mark.parametrize("name, rail, mean_mw, samples", [
    ("tegrastats_orin_nano.txt", "VDD_IN", (2957 + 5542 + 5660) / 3, 3),
    ("tegrastats_nano.txt", "POM_5V_IN", (1750 + 3650) / 2, 2),  # JetPack 4: no "mW" unit
    ("tegrastats_agx_orin.txt", "sum(VDDQ_VDD2_1V8AO+VDD_CPU_CV+VDD_GPU_SOC+VIN_SYS_5V0)",
     4876 + 975 + 4461 + 503, 1),  # AGX Orin has no input rail: summed
])
def test_tegrastats_power_and_energy(name, rail, mean_mw, samples):
    s = tegrastats.summarize(fixture(name).splitlines())
    assert (s.total_rail, s.samples) == (rail, samples)
    assert s.mean_mw == pytest.approx(mean_mw)
    # mW x ms = µJ; /1000 -> mJ per frame
    assert s.energy_mj_per_frame(12.5) == pytest.approx(mean_mw * 12.5 / 1000)
    line = tegrastats.parse_line(fixture(name).splitlines()[-1])
    assert "RAM" not in line["rails_mw"] and "EMC_FREQ" not in line["rails_mw"]
    assert all(t > -40 for t in line["temps_c"].values())  # AGX Orin's CV0@-256C dropped


def test_tegrastats_sampler_reads_in_the_background(tmp_path):
    script = tmp_path / "fake_tegrastats.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        for line in open({str(FIX / 'tegrastats_orin_nano.txt')!r}):
            print(line, end="", flush=True)
            time.sleep(0.02)
        time.sleep(30)
    """))
    sampler = tegrastats.TegrastatsSampler(command=[sys.executable, str(script)]).start()
    tegrastats.wait_for_samples(sampler, 3, timeout_s=10)
    t0 = time.monotonic()
    summary = sampler.stop()
    assert time.monotonic() - t0 < 5  # terminated, not waited out
    assert summary.samples == 3 and summary.total_rail == "VDD_IN"


# -- trtexec, benchmark_model ------------------------------------------------------------
def test_trtexec_summary():
    new = parse_trtexec(fixture("trtexec_summary.txt"))
    assert new["throughput_qps"] == 1574.34 and new["trt_version"] == "8.6.1"
    assert new["latency_ms"] == {"min_ms": 0.94249, "max_ms": 1.51343, "mean_ms": 0.949318,
                                 "p50_ms": 0.948975, "p90_ms": 0.951172, "p95_ms": 0.951843,
                                 "p99_ms": 0.953735}
    assert new["gpu_compute_ms"]["mean_ms"] == 0.632278
    old = parse_trtexec(fixture("trtexec_summary_trt8.txt"))
    assert old["latency_ms"]["p99_ms"] == 104.225 and "p90_ms" not in old["latency_ms"]
    assert old["trt_version"] == "8.2.1" and old["end_to_end_ms"]["p50_ms"] == 101.105
    with pytest.raises(ValueError):
        parse_trtexec("&&&& FAILED TensorRT.trtexec")


def test_benchmark_model_cpu_report():
    r = parse_benchmark_model(fixture("benchmark_model_cpu.txt"))
    lat = r["latency_ms"]
    assert lat["iterations"] == 84  # the measured runs, not the warmup line (count=41)
    assert (lat["mean_ms"], lat["p50_ms"], lat["p95_ms"], lat["min_ms"]) == (11.9026, 11.804, 12.788, 11.326)
    assert (r["init_ms"], r["first_inference_ms"], r["warmup_avg_ms"]) == (31.284, 14.839, 12.2131)
    assert r["memory_mb"] == {"init_delta": 12.4023, "overall_delta": 31.6914, "peak": 38.7539}
    assert r["delegates"] == [{"delegate": "TfLiteXNNPackDelegate", "replaced": 139, "of": 139,
                               "partitions": 1}]
    assert r["partially_delegated"] is False


def test_benchmark_model_partial_delegation_is_flagged():
    r = parse_benchmark_model(fixture("benchmark_model_gpu_partial.txt"))
    assert r["delegates"][0]["replaced"] == 31 and r["delegates"][0]["of"] == 43
    assert r["partially_delegated"] is True
    assert r["latency_ms"]["iterations"] == 50 and r["latency_ms"]["mean_ms"] == 35.1349


def test_benchmark_model_old_output():
    r = parse_benchmark_model(fixture("benchmark_model_old.txt"))
    assert r["latency_ms"]["iterations"] == 50 and r["latency_ms"]["mean_ms"] == 249.684
    assert r["memory_mb"]["overall_delta"] == 138.809 and r["memory_mb"]["peak"] is None
    with pytest.raises(ValueError):
        parse_benchmark_model("ERROR: Could not open 'x.tflite'.")


# -- sysfs, cache keys, argv -------------------------------------------------------------
def test_thermal_and_cpufreq_from_sysfs(tmp_path):
    for i, (kind, milli) in enumerate([("cpu-thermal", 47250), ("gpu-thermal", 45000),
                                       ("cv0-thermal", -256000)]):
        z = tmp_path / f"sys/class/thermal/thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(f"{milli}\n")
    assert thermal.thermal_zones(tmp_path) == {"cpu-thermal": 47.2, "gpu-thermal": 45.0}
    for cpu, (lo, hi) in enumerate([(729600, 1510400), (1510400, 1510400)]):
        d = tmp_path / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        d.mkdir(parents=True)
        for f, v in (("scaling_min_freq", lo), ("scaling_max_freq", hi), ("scaling_cur_freq", hi),
                     ("scaling_governor", "schedutil")):
            (d / f).write_text(f"{v}\n")
    c = clocks.cpufreq(tmp_path)
    assert (c["min_mhz"], c["max_mhz"], c["locked"]) == (730, 1510, False)


def test_engine_cache_key_and_bundle_hash(tmp_path):
    base = dict(artifact_sha="a" * 64, tensorrt="8.6.2", board="Jetson Orin Nano", precision="fp16",
                dla_core=None)
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**base)
    for field, other in [("artifact_sha", "b" * 64), ("tensorrt", "10.3.0"), ("board", "AGX Orin"),
                         ("precision", "int8"), ("dla_core", 0)]:
        assert engine_cache_key(**{**base, field: other}) != key, field
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.onnx").write_bytes(b"onnx")
    before = artifact_sha256(bundle)
    (bundle / "model.engine").write_bytes(b"built on the device")
    assert artifact_sha256(bundle) == before  # engines never travel, never change the hash
    (bundle / "model.onnx").write_bytes(b"onnx2")
    assert artifact_sha256(bundle) != before


def test_remote_argv_rebuilds_the_run_options():
    import argparse

    from ffedge.cli import bench_run
    from ffedge.cli.bench_device import remote_argv

    p = argparse.ArgumentParser()
    bench_run.add_arguments(p)
    args = p.parse_args(["--runtime", "onnxruntime", "--artifact", "a.onnx", "--imgsz", "160",
                         "--no-parity", "--device", "jetson", "--lock-clocks", "--host", "u@h",
                         "--port", "2222", "--json", "o.json", "--iterations", "7"])
    argv = remote_argv(args, {"artifact": "/cache/artifacts/x/a.onnx"})
    joined = " ".join(argv)
    for part in ("--runtime onnxruntime", "--artifact /cache/artifacts/x/a.onnx", "--imgsz 160",
                 "--no-parity", "--device jetson", "--lock-clocks", "--iterations 7",
                 "--warmup 3", "--threads 2"):  # defaults are sent too: the same run there
        assert part in joined
    for local_only in ("--host", "--port", "--json", "--remote-ffbench", "--remote-cache",
                       "--identity", "--serial", "--checkpoint", "--random-init"):
        assert local_only not in argv


def test_device_jetson_here_without_host_explains_both_ways(capsys):
    if jetson.is_jetson():
        pytest.skip("this machine is a Jetson")
    rc = ffbench(["--device", "jetson", "--runtime", "onnxruntime", "--model", "nano_b"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "not a Jetson" in err[0] and "--host" in err[0] and "on the Jetson itself" in err[0]


def test_lock_clocks_off_a_jetson_is_refused(capsys):
    if jetson.is_jetson():
        pytest.skip("this machine is a Jetson")
    assert ffbench(["--lock-clocks", "--runtime", "onnxruntime", "--model", "nano_b"]) == 2
    assert "Jetson" in capsys.readouterr().err


def test_version_flag(capsys):
    from ffedge import __version__

    assert ffbench(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ffbench {__version__}"


# -- SSH, for real -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """An sshd on 127.0.0.1 with a throwaway host key and an authorized key, both in tmp."""
    exe = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
                                        if os.path.exists(p)), None)
    if exe is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("no sshd/ssh/ssh-keygen here (apt-get install openssh-server; .ci/run does)")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # Debian's privilege separation dir
    port = _free_port()
    (d / "sshd_config").write_text(textwrap.dedent(f"""\
        Port {port}
        ListenAddress 127.0.0.1
        HostKey {d / 'host_key'}
        AuthorizedKeysFile {d / 'authorized_keys'}
        PubkeyAuthentication yes
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin prohibit-password
        StrictModes no
        UsePAM no
        Subsystem sftp internal-sftp
        PidFile {d / 'sshd.pid'}
        """))
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([exe, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log)
    user = getpass.getuser()
    base = ["ssh", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={d / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=accept-new", "-i", str(d / "client_key"), "-p", str(port),
            f"{user}@127.0.0.1"]
    ok, deadline = False, time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        if subprocess.run([*base, "true"], capture_output=True, timeout=10).returncode == 0:
            ok = True
            break
        time.sleep(0.2)
    if not ok:
        proc.terminate()
        proc.wait()
        pytest.skip(f"could not start sshd: {(d / 'sshd.log').read_text().strip()[-300:]}")
    yield {"port": port, "user": user, "key": d / "client_key", "dir": d}
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    from ffedge.cli.ffexport import main as ffexport

    out = tmp_path_factory.mktemp("onnx") / "nano_b_160.onnx"
    assert ffexport(["onnx", "--model", "nano_b", "--imgsz", "160", "--no-verify", "-o", str(out)]) == 0
    return out


def _ssh_args(sshd, cache: Path) -> list[str]:
    return ["--host", f"{sshd['user']}@127.0.0.1", "--port", str(sshd["port"]),
            "--identity", str(sshd["key"]),
            "--ssh-option", f"UserKnownHostsFile={sshd['dir'] / 'known_hosts'}",
            "--ssh-option", "StrictHostKeyChecking=accept-new",
            "--remote-ffbench", str(Path(sys.executable).parent / "ffbench"),
            "--remote-cache", str(cache)]


@pytest.mark.slow
def test_ssh_run_end_to_end(sshd, small_onnx, tmp_path, capsys):
    cache = tmp_path / "device-cache"
    out = tmp_path / "remote.json"
    argv = ["--device", "linux", *_ssh_args(sshd, cache), "--runtime", "onnxruntime",
            "--artifact", str(small_onnx), "--warmup", "1", "--iterations", "3", "--threads", "1"]
    assert ffbench([*argv, "--json", str(out)]) == 0
    cap = capsys.readouterr()
    assert "copied: nano_b_160.onnx" in cap.err
    assert "| onnxruntime" in cap.out and "device on " in cap.out
    doc = json.loads(out.read_text())
    (r,) = doc["results"]
    # the same result shape as a local run
    assert set(r) == {"runtime", "artifact", "model", "precision", "size_bytes", "input_size",
                      "threads", "load_s", "latency_ms", "end_to_end_ms", "rss_mb", "peak_rss_mb",
                      "faces_per_image", "parity", "delegates"}
    assert set(r["latency_ms"]) == LATENCY_FIELDS and r["latency_ms"]["iterations"] == 3
    assert r["runtime"] == "onnxruntime" and r["input_size"] == [160, 160] and r["threads"] == 1
    assert r["parity"]["detections"]["f1"] > 0.95  # the device ran the parity check too
    dev = doc["device"]
    assert dev["kind"] == "linux" and dev["runtimes"]["onnxruntime"]
    sha = artifact_sha256(small_onnx)
    assert dev["remote"]["artifact_sha256"] == sha
    copied = cache / "artifacts" / sha / small_onnx.name
    assert copied.read_bytes() == small_onnx.read_bytes()  # content-addressed copy on the device
    # a second upload reuses the copy
    from ffedge.benchmarks.devices.remote import Remote

    remote = Remote(f"{sshd['user']}@127.0.0.1", sshd["port"], sshd["key"],
                    [f"UserKnownHostsFile={sshd['dir'] / 'known_hosts'}"], cache=str(cache))
    assert remote.upload(small_onnx) == (str(copied), sha, False)
    bundle = tmp_path / "nano_b.trt-bundle"
    (bundle / "calib").mkdir(parents=True)
    (bundle / "model.onnx").write_bytes(b"onnx")
    (bundle / "calib" / "int8.cache").write_bytes(b"scales")
    (bundle / "model.engine").write_bytes(b"built on another GPU")
    where, bsha, copied_now = remote.upload(bundle)
    assert copied_now and bsha == artifact_sha256(bundle)
    landed = sorted(p.relative_to(where).as_posix() for p in Path(where).rglob("*") if p.is_file())
    assert landed == ["calib/int8.cache", "model.onnx"]  # the engine stayed behind


def test_ssh_without_ffbench_on_the_device_says_how_to_install(sshd, tmp_path, capsys):
    art = tmp_path / "m.onnx"
    art.write_bytes(b"x")
    argv = ["--device", "linux", *_ssh_args(sshd, tmp_path / "c"), "--artifact", str(art)]
    argv[argv.index("--remote-ffbench") + 1] = "/nonexistent/bin/ffbench"
    assert ffbench(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not installed" in err[0] and "pip install" in err[0]
    assert not (tmp_path / "c").exists()  # checked before copying anything


def test_ssh_unreachable_host_is_one_line(tmp_path, capsys):
    art = tmp_path / "m.onnx"
    art.write_bytes(b"x")
    rc = ffbench(["--host", "nobody@127.0.0.1", "--port", str(_free_port()), "--artifact", str(art)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--port" in err[0]


# -- Android over adb (a stand-in adb: no phone on this machine) -------------------------
def _fake_adb(tmp_path: Path, report: str) -> Path:
    """An ``adb`` that answers like a phone: state, getprop, push, test, and benchmark_model."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "adb.log"
    (bindir / "adb").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "$@" >> {log}
        [ "$1" = "-s" ] && shift 2
        case "$1" in
          get-state) echo device ;;
          push) exit 0 ;;
          shell) shift
            case "$*" in
              getprop\\ ro.product.model) echo "Pixel 8" ;;
              getprop\\ ro.product.manufacturer) echo Google ;;
              getprop\\ ro.build.version.release) echo 14 ;;
              getprop*) echo ;;
              test\\ -f*) exit 1 ;;
              test\\ -x*) exit 0 ;;
              for\\ z*) printf 'cpu-0-0-usr 41000\\ngpu 39500\\nbattery 31000\\n' ;;
              *benchmark_model*) cat {report} ;;
            esac ;;
        esac
        """))
    os.chmod(bindir / "adb", 0o755)
    return bindir


def test_android_run_and_compare_side_by_side(tmp_path, monkeypatch, capsys):
    bindir = _fake_adb(tmp_path, FIX / "benchmark_model_gpu_partial.txt")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    model = tmp_path / "nano_b_fp16.tflite"
    model.write_bytes(b"TFL3 not a real model")
    phone_json = tmp_path / "phone.json"
    rc = ffbench(["--device", "android", "--serial", "R5CT", "--artifact", str(model),
                  "--delegate", "gpu", "--threads", "4", "--warmup", "5", "--iterations", "50",
                  "--json", str(phone_json)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    calls = (tmp_path / "adb.log").read_text()
    assert "-s R5CT push" in calls and f"/{artifact_sha256(model)}/nano_b_fp16.tflite" in calls
    assert "--use_gpu=true" in calls and "--num_threads=4" in calls and "--num_runs=50" in calls
    assert "partly on the delegate" in cap.err
    doc = json.loads(phone_json.read_text())
    (r,) = doc["results"]
    assert r["partially_delegated"] is True and r["latency_ms"]["mean_ms"] == 35.1349
    assert doc["device"]["board"] == "Google Pixel 8"
    assert doc["device"]["thermal_c"]["before"] == {"cpu-0-0-usr": 41.0, "gpu": 39.5, "battery": 31.0}

    # a second device's report (Linux board shape) and both side by side
    board = {"results": [{"runtime": "onnxruntime", "artifact": "nano_b.onnx", "model": "nano_b",
                          "precision": "fp32", "size_bytes": 660000, "input_size": [640, 640],
                          "threads": 4,
                          "latency_ms": {"iterations": 20, "mean_ms": 41.0, "p50_ms": 40.2,
                                         "p90_ms": 44.0, "p99_ms": 47.0, "min_ms": 39.0, "fps": 24.4},
                          "end_to_end_ms": None, "peak_rss_mb": 210.0, "parity": None}],
             "device": {"board": "Raspberry Pi 5 Model B Rev 1.0", "os": "Debian 12",
                        "power": {"mean_mw": 6100.0, "energy_mj_per_frame": 250.1},
                        "clocks": {"locked": False}}}
    pi_json = tmp_path / "pi.json"
    pi_json.write_text(json.dumps(board))
    merged = tmp_path / "both.json"
    assert ffbench(["compare", str(pi_json), str(phone_json), "--json", str(merged)]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0]
    assert "Raspberry Pi 5 Model B Rev 1.0 (pi.json)" in header and "Google Pixel 8 (phone.json)" in header
    assert "| p50 ms" in table and "40.20" in table and "34.91" in table
    assert "TfLiteGpuDelegateV2 31/43 PARTIAL" in table and "250.10" in table
    assert [rep["file"] for rep in json.loads(merged.read_text())["reports"]] == ["pi.json", "phone.json"]


def test_android_needs_a_tflite(tmp_path, capsys):
    art = tmp_path / "m.onnx"
    art.write_bytes(b"x")
    assert ffbench(["--device", "android", "--artifact", str(art)]) == 2
    assert ".tflite" in capsys.readouterr().err


def test_compare_rejects_a_file_that_is_not_a_report(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    assert ffbench(["compare", str(bad)]) == 2
    assert "results" in capsys.readouterr().err


def test_thermal_listing_from_adb():
    assert android.parse_thermal_listing("cpu 45000\nbogus -\nsensor -256000\n") == {"cpu": 45.0}
