"""Run a multi-host training job on one machine: for tests, sagecraft's and a plugin's own.

Every host is a real `sagecraft train` process with its own SageMaker tree (a base folder, as
SAGEMAKER_BASE_DIR) and resourceconfig.json. They run together in a private user, network and
mount namespace (`unshare --map-root-user --net --mount`, no privileges needed), where a private
hosts file maps each host name to its own loopback address (algo-1 to 127.0.0.1, algo-2 to
127.0.0.2, ...): names resolve through the system resolver as SageMaker's DNS names do, the
ports are private to the run, so parallel runs cannot collide, and nothing of the machine changes.

    from sagecraft.local_cluster import LocalCluster

    cluster = LocalCluster([tmp_path / "algo-1", tmp_path / "algo-2"])  # trees already laid out
    hosts = cluster.start().wait(timeout=300)
    assert [h.returncode for h in hosts] == [0, 0], hosts[1].stderr

`LocalCluster.available()` says whether this machine allows the namespaces (skip otherwise).
`python -m sagecraft.local_cluster SPEC` is the launcher that runs inside the namespace.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HostRun", "LocalCluster", "Running"]

_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


@dataclass(frozen=True)
class HostRun:
    """How one host's `sagecraft train` ended."""

    name: str
    base: Path
    returncode: int | None  # None: still running when the wait ended (then killed)
    stdout: str
    stderr: str
    peak_rss_bytes: int | None = None  # the process's peak resident memory (getrusage)

    @property
    def failure(self) -> str | None:
        path = self.base / "output" / "failure"
        return path.read_text() if path.exists() else None

    @property
    def model_files(self) -> list[str]:
        folder = self.base / "model"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


class LocalCluster:
    """The hosts of one job: `bases[i]` is host `hosts[i]`'s SageMaker tree."""

    def __init__(self, bases: Sequence[Path], hosts: Sequence[str] | None = None) -> None:
        self.bases = [Path(b) for b in bases]
        self.hosts = list(hosts or [f"algo-{i + 1}" for i in range(len(self.bases))])
        if len(self.hosts) != len(self.bases):
            raise ValueError("one host name per base folder")
        for base, host in zip(self.bases, self.hosts, strict=True):
            config = base / "input" / "config"
            config.mkdir(parents=True, exist_ok=True)
            (config / "resourceconfig.json").write_text(
                json.dumps({"current_host": host, "hosts": self.hosts, "network_interface_name": "lo"})
            )

    @staticmethod
    def available() -> bool:
        """Whether unprivileged user, network and mount namespaces work here."""
        if shutil.which("unshare") is None:
            return False
        probe = ["unshare", "--map-root-user", "--net", "--mount", "true"]
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0

    def start(
        self,
        *,
        delays: Mapping[str, float] | None = None,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
    ) -> Running:
        """Start every host's `sagecraft train` (host `h` `delays[h]` seconds late), with `env`
        added to this process's environment. The hosts share this machine's cores: unless `env`
        says otherwise, each gets OMP_NUM_THREADS of its share (OpenMP threads that outnumber the
        cores spin against each other, and a collective round waits for the slowest host)."""
        work = self.bases[0].parent / f".local-cluster-{os.getpid()}-{time.monotonic_ns()}"
        work.mkdir(parents=True)
        hosts = [
            {
                "name": host,
                "address": f"127.0.0.{index + 1}",
                "base": str(base),
                "delay": (delays or {}).get(host, 0.0),
                "stdout": str(work / f"{host}.stdout"),
                "stderr": str(work / f"{host}.stderr"),
            }
            for index, (host, base) in enumerate(zip(self.hosts, self.bases, strict=True))
        ]
        spec = {
            "hosts": hosts,
            "hosts_file": str(work / "hosts"),
            "pids": str(work / "pids.json"),
            "results": str(work / "results.json"),
            "command": list(command or _sagecraft_train()),
            "env": {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // len(self.hosts))), **(env or {})},
        }
        (work / "spec.json").write_text(json.dumps(spec))
        launcher = subprocess.Popen(
            [
                "unshare",
                "--map-root-user",
                "--net",
                "--mount",
                sys.executable,
                "-m",
                __name__,
                str(work / "spec.json"),
            ],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=(work / "launcher.log").open("wb"),
        )
        return Running(self, spec, launcher, work)


class Running:
    """A started job: signal its hosts, wait for them to end."""

    def __init__(self, cluster: LocalCluster, spec: dict, launcher: subprocess.Popen, work: Path) -> None:
        self.cluster, self.spec, self.launcher, self.work = cluster, spec, launcher, work

    def pid(self, host: str, timeout: float = 60) -> int:
        """The process id of `host`'s `sagecraft train` (it shares this machine's process ids)."""
        deadline = time.monotonic() + timeout
        path = Path(self.spec["pids"])
        while time.monotonic() < deadline:
            if path.exists():
                pids = json.loads(path.read_text() or "{}")
                if host in pids:
                    return int(pids[host])
            if self.launcher.poll() is not None:
                break
            time.sleep(0.05)
        raise TimeoutError(f"{host} did not start: {self._launcher_log()}")

    def output(self, host: str) -> str:
        """What `host` has written so far, stdout then stderr."""
        entry = next(h for h in self.spec["hosts"] if h["name"] == host)
        return "".join(
            Path(entry[k]).read_text(errors="replace")
            for k in ("stdout", "stderr")
            if Path(entry[k]).exists()
        )

    def wait_for_output(self, host: str, text: str, timeout: float = 120) -> None:
        """Wait until `host` has written `text` (a metric line, say)."""
        deadline = time.monotonic() + timeout
        while text not in self.output(host):
            if time.monotonic() > deadline or self.launcher.poll() is not None:
                raise TimeoutError(f"{host} never wrote {text!r}:\n{self.output(host)[-3000:]}")
            time.sleep(0.05)

    def signal(self, host: str, signum: int) -> None:
        os.kill(self.pid(host), signum)

    def wait(self, timeout: float = 300) -> list[HostRun]:
        """Every host's result, in host order; hosts still running at the timeout are killed
        (their returncode is None)."""
        try:
            self.launcher.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.launcher.pid, signal.SIGKILL)
            self.launcher.wait()
        path = Path(self.spec["results"])
        ended = json.loads(path.read_text()) if path.exists() else {}
        return [
            HostRun(
                name=h["name"],
                base=Path(h["base"]),
                returncode=ended.get(h["name"], {}).get("returncode"),
                stdout=_read(h["stdout"]),
                stderr=_read(h["stderr"]),
                peak_rss_bytes=ended.get(h["name"], {}).get("peak_rss_bytes"),
            )
            for h in self.spec["hosts"]
        ]

    def _launcher_log(self) -> str:
        return _read(str(self.work / "launcher.log"))[-2000:]


