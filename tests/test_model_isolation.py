"""A multi-model endpoint on every core, where one model's crash costs only that model.

The endpoint runs front workers and one process per model (sagecraft.serving.fleet); these tests
drive it through real HTTP with a third-party test plugin that crashes as its model file says:
a segfault in its load, an abort at its tenth predict, an allocation past the container's memory.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from sagecraft.loaded_model import LoadedModel
from sagemaker_tree import (
    SAGECRAFT,
    Server,
    TrainingTree,
    install_test_plugin,
    place_model,
    regression_rows,
)

CRASHY_PLUGIN = """
    import ctypes, json, os
    import numpy as np
    from sagecraft.hooks import AlgorithmInfo, hookimpl

    PREDICTS = 0

    @hookimpl
    def algorithm_info():
        return AlgorithmInfo(description="the sum of each row's features; crashes as its file says")

    @hookimpl
    def fit(train, hyperparameters):
        return {"crash": "none"}

    @hookimpl
    def save_model(model, model_dir):
        (model_dir / "crashy.json").write_text(json.dumps(model))

    @hookimpl
    def load_model(model_dir):
        model = json.loads((model_dir / "crashy.json").read_text())
        if model["crash"] == "segfault on load":
            ctypes.string_at(0)
        if model["crash"] == "allocate on load":
            model["hog"] = np.ones(model["bytes"], dtype=np.uint8)  # every page written
        return model

    @hookimpl
    def predict(model, features):
        global PREDICTS
        PREDICTS += 1
        if model["crash"] == "abort on predict" and PREDICTS >= model["after"]:
            os.abort()
        if model["crash"] == "allocate on -1" and features.iloc[0, 0] == -1:
            np.ones(model["bytes"], dtype=np.uint8)
        return features.to_numpy(dtype=float).sum(axis=1)
"""
IRIS_ROWS = np.round(np.random.default_rng(3).uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], size=(40, 4)), 1)
IRIS_COLUMNS = ["Sepal.Length", "Sepal.Width", "Petal.Length", "Petal.Width"]


@pytest.fixture(scope="module")
def crashy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_test_plugin(
        tmp_path_factory.mktemp("crashy-site"),
        "sagecraft-crashy",
        {"crashy": "sagecraft_crashy"},
        {"sagecraft_crashy": CRASHY_PLUGIN},
    )


@pytest.fixture(scope="module")
def crashy_model(tmp_path_factory: pytest.TempPathFactory, crashy_site: Path) -> Path:
    tree = TrainingTree(tmp_path_factory.mktemp("crashy"), pythonpath=crashy_site)
    tree.add_file("train", "d.csv", regression_rows(0, 50))
    tree.hyperparameters({"algorithm": "crashy"})
    assert tree.train().returncode == 0, tree.explain()
    return tree.model_dir


def _variant(base: Path, name: str, model_dir: Path, **crash: object) -> str:
    """The crashy model placed as `name`, its file saying how to crash."""
    url = place_model(base, name, model_dir)
    (Path(url) / "crashy.json").write_text(json.dumps({"crash": "none", **crash}))
    return url


def _load(server: Server, name: str, url: str) -> requests.Response:
    return server.session.post(f"{server.url}/models", json={"model_name": name, "url": url}, timeout=120)


def _invoke(session: requests.Session, server: Server, name: str, body: str) -> requests.Response:
    return session.post(
        f"{server.url}/models/{name}/invoke", data=body, headers={"Content-Type": "text/csv"}, timeout=120
    )


def _body(rows: np.ndarray) -> str:
    return "\n".join(",".join(f"{v:g}" for v in row) for row in rows)


def _good_models(server: Server) -> dict[str, Path]:
    """The endpoint's forest and XGBoost model folders."""
    return {name: Path(server.base) / "models" / name / "model" for name in ("forest", "xgboost")}


