"""Helpers for testing a plugin through sagecraft's real training, loading and serving code.

    from sagecraft.testing import load, serve, train

    def test_my_algorithm(tmp_path):
        model_dir = train(tmp_path, {"algorithm": "my_algo", "target": "y"}, "x,y\\n1,0\\n2,1\\n")
        model = load(model_dir)
        assert model.predict(pandas.DataFrame({"x": [1.5]})).tolist() == [1]
        with serve(tmp_path) as endpoint:  # a real `sagecraft serve` of tmp_path/model
            answer = endpoint.invoke("1.5\\n", content_type="text/csv", accept="application/json")
            assert answer.status == 200 and answer.json()["predictions"] == [1]

`train` and `load` run in-process; `serve` starts the `sagecraft serve` process on 127.0.0.1, as
SageMaker runs it (single-model, or with `multi_model=True` a multi-model endpoint whose models
you load with `endpoint.load_model`). For a job of several hosts on one machine see
`sagecraft.local_cluster`. The plugin must be installed (its entry point is how sagecraft finds
it), e.g. `pip install -e .`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .environment import SageMakerPaths
from .loaded_model import LoadedModel
from .training.trainer import train as run_training_job

__all__ = [
    "Answer",
    "Endpoint",
    "load",
    "serve",
    "train",
    "write_training_job",
]


def write_training_job(
    base: Path,
    hyperparameters: Mapping[str, object],
    train_csv: str,
    validation_csv: str | None = None,
) -> SageMakerPaths:
    """Lay out a SageMaker training tree under `base`, values encoded as the generic Estimator does."""
    paths = SageMakerPaths(Path(base))
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    paths.hyperparameters_file.write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    channels = {"train": train_csv, "validation": validation_csv}
    for channel, text in channels.items():
        if text is not None:
            paths.channel_dir(channel).mkdir(parents=True, exist_ok=True)
            (paths.channel_dir(channel) / "data.csv").write_text(text)
    return paths


def train(
    base: Path,
    hyperparameters: Mapping[str, object],
    train_csv: str,
    validation_csv: str | None = None,
) -> Path:
    """Run a training job in-process and return the model folder.

    Raises the same `sagecraft.errors.SagecraftError` that `sagecraft train` writes to
    output/failure, so tests can assert on user errors too.
    """
    paths = write_training_job(base, hyperparameters, train_csv, validation_csv)
    run_training_job(paths)
    return paths.model_dir


def load(model_dir: Path) -> LoadedModel:
    """Load a model folder as `sagecraft serve` does; `.predict(frame, output)` answers with labels."""
    return LoadedModel.load(model_dir)


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status 0 when the server could not be reached at all."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


def sagecraft_command() -> list[str]:
    """The `sagecraft` command of this Python environment."""
    script = Path(sys.executable).parent / "sagecraft"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sagecraft.cli"]


class Endpoint:
    """A running `sagecraft serve` on 127.0.0.1 (see `serve`)."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path) -> None:
        self.process, self.port, self.log_path = process, port, log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """Any request; never raises for an HTTP error status."""
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers=dict(headers or {})
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return Answer(answer.status, dict(answer.headers), answer.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, dict(error.headers), error.read())
        except OSError:
            return Answer(0, {}, b"")

    def ping(self) -> int:
        return self.request("GET", "/ping").status

    def invoke(
        self,
        body: bytes | str,
        content_type: str = "text/csv",
        accept: str = "application/json",
        model: str | None = None,
    ) -> Answer:
        """POST /invocations (or, with `model`, the multi-model endpoint's /models/<model>/invoke)
        with any content type the server reads: CSV, JSON, JSON Lines, NPY, Parquet..."""
        path = "/invocations" if model is None else f"/models/{model}/invoke"
        return self.request("POST", path, body, {"Content-Type": content_type, "Accept": accept})

    def load_model(self, name: str, model_dir: Path) -> Answer:
        """Load a model folder on a multi-model endpoint (POST /models)."""
        body = json.dumps({"model_name": name, "url": str(model_dir)})
        return self.request("POST", "/models", body, {"Content-Type": "application/json"})

    def unload_model(self, name: str) -> Answer:
        return self.request("DELETE", f"/models/{name}")

    def log(self) -> str:
        """What the server has written so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, as SageMaker stops an endpoint; SIGKILL after 30 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_endpoint(
    base: Path,
    *,
    multi_model: bool = False,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
    timeout: float = 120,
) -> Endpoint:
    """Start `sagecraft serve` on `base` (a SageMaker tree: `base/model` is the model; a
    multi-model endpoint starts empty) and wait until /ping answers 200. Raises RuntimeError
    with the end of the server's log when it does not start. The caller stops it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    Path(base).mkdir(parents=True, exist_ok=True)
    log_path = Path(base) / f"serve-{port}.log"
    environment = {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(base),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGECRAFT_BIND_HOST": "127.0.0.1",
    }
    if multi_model:
        environment["SAGEMAKER_MULTI_MODEL"] = "true"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*(command or sagecraft_command()), "serve"],
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    endpoint = Endpoint(process, port, log_path)
    deadline = time.monotonic() + timeout
    while endpoint.ping() != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            endpoint.stop()
            raise RuntimeError(f"`sagecraft serve` did not start: {endpoint.log()[-1500:]}")
        time.sleep(0.1)
    return endpoint


@contextmanager
def serve(
    base: Path,
    *,
    multi_model: bool = False,
    env: Mapping[str, str] | None = None,
    model_dir: Path | None = None,
) -> Iterator[Endpoint]:
    """A real `sagecraft serve` of `base/model` (or a copy of `model_dir` there), stopped on
    leaving: `with serve(tmp_path) as endpoint: endpoint.invoke(...)`."""
    if model_dir is not None and Path(model_dir) != Path(base) / "model":
        shutil.copytree(model_dir, Path(base) / "model", dirs_exist_ok=True)
    endpoint = start_endpoint(base, multi_model=multi_model, env=env)
    try:
        yield endpoint
    finally:
        endpoint.stop()