def _read(path: str) -> str:
    return Path(path).read_text(errors="replace") if Path(path).exists() else ""


def _sagecraft_train() -> list[str]:
    script = Path(sys.executable).parent / "sagecraft"
    return [str(script), "train"] if script.exists() else [sys.executable, "-m", "sagecraft.cli", "train"]


def _loopback_up() -> None:
    """Bring up `lo` in the new network namespace (what `ip link set lo up` does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | _IFF_UP))


def _launch(spec_path: str) -> int:
    """Inside the namespace: the network, the hosts file, then every host's process."""
    spec = json.loads(Path(spec_path).read_text())
    _loopback_up()
    Path(spec["hosts_file"]).write_text(
        "127.0.0.1 localhost\n" + "".join(f"{h['address']} {h['name']}\n" for h in spec["hosts"])
    )
    subprocess.run(["mount", "--bind", spec["hosts_file"], "/etc/hosts"], check=True)
    processes: dict[str, subprocess.Popen] = {}
    pids: dict[str, int] = {}
    started = time.monotonic()
    for host in sorted(spec["hosts"], key=lambda h: h["delay"]):
        time.sleep(max(0.0, started + host["delay"] - time.monotonic()))
        env = dict(os.environ, SAGEMAKER_BASE_DIR=host["base"], PYTHONUNBUFFERED="1", **spec["env"])
        with open(host["stdout"], "wb") as out, open(host["stderr"], "wb") as err:
            processes[host["name"]] = subprocess.Popen(spec["command"], env=env, stdout=out, stderr=err)
        pids[host["name"]] = processes[host["name"]].pid
        partial = spec["pids"] + ".partial"
        Path(partial).write_text(json.dumps(pids))
        os.replace(partial, spec["pids"])
    ended = {}
    for name, process in processes.items():
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        ended[name] = {
            "returncode": os.waitstatus_to_exitcode(status),
            "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports kilobytes
        }
    Path(spec["results"]).write_text(json.dumps(ended))
    return 0


if __name__ == "__main__":
    sys.exit(_launch(sys.argv[1]))