class Hammer:
    """Clients asking the good models without a pause, from threads, until stopped; every answer
    is compared with the in-process prediction."""

    def __init__(self, server: Server, expected: dict[str, list[str]], threads: int = 4) -> None:
        self.server, self.expected = server, expected
        self.stopped = threading.Event()
        self.answers = 0
        self.wrong: list[str] = []
        self.pool = ThreadPoolExecutor(threads)
        self.futures = [self.pool.submit(self._run, i) for i in range(threads)]

    def _run(self, seed: int) -> None:
        session = requests.Session()
        rng = np.random.default_rng(seed)
        names = sorted(self.expected)
        while not self.stopped.is_set():
            name = names[int(rng.integers(len(names)))]
            start = int(rng.integers(len(IRIS_ROWS) - 5))
            answer = _invoke(session, self.server, name, _body(IRIS_ROWS[start : start + 5]))
            if (
                answer.status_code != 200
                or answer.text.split("\n")[:5] != self.expected[name][start : start + 5]
            ):
                self.wrong.append(f"{name}: {answer.status_code} {answer.text[:200]}")
            self.answers += 1

    def stop(self) -> None:
        self.stopped.set()
        for future in self.futures:
            future.result()
        self.pool.shutdown()

    def __enter__(self) -> Hammer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _expected(model_dirs: dict[str, Path]) -> dict[str, list[str]]:
    """The in-process predictions of IRIS_ROWS by each model, by name."""
    frame = pd.DataFrame(IRIS_ROWS, columns=IRIS_COLUMNS)
    return {
        name: [str(v) for v in LoadedModel.load(folder).predict(frame)] for name, folder in model_dirs.items()
    }


@pytest.fixture(scope="module")
def endpoint(
    tmp_path_factory: pytest.TempPathFactory,
    crashy_site: Path,
    iris_forest: TrainingTree,
    iris_xgboost: TrainingTree,
) -> tuple[Server, Path]:
    base = tmp_path_factory.mktemp("isolation")
    server = Server(
        base, pythonpath=crashy_site, SAGEMAKER_MULTI_MODEL="true", SAGEMAKER_MODEL_SERVER_WORKERS="2"
    ).wait_ready()
    for name, tree in (("forest", iris_forest), ("xgboost", iris_xgboost)):
        assert _load(server, name, place_model(base, name, tree.model_dir)).status_code == 200
    yield server, base
    server.stop()


def test_two_workers_answer_three_algorithms_as_in_process_from_many_clients(
    endpoint: tuple[Server, Path], crashy_model: Path, iris_forest: TrainingTree, iris_xgboost: TrainingTree
) -> None:
    server, base = endpoint
    assert _load(server, "sum", _variant(base, "sum", crashy_model)).status_code == 200
    expected = _expected({"forest": iris_forest.model_dir, "xgboost": iris_xgboost.model_dir})
    rows = np.round(np.random.default_rng(5).normal(size=(30, 5)), 3)  # the plugin's five features
    try:
        with Hammer(server, expected, threads=8) as hammer:
            session = requests.Session()
            for start in range(0, 30, 3):
                answer = _invoke(session, server, "sum", _body(rows[start : start + 3]))
                assert answer.status_code == 200, answer.text
                got = np.array([float(v) for v in answer.text.split()])
                np.testing.assert_allclose(got, rows[start : start + 3].sum(axis=1), rtol=1e-5, atol=1e-5)
            time.sleep(1)
        assert hammer.answers > 50 and not hammer.wrong, hammer.wrong[:5]
        # Both front workers took connections (the balanced accept of a single-model endpoint).
        log = server.log()
        assert log.count("accepting connections") >= 2, log
    finally:
        server.session.delete(f"{server.url}/models/sum")


