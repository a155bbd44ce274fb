"""Run ``ffbench`` on another machine with the system ``ssh`` and ``scp``.

Artifacts go to a content-addressed folder on the device, ``<cache>/artifacts/<sha256>/NAME``
(copied once, renamed into place so a present path is a complete copy). A TensorRT bundle
folder travels without its engines: they are built on the device.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from ffedge.benchmarks.devices.cache_keys import artifact_sha256, bundle_files
from ffedge.errors import FFEdgeError

INSTALL_HINT = ("pip install 'featherface-edge[onnx]' there (on a Jetson add the TensorRT "
                "Python bindings from JetPack); an ffbench in a venv: pass --remote-ffbench PATH")


def shell_path(path: str) -> str:
    """A path for the remote shell: quoted, with a leading ``~/`` left to expand."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def compatible(local: str, remote: str) -> bool:
    """Same major.minor: the JSON and the flags are the same."""
    return local.split(".")[:2] == remote.split(".")[:2]


class Remote:
    def __init__(self, host: str, port: int | None = None, identity: Path | None = None,
                 options: Sequence[str] = (), ffbench: str = "ffbench",
                 cache: str = "~/.cache/ffedge", connect_timeout: int = 15) -> None:
        if not host or host.startswith("-"):
            raise FFEdgeError(f"--host {host!r}: give user@address")
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise FFEdgeError(f"--host needs the system {tool} (install openssh-client)")
        if identity is not None and not Path(identity).is_file():
            raise FFEdgeError(f"--identity {identity}: no such key file")
        self.host = host
        self.ffbench = ffbench
        self.cache = cache.rstrip("/") or "/"
        common = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}"]
        if identity is not None:
            common += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
        for opt in options:
            if "=" not in opt:
                raise FFEdgeError(f"--ssh-option {opt!r}: give KEY=VALUE (an ssh -o option)")
            common += ["-o", opt]
        self.ssh_base = ["ssh", *common, *(["-p", str(port)] if port else []), host]
        self.scp_base = ["scp", "-q", *common, *(["-P", str(port)] if port else [])]

    # -- plumbing -----------------------------------------------------------------------
    def _fail(self, what: str, done: subprocess.CompletedProcess) -> FFEdgeError:
        err = (done.stderr or "").strip().splitlines()
        last = err[-1].rstrip(".") if err else f"exit {done.returncode}"
        hint = ""
        if "Host key verification failed" in (done.stderr or ""):
            hint = f"; connect once with `ssh {self.host}` to accept its host key"
        elif done.returncode == 255:
            hint = "; check --host, --port and --identity (`ssh` must log in without a password)"
        return FFEdgeError(f"{what} on {self.host} failed: {last}{hint}")

    def sh(self, command: str, check: bool = True, timeout: float | None = 120) -> subprocess.CompletedProcess:
        """Run a shell command on the device; stdout and stderr captured as text."""
        try:
            done = subprocess.run([*self.ssh_base, command], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise FFEdgeError(f"ssh {self.host}: no answer in {timeout:.0f} s") from None
        if check and done.returncode != 0:
            raise self._fail(f"`{command.split()[0]}`", done)
        return done

    def home_cache(self) -> str:
        """The cache folder as an absolute path on the device (``~`` resolved once)."""
        if self.cache.startswith("~"):
            home = self.sh("cd && pwd").stdout.strip()
            self.cache = home + self.cache[1:]
        return self.cache

    # -- steps --------------------------------------------------------------------------
    def check_ffbench(self, local_version: str) -> str:
        """The device's ``ffbench --version``; one line on how to install it when absent."""
        done = self.sh(f"{shell_path(self.ffbench)} --version", check=False)
        if done.returncode == 255:
            raise self._fail("ssh", done)
        m = re.search(r"ffbench\s+(\d+\.\d+[\w.+-]*)", done.stdout)
        if done.returncode != 0 or not m:
            raise FFEdgeError(f"ffbench is not installed on {self.host} (tried "
                              f"`{self.ffbench} --version`): {INSTALL_HINT}")
        version = m.group(1)
        if not compatible(local_version, version):
            raise FFEdgeError(f"ffbench {version} on {self.host} does not match this ffbench "
                              f"{local_version}: pip install 'featherface-edge=={local_version}' there")
        return version

    def upload(self, path: Path) -> tuple[str, str, bool]:
        """Copy ``path`` (a file or a bundle folder) to ``<cache>/artifacts/<sha256>/NAME``.

        Returns (remote path, sha256, copied now). An existing copy is reused."""
        path = Path(path)
        sha = artifact_sha256(path)
        folder = f"{self.home_cache()}/artifacts/{sha}"
        dest = f"{folder}/{path.name}"
        if self.sh(f"test -e {shlex.quote(dest)}", check=False).returncode == 0:
            return dest, sha, False
        part = f"{folder}/.{path.name}.part{os.getpid()}"
        self.sh(f"mkdir -p {shlex.quote(folder)} && rm -rf {shlex.quote(part)}")
        with tempfile.TemporaryDirectory(prefix="ffbench-upload-") as tmp:
            source = path
            if path.is_dir():  # a bundle: everything but engines
                source = Path(tmp) / path.name
                for f in bundle_files(path):
                    target = source / f.relative_to(path)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, target)
                source.mkdir(exist_ok=True)
            done = self._scp(source, part)
            if done.returncode != 0 and ("subsystem" in done.stderr or "Connection closed" in done.stderr):
                done = self._scp(source, part, legacy=True)  # no SFTP server (e.g. dropbear)
        if done.returncode != 0:
            self.sh(f"rm -rf {shlex.quote(part)}", check=False)
            raise self._fail("scp", done)
        self.sh(f"mv -T {shlex.quote(part)} {shlex.quote(dest)} 2>/dev/null || "
                f"rm -rf {shlex.quote(part)}")
        return dest, sha, True

    def _scp(self, source: Path, dest: str, legacy: bool = False) -> subprocess.CompletedProcess:
        argv = [*self.scp_base, *(["-O"] if legacy else []), *(["-r"] if source.is_dir() else []),
                str(source), f"{self.host}:{dest}"]
        return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              check=False)

    def run_ffbench(self, argv: list[str], echo_stdout: bool = False) -> dict:
        """``ffbench run ARGV --json TMP`` on the device, its stderr streamed here live; the
        JSON it wrote, parsed. The device's temporary folder is removed afterwards."""
        import json

        tmp = self.sh("mktemp -d").stdout.strip()
        try:
            out_json = f"{tmp}/result.json"
            command = " ".join([shell_path(self.ffbench), "run", *map(shlex.quote, argv),
                                "--json", shlex.quote(out_json)])
            rc, stdout = self._stream([*self.ssh_base, command])
            if echo_stdout and stdout:
                sys.stderr.write(stdout)
            if rc == 255:
                raise FFEdgeError(f"ssh to {self.host} dropped during the run (exit 255)")
            if rc != 0:
                raise FFEdgeError(f"ffbench on {self.host} exited with {rc} (its message is above)")
            text = self.sh(f"cat {shlex.quote(out_json)}").stdout
        finally:
            self.sh(f"rm -rf {shlex.quote(tmp)}", check=False)
        try:
            return json.loads(text)
        except ValueError:
            raise FFEdgeError(f"ffbench on {self.host} wrote no readable JSON") from None

    @staticmethod
    def _stream(argv: list[str]) -> tuple[int, str]:
        """Run ``argv``; forward its stderr as it comes (progress bars included)."""
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stderr is not None
        err_fd = proc.stderr.fileno()

        def pump() -> None:
            while True:
                chunk = os.read(err_fd, 4096)
                if not chunk:
                    break
                sys.stderr.write(chunk.decode(errors="replace"))
                sys.stderr.flush()

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        stdout = proc.stdout.read().decode(errors="replace")
        rc = proc.wait()
        t.join(timeout=5)
        return rc, stdout
