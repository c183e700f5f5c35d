"""Injected faults and their cost: a worker killed under load, SIGTERM under load, corrupt model
files, a full or read-only disk during training, and a data file that changes while it is read."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import requests

from sagemaker_tree import Server, TrainingTree, environment, iris_tree, place_model, regression_rows

pytestmark = pytest.mark.hardening

SETOSA = "5.0,3.4,1.5,0.2"


class Load:
    """`clients` threads posting `body` back to back until stopped; outcomes counted by kind."""

    def __init__(self, server: Server, clients: int, body: str = SETOSA, expected: str = "setosa\n") -> None:
        self.server, self.body, self.expected = server, body, expected
        self.outcomes: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self) -> None:
        with requests.Session() as session:
            while not self.stopping.is_set():
                try:
                    response = session.post(
                        f"{self.server.url}/invocations",
                        data=self.body,
                        headers={"Content-Type": "text/csv"},
                        timeout=30,
                    )
                    kind = (
                        "ok"
                        if response.status_code == 200 and response.text == self.expected
                        else f"http {response.status_code}"
                    )
                except requests.ConnectionError as exc:
                    kind = "refused" if "refused" in str(exc).lower() else "connection lost"
                with self.lock:
                    self.outcomes[kind] += 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.outcomes)


def _wait(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_worker_killed_under_load_costs_at_most_its_in_flight_requests(
    iris_forest: TrainingTree,
) -> None:
    clients = 4
    server = Server(iris_forest.base, SAGEMAKER_MODEL_SERVER_WORKERS="2").wait_ready()
    try:
        _wait(lambda: len(server.worker_pids()) == 2)
        victim = server.worker_pids()[0]
        with Load(server, clients) as load:
            time.sleep(1.5)
            os.kill(victim, signal.SIGKILL)
            _wait(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2)
            after_respawn = load.snapshot()
            time.sleep(1.5)
        total = load.snapshot()
        lost = total["connection lost"] + sum(v for k, v in total.items() if k.startswith("http"))
        print(f"worker killed under load: {lost} of {sum(total.values())} requests failed {total}")
        assert lost <= clients, total  # at most the requests in flight on the killed worker
        assert not any(k.startswith("http") for k in total), total  # no error answers at all
        assert total["ok"] - after_respawn["ok"] > 50, "the server stopped serving after the kill"
        assert total["connection lost"] == after_respawn["connection lost"]
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_sigterm_under_load_answers_every_request_it_accepted(iris_forest: TrainingTree) -> None:
    server = Server(iris_forest.base, SAGEMAKER_MODEL_SERVER_WORKERS="2").wait_ready()
    rows = np.random.default_rng(1).uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], size=(60_000, 4))
    large = "\n".join(",".join(f"{v:.2f}" for v in row) for row in rows)
    in_flight: list[requests.Response | Exception] = []

    def large_request() -> None:
        try:
            in_flight.append(server.invoke(large))
        except requests.RequestException as exc:
            in_flight.append(exc)

    with Load(server, 3) as load:
        time.sleep(1)
        callers = [threading.Thread(target=large_request) for _ in range(2)]
        for caller in callers:
            caller.start()
        time.sleep(0.5)
        code = server.stop(timeout=30)
        for caller in callers:
            caller.join()
    total = load.snapshot()
    print(f"SIGTERM under load: {total}")
    assert code == 0
    assert [r.status_code for r in in_flight] == [200, 200], in_flight
    assert all(len(r.text.splitlines()) == 60_000 for r in in_flight)
    assert not any(k.startswith("http") for k in total), total  # never an error answer
    assert total["ok"] > 50


# --- model files that are broken or not ours ---------------------------------------------------

MODEL_FILES = {"random_forest": "model.skops", "xgboost": "xgboost-model.ubj"}


def _break(model_dir: Path, algorithm: str, how: str, other: Path) -> str:
    """Damage a copy of a model folder; returns a phrase the load error must contain."""
    path = model_dir / MODEL_FILES[algorithm]
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "foreign":  # the other algorithm's file under this one's name
        other_algorithm = next(a for a in MODEL_FILES if a != algorithm)
        path.write_bytes((other / MODEL_FILES[other_algorithm]).read_bytes())
    elif how == "missing":
        path.unlink()
    elif how == "manifest not json":
        (model_dir / "manifest.json").write_text("{not json")
        return "manifest.json"
    elif how == "manifest unknown algorithm":
        manifest = json.loads((model_dir / "manifest.json").read_text())
        manifest["algorithm"] = "no_such_algorithm"
        (model_dir / "manifest.json").write_text(json.dumps(manifest))
        return "no_such_algorithm"
    return MODEL_FILES[algorithm]


BREAKAGES = [
    "truncated",
    "garbage",
    "empty",
    "foreign",
    "missing",
    "manifest not json",
    "manifest unknown algorithm",
]


@pytest.fixture(scope="module")
def trained(iris_forest: TrainingTree, iris_xgboost: TrainingTree) -> dict[str, Path]:
    return {"random_forest": iris_forest.model_dir, "xgboost": iris_xgboost.model_dir}


# A few breakages for a single-model server; the multi-model test below loads all 14 pairs.
SINGLE_MODEL_CASES = [
    ("random_forest", "truncated"),
    ("xgboost", "garbage"),
    ("xgboost", "foreign"),
    ("random_forest", "manifest unknown algorithm"),
]


@pytest.mark.parametrize(("algorithm", "how"), SINGLE_MODEL_CASES)
def test_a_broken_model_stops_serve_with_a_message_naming_the_file(
    tmp_path: Path, trained: dict[str, Path], algorithm: str, how: str
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(trained[algorithm], model_dir)
    other = trained["xgboost" if algorithm == "random_forest" else "random_forest"]
    phrase = _break(model_dir, algorithm, how, other)
    server = Server(tmp_path, SAGEMAKER_MODEL_SERVER_WORKERS="1")
    try:
        assert server.process.wait(60) == 1
        log = server.log()
        error_lines = [line for line in log.splitlines() if "cannot serve" in line]
        assert error_lines and phrase in error_lines[0], log
        assert "Traceback" not in log and "Stack trace" not in log, log
    finally:
        server.stop()


def test_a_broken_model_fails_only_its_own_load_on_a_multi_model_endpoint(
    tmp_path: Path, trained: dict[str, Path]
) -> None:
    good = place_model(tmp_path, "good", trained["random_forest"])
    broken = {}
    for how in BREAKAGES:
        for algorithm in MODEL_FILES:
            name = f"{algorithm}-{how.replace(' ', '-')}"
            url = place_model(tmp_path, name, trained[algorithm])
            other = trained["xgboost" if algorithm == "random_forest" else "random_forest"]
            broken[name] = (url, _break(Path(url), algorithm, how, other))
    server = Server(tmp_path, SAGEMAKER_MULTI_MODEL="true").wait_ready()
    try:
        assert (
            server.session.post(f"{server.url}/models", json={"model_name": "good", "url": good}).status_code
            == 200
        )
        for name, (url, phrase) in broken.items():
            response = server.session.post(f"{server.url}/models", json={"model_name": name, "url": url})
            assert response.status_code == 500, (name, response.text)
            error = response.json()
            assert error["type"] == "ModelLoadError" and phrase in error["message"], (name, error)
            assert "\n" not in error["message"], error  # one line: no native stack trace
            invoked = server.session.post(
                f"{server.url}/models/good/invoke", data=SETOSA, headers={"Content-Type": "text/csv"}
            )
            assert invoked.text == "setosa\n"
        listed = server.session.get(f"{server.url}/models").json()["models"]
        assert [m["modelName"] for m in listed] == ["good"]
    finally:
        assert server.stop() == 0


# --- training: the disk fails, the data changes ------------------------------------------------


def _namespaces_available() -> bool:
    probe = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    shutil.which("unshare") is None or not _namespaces_available(),
    reason="needs user and mount namespaces (unshare -rm) to mount a small or read-only folder",
)


def _train_with_model_mount(tree: TrainingTree, mount: str) -> subprocess.CompletedProcess:
    """`sagecraft train` with model/ mounted as `mount` says, in a private mount namespace: a real
    full disk (tmpfs of a few KiB) or a real read-only file system, without touching the host."""
    model = tree.base / "model"
    script = f'{mount.format(model=model)} && exec "$@"'
    return subprocess.run(
        ["unshare", "--map-root-user", "--mount", "sh", "-c", script, "sh", *tree.command, "train"],
        env=environment(tree.base),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@needs_namespaces
@pytest.mark.parametrize(
    ("mount", "phrase"),
    [
        ("mount -t tmpfs -o size=8k tmpfs {model}", "No space left on device"),
        ("mount --bind {model} {model} && mount -o remount,bind,ro {model}", "Read-only file system"),
    ],
)
@pytest.mark.parametrize("algorithm", ["random_forest", "xgboost"])
def test_a_full_or_read_only_model_folder_gives_a_clear_failure(
    tmp_path: Path, algorithm: str, mount: str, phrase: str
) -> None:
    tree = iris_tree(tmp_path, {"algorithm": algorithm, "target": "Species"})
    result = _train_with_model_mount(tree, mount)
    assert result.returncode == 1, result.stdout + result.stderr
    failure = tree.failure
    assert failure is not None, result.stderr
    assert failure.startswith(f"could not write the model to {tree.base / 'model'}: {phrase}"), failure
    assert "OutputWriteError" in failure
    assert "Traceback" not in failure


@pytest.mark.slow
def test_a_data_file_that_changes_while_it_is_read_fails_the_job(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    path = tree.add_file("train", "growing.csv", regression_rows(0, 400_000))
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 2})
    stop = threading.Event()

    def append() -> None:
        with path.open("a") as handle:
            while not stop.is_set():
                handle.write(regression_rows(1, 1))
                handle.flush()
                time.sleep(0.002)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        result = tree.train()
    finally:
        stop.set()
        writer.join()
    assert result.returncode == 1, tree.explain()
    assert tree.failure is not None
    assert tree.failure.startswith(f"{path} changed while it was being read"), tree.failure
