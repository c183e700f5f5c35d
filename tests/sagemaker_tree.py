"""Test helpers: a SageMaker directory tree, the real `sagecraft` processes, and installed test plugins."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parent.parent
IRIS_CSV = REPO / "demo" / "iris.csv"
# The installed console script, as the image's ENTRYPOINT runs it.
_SCRIPT = Path(sys.executable).parent / "sagecraft"
SAGECRAFT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "sagecraft.cli"]
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(base: Path, pythonpath: Path | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ, SAGEMAKER_BASE_DIR=str(base), PYTHONUNBUFFERED="1")
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@dataclass
class TrainingTree:
    """/opt/ml for one training job, under a temporary base dir."""

    base: Path
    pythonpath: Path | None = None
    command: list[str] = field(default_factory=lambda: list(SAGECRAFT))
    result: subprocess.CompletedProcess | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for folder in ("input/config", "input/data", "model", "output"):
            (self.base / folder).mkdir(parents=True, exist_ok=True)
        self.write_config("resourceconfig.json", {"current_host": "algo-1", "hosts": ["algo-1"]})

    def write_config(self, name: str, value: object) -> None:
        (self.base / "input" / "config" / name).write_text(json.dumps(value))

    def hyperparameters(self, values: dict[str, object], *, encoding: str = "str") -> None:
        """Write hyperparameters.json as the generic Estimator ("str") or a framework one ("json")."""
        encode = str if encoding == "str" else json.dumps
        self.write_config("hyperparameters.json", {k: encode(v) for k, v in values.items()})

    def channels(self, **content_types: str | None) -> None:
        self.write_config(
            "inputdataconfig.json",
            {
                name: {"TrainingInputMode": "File", **({"ContentType": ct} if ct else {})}
                for name, ct in content_types.items()
            },
        )

    def add_file(self, channel: str, name: str, text: str, *, gzipped: bool = False) -> Path:
        path = self.base / "input" / "data" / channel / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(text.encode()) if gzipped else text.encode())
        return path

    def pipe(
        self,
        channel: str,
        data: bytes,
        *,
        content_type: str | None = None,
        record_wrapper: str | None = None,
        chunk: int = 64 * 1024,
    ) -> threading.Thread:
        """A Pipe mode channel as SageMaker makes one: its entry in inputdataconfig.json, and the
        FIFO input/data/<channel>_0 that a writer thread fills in chunks, then closes (the thread
        waits, as SageMaker does, until the job opens the FIFO)."""
        config = self.base / "input" / "config" / "inputdataconfig.json"
        channels = json.loads(config.read_text()) if config.exists() else {}
        channels[channel] = {
            "TrainingInputMode": "Pipe",
            **({"ContentType": content_type} if content_type else {}),
            **({"RecordWrapperType": record_wrapper} if record_wrapper else {}),
        }
        self.write_config("inputdataconfig.json", channels)
        fifo = self.base / "input" / "data" / f"{channel}_0"
        os.mkfifo(fifo)

        def write() -> None:
            with fifo.open("wb") as out:
                for start in range(0, len(data), chunk):
                    out.write(data[start : start + chunk])
                    out.flush()

        writer = threading.Thread(target=write, name=f"pipe-{channel}", daemon=True)
        writer.start()
        return writer

    def train(self, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
        self.result = subprocess.run(
            [*self.command, "train"],
            env=environment(self.base, self.pythonpath, **env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return self.result

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def failure(self) -> str | None:
        path = self.base / "output" / "failure"
        return path.read_text() if path.exists() else None

    def explain(self) -> str:
        result = self.result
        return "" if result is None else f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def iris_rows() -> tuple[str, list[str]]:
    lines = IRIS_CSV.read_text().splitlines()
    return lines[0], lines[1:]


def iris_tree(base: Path, hyperparameters: dict[str, object], encoding: str = "str") -> TrainingTree:
    """The R blog's job: header row, target=Species, the data split in two files."""
    tree = TrainingTree(base)
    header, rows = iris_rows()
    tree.add_file("train", "part-1.csv", "\n".join([header, *rows[::2]]) + "\n")
    tree.add_file("train", "part-2.csv", "\n".join([header, *rows[1::2]]) + "\n")
    tree.channels(train="text/csv")
    tree.hyperparameters(hyperparameters, encoding=encoding)
    return tree


def place_model(base: Path, name: str, model_dir: Path) -> str:
    """Copy a trained model where SageMaker unpacks it for a multi-model endpoint:
    <base>/models/<name>/model. Returns that folder, the `url` SageMaker sends."""
    target = base / "models" / name / "model"
    shutil.copytree(model_dir, target)
    return str(target)


def serve_models(base: Path, **models: Path) -> tuple[Server, dict[str, str]]:
    """A multi-model endpoint under `base` with each trained model placed and loaded under its
    name; returns the server and the url of each model."""
    urls = {name: place_model(base, name, model_dir) for name, model_dir in models.items()}
    server = Server(base, SAGEMAKER_MULTI_MODEL="true").wait_ready()
    for name, url in urls.items():
        loaded = server.session.post(f"{server.url}/models", json={"model_name": name, "url": url})
        assert loaded.status_code == 200, loaded.text
    return server, urls