def test_a_front_worker_killed_is_replaced_and_the_models_keep_answering(
    endpoint: tuple[Server, Path],
) -> None:
    server, _ = endpoint
    fronts = [int(m) for m in re.findall(r"worker (\d+) accepting connections", server.log())]
    assert len(fronts) >= 2
    os.kill(fronts[-1], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(re.findall(r"worker (\d+) accepting connections", server.log())) <= len(fronts):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    assert f"front worker {fronts[-1]} killed by SIGKILL" in server.log()
    session = requests.Session()
    for _ in range(20):  # new connections, taken by either front
        answer = requests.post(
            f"{server.url}/models/forest/invoke", data="5.0,3.4,1.5,0.2", headers={"Content-Type": "text/csv"}
        )
        assert answer.text == "setosa\n"
    assert _invoke(session, server, "xgboost", "6.6,3.0,5.6,2.0").text == "virginica\n"


def test_unload_ends_the_models_process_and_gives_its_memory_back(
    endpoint: tuple[Server, Path], big_forest: Path
) -> None:
    server, base = endpoint
    url = place_model(base, "big", big_forest)
    before_pids = set(server.descendant_pids())
    before = server.pss_bytes()
    assert _load(server, "big", url).status_code == 200
    host = set(server.descendant_pids()) - before_pids
    assert len(host) == 2, "a process per worker holds the model (sharing its memory)"
    loaded = server.pss_bytes()
    described = server.session.get(f"{server.url}/models/big").json()
    assert described["memoryBytes"] > 50 << 20 and described["loadSeconds"] > 0
    assert server.session.delete(f"{server.url}/models/big").status_code == 200
    assert not [pid for pid in host if Path(f"/proc/{pid}").exists()], "its processes are gone"
    after = server.pss_bytes()
    print(f"PSS {before >> 20} MiB, with the big forest {loaded >> 20} MiB, after unload {after >> 20} MiB")
    assert loaded - before > 50 << 20
    assert after - before < (loaded - before) / 4
    assert "model 'big' unloaded" in server.log()


def test_a_model_whose_load_segfaults_answers_500_naming_the_signal(
    endpoint: tuple[Server, Path], crashy_model: Path
) -> None:
    server, base = endpoint
    with Hammer(server, _expected(_good_models(server))) as hammer:
        refused = _load(server, "segv", _variant(base, "segv", crashy_model, crash="segfault on load"))
    assert refused.status_code == 500, refused.text
    message = refused.json()["message"]
    assert "segv" in message and "SIGSEGV" in message, message
    assert not hammer.wrong, hammer.wrong[:5]
    listed = [m["modelName"] for m in server.session.get(f"{server.url}/models").json()["models"]]
    assert "segv" not in listed and {"forest", "xgboost"} <= set(listed)


def test_a_model_that_aborts_at_its_tenth_predict_costs_only_its_own_requests(
    endpoint: tuple[Server, Path], crashy_model: Path
) -> None:
    server, base = endpoint
    url = _variant(base, "abort", crashy_model, crash="abort on predict", after=10)
    assert _load(server, "abort", url).status_code == 200
    session = requests.Session()
    with Hammer(server, _expected(_good_models(server))) as hammer:
        answers = [_invoke(session, server, "abort", "1,2,3,4,5") for _ in range(10)]
        time.sleep(0.5)
    statuses = [a.status_code for a in answers]
    assert statuses[:9] == [200] * 9 and statuses[9] == 500, statuses
    message = answers[9].json()["message"]
    assert "abort" in message and "SIGABRT" in message and "reloaded" in message, message
    assert not hammer.wrong, hammer.wrong[:5]
    # Reloaded from its folder, with a fresh count: it answers again.
    again = _invoke(session, server, "abort", "1,2,3,4,5")
    assert again.status_code == 200 and float(again.text) == 15.0, again.text
    described = server.session.get(f"{server.url}/models/abort").json()
    assert described["state"] == "ready" and described["crashes"] == 1, described
    assert "model 'abort': its process" in server.log() and "SIGABRT" in server.log()
    server.session.delete(f"{server.url}/models/abort")


def test_a_model_that_keeps_crashing_is_marked_failed(
    endpoint: tuple[Server, Path], crashy_model: Path
) -> None:
    server, base = endpoint
    url = _variant(base, "flaky", crashy_model, crash="abort on predict", after=1)
    assert _load(server, "flaky", url).status_code == 200
    session = requests.Session()
    answers = [_invoke(session, server, "flaky", "1,2,3,4,5") for _ in range(4)]
    assert [a.status_code for a in answers] == [500] * 4
    described = server.session.get(f"{server.url}/models/flaky").json()
    assert described["state"] == "failed" and described["crashes"] == 3, described
    assert "marked failed" in answers[3].json()["message"]
    assert server.session.delete(f"{server.url}/models/flaky").status_code == 200
    assert _invoke(session, server, "forest", "5.0,3.4,1.5,0.2").text == "setosa\n"


MEMORY_CGROUPS = Path("/sys/fs/cgroup/memory")


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[list[str]]:
    """A cgroup v1 memory group of `limit` bytes (a container's memory); yields the command
    prefix that runs a command in it. Removed after, once its last processes have exited."""
    group = MEMORY_CGROUPS / f"sagecraft-isolation-{os.getpid()}-{next(GROUPS)}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit))
        yield ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$0" "$@"']
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:  # its last processes are still exiting
                time.sleep(0.1)


@contextlib.contextmanager
def contained_endpoint(base: Path, site: Path, **env: str) -> Iterator[Server]:
    """A multi-model endpoint with the crashy plugin, in a 1.5 GiB memory cgroup (a container)."""
    with memory_cgroup(1536 << 20) as enter:
        server = Server(
            base, pythonpath=site, command=[*enter, *SAGECRAFT], SAGEMAKER_MULTI_MODEL="true", **env
        ).wait_ready()
        try:
            yield server
        finally:
            server.stop()


GROUPS = itertools.count()
needs_memory_cgroups = pytest.mark.skipif(
    not os.access(MEMORY_CGROUPS, os.W_OK), reason="needs a writable cgroup v1 memory hierarchy"
)


@needs_memory_cgroups
def test_a_model_that_allocates_past_the_containers_memory_fails_alone_under_load(
    tmp_path: Path,
    crashy_site: Path,
    crashy_model: Path,
    iris_forest: TrainingTree,
    iris_xgboost: TrainingTree,
) -> None:
    """The endpoint in a memory cgroup of 1.5 GiB (a container), its budget the default (85% of
    it); a model allocates 3 GiB as it loads, while clients ask two other models. Its processes
    may grow by what the budget has left: the allocation fails in the model's own process and its
    load answers 507; no other process is touched, no request to the others is lost."""
    with contained_endpoint(tmp_path, crashy_site, SAGEMAKER_MODEL_SERVER_WORKERS="2") as server:
        for name, tree in (("forest", iris_forest), ("xgboost", iris_xgboost)):
            assert _load(server, name, place_model(tmp_path, name, tree.model_dir)).status_code == 200
        hog = _variant(tmp_path, "hog", crashy_model, crash="allocate on load", bytes=3 << 30)
        before = set(server.descendant_pids())
        with Hammer(server, _expected(_good_models(server))) as hammer:
            refused = _load(server, "hog", hog)
            time.sleep(0.5)
        assert refused.status_code == 507, refused.text
        message = refused.json()["message"]
        assert "'hog' ran out of memory" in message and "budget" in message, message
        assert not hammer.wrong and hammer.answers > 10, hammer.wrong[:5]
        assert before <= set(server.descendant_pids()), "no process of the endpoint was killed"
        assert server.process.poll() is None
        # One that allocates 3 GiB when a row starts with -1: that request fails, the model
        # and its processes stay.
        url = _variant(tmp_path, "greedy", crashy_model, crash="allocate on -1", bytes=3 << 30)
        assert _load(server, "greedy", url).status_code == 200
        session = requests.Session()
        with Hammer(server, _expected(_good_models(server))) as hammer:
            failed = _invoke(session, server, "greedy", "-1,2,3,4,5")
            answered = _invoke(session, server, "greedy", "1,2,3,4,5")
        assert failed.status_code == 500, failed.text
        assert "'greedy' ran out of memory answering this request" in failed.json()["message"]
        assert answered.status_code == 200 and float(answered.text) == 15.0, answered.text
        assert not hammer.wrong, hammer.wrong[:5]
        assert server.session.get(f"{server.url}/models/greedy").json()["crashes"] == 0


@needs_memory_cgroups
def test_a_model_past_the_containers_memory_under_a_budget_too_high_is_killed_alone(
    tmp_path: Path, crashy_site: Path, crashy_model: Path, iris_forest: TrainingTree
) -> None:
    """A budget set above the container's memory leaves the kernel's out-of-memory killer to act:
    it takes the model's process (model hosts rank first), never the front workers or the parent,
    and the load answers 500 naming the signal."""
    with contained_endpoint(tmp_path, crashy_site, SAGECRAFT_MEMORY_BUDGET_MB="8192") as server:
        url = place_model(tmp_path, "forest", iris_forest.model_dir)
        assert _load(server, "forest", url).status_code == 200
        hog = _variant(tmp_path, "hog", crashy_model, crash="allocate on load", bytes=3 << 30)
        refused = _load(server, "hog", hog)
        assert refused.status_code == 500, refused.text
        message = refused.json()["message"]
        assert "hog" in message and "SIGKILL" in message and "out-of-memory" in message, message
        session = requests.Session()
        assert _invoke(session, server, "forest", "5.0,3.4,1.5,0.2").text == "setosa\n"
        assert server.process.poll() is None


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_single_model_endpoint_whose_load_crashes_names_the_folder_and_the_signal(
    tmp_path: Path, crashy_site: Path, crashy_model: Path, workers: str
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(crashy_model, model_dir)
    (model_dir / "crashy.json").write_text(json.dumps({"crash": "segfault on load"}))
    server = Server(tmp_path, pythonpath=crashy_site, SAGEMAKER_MODEL_SERVER_WORKERS=workers)
    try:
        server.process.wait(timeout=120)
    finally:
        server.stop()
    assert server.process.returncode == 1
    log = server.log()
    assert f"loading the model in {model_dir} killed the server (SIGSEGV)" in log, log