def regression_rows(seed: int, rows: int) -> str:
    """Header-less CSV, label first (SageMaker's convention): y = 3 x0 - 2 x1 + noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 5))
    y = 3 * x[:, 0] - 2 * x[:, 1] + rng.normal(scale=0.1, size=rows)
    lines = (",".join(f"{v:.6f}" for v in (label, *row)) for label, row in zip(y, x, strict=True))
    return "\n".join(lines) + "\n"


class Server:
    """A real `sagecraft serve` process on 127.0.0.1 and a free port."""

    def __init__(
        self, base: Path, pythonpath: Path | None = None, command: list[str] | None = None, **env: str
    ) -> None:
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / f"serve-{self.port}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [*(command or SAGECRAFT), "serve"],
            env=environment(
                base,
                pythonpath,
                SAGEMAKER_BIND_TO_PORT=str(self.port),
                SAGECRAFT_BIND_HOST="127.0.0.1",
                **env,
            ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.session = requests.Session()
        self.multi_model = env.get("SAGEMAKER_MULTI_MODEL") == "true"

    def wait_ready(self, timeout: float = 90) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            try:
                if self.session.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return self
            except (requests.ConnectionError, requests.Timeout):  # a loaded machine is slow
                pass
            time.sleep(0.05)
        log = self.log()
        self.stop()  # never left running after the suite
        raise TimeoutError(f"server not ready in {timeout} s: {log}")

    def invoke(
        self,
        body: bytes | str,
        content_type: str | None = "text/csv",
        accept: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: object,
    ) -> requests.Response:
        headers = dict(headers or {})
        if content_type is not None:
            headers["Content-Type"] = content_type
        if accept is not None:
            headers["Accept"] = accept
        data = body.encode() if isinstance(body, str) else body
        return self.session.post(f"{self.url}/invocations", data=data, headers=headers, timeout=120, **kwargs)

    @staticmethod
    def _children(pid: int) -> list[int]:
        try:
            return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def server_pid(self) -> int:
        """The process that loads the model: below the supervisor on a single-model endpoint
        (sagecraft.serving.supervisor), the first process itself on a multi-model one."""
        if self.multi_model:
            return self.process.pid
        deadline = time.monotonic() + 10
        while not (children := self._children(self.process.pid)) and time.monotonic() < deadline:
            time.sleep(0.01)
        return children[0] if children else self.process.pid

    def rss_bytes(self) -> int:
        """The server process's resident memory, from /proc."""
        for line in Path(f"/proc/{self.server_pid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def worker_pids(self) -> list[int]:
        """A single-model endpoint's worker processes (none when it runs as one process)."""
        return self._children(self.server_pid())

    def descendant_pids(self) -> list[int]:
        """Every process below the server's (a multi-model endpoint's fork server, its front
        workers and its model hosts), from /proc."""
        found, queue = [], [self.process.pid]
        while queue:
            pid = queue.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            found += [int(c) for c in children]
            queue += [int(c) for c in children]
        return found

    def pss_bytes(self) -> int:
        """Proportional memory of the server and every process below it: shared pages counted
        once, as a multi-model endpoint's budget counts them."""
        total = 0
        for pid in [self.process.pid, *self.descendant_pids()]:
            try:
                lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            except OSError:
                continue  # gone meanwhile
            total += sum(int(line.split()[1]) * 1024 for line in lines if line.startswith("Pss:"))
        return total

    def peak_rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.server_pid()}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self, timeout: float = 40) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        self.session.close()
        return self.process.returncode


def install_test_plugin(
    site: Path, distribution: str, entry_points: dict[str, str], modules: dict[str, str]
) -> Path:
    """Install a throw-away distribution into `site` (a folder put on PYTHONPATH): real metadata
    and entry points, found by importlib.metadata exactly as a pip-installed plugin is."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{distribution.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[sagecraft]\n{lines}\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    return site


SLOW_PLUGIN = """
    import json, time
    import numpy as np
    from sagecraft.hooks import AlgorithmInfo, Hyperparameter, hookimpl

    @hookimpl
    def algorithm_info():
        return AlgorithmInfo(description="constant, slow to load and to predict many rows",
                             hyperparameters=[
            Hyperparameter("load_delay", float, "seconds each load sleeps", default=0.0),
            Hyperparameter("predict_delay", float, "seconds a predict of over 1000 rows sleeps",
                           default=0.0)])

    @hookimpl
    def fit(train, hyperparameters):
        return {"delay": hyperparameters["load_delay"],
                "predict_delay": hyperparameters["predict_delay"]}

    @hookimpl
    def save_model(model, model_dir):
        (model_dir / "slow.json").write_text(json.dumps(model))

    @hookimpl
    def load_model(model_dir):
        with open(model_dir / "loads.log", "a") as log:
            log.write("load\\n")
        model = json.loads((model_dir / "slow.json").read_text())
        time.sleep(model["delay"])
        return model

    @hookimpl
    def predict(model, features):
        if len(features) > 1000:
            time.sleep(model["predict_delay"])
        return np.zeros(len(features), dtype=int)
"""


def install_slow_plugin(site: Path) -> Path:
    """The `slow` algorithm: a constant model whose load and large predicts take as long as its
    hyperparameters say (for timeouts and requests that wait on a load)."""
    return install_test_plugin(
        site, "sagecraft-slow", {"slow": "sagecraft_slow"}, {"sagecraft_slow": SLOW_PLUGIN}
    )
