"""A multi-model endpoint (SAGEMAKER_MULTI_MODEL=true) driven as SageMaker drives it."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from sagemaker_tree import Server, TrainingTree, install_slow_plugin, iris_tree, place_model

SETOSA = "5.0,3.4,1.5,0.2"


@pytest.fixture(scope="module")
def slow_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("slow-site")
    return install_slow_plugin(site)


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory, slow_site: Path) -> Path:
    tree = iris_tree(
        tmp_path_factory.mktemp("slow"), {"algorithm": "slow", "target": "Species", "load_delay": 3}
    )
    tree.pythonpath = slow_site
    assert tree.train().returncode == 0, tree.explain()
    (tree.model_dir / "loads.log").unlink()  # the training report loaded it once
    return tree.model_dir


@pytest.fixture(scope="module")
def endpoint(
    tmp_path_factory: pytest.TempPathFactory,
    iris_forest: TrainingTree,
    iris_xgboost: TrainingTree,
    slow_site: Path,
) -> Iterator[tuple[Server, dict[str, str]]]:
    base = tmp_path_factory.mktemp("mme")
    urls = {
        "forest": place_model(base, "forest", iris_forest.model_dir),
        "xgboost": place_model(base, "xgboost", iris_xgboost.model_dir),
    }
    server = Server(base, pythonpath=slow_site, SAGEMAKER_MULTI_MODEL="true").wait_ready()
    yield server, urls
    server.stop()


def _load(server: Server, name: str, url: str) -> requests.Response:
    return server.session.post(f"{server.url}/models", json={"model_name": name, "url": url}, timeout=120)


def _invoke(server: Server, name: str, body: str = SETOSA, **kwargs: object) -> requests.Response:
    return server.session.post(
        f"{server.url}/models/{name}/invoke",
        data=body,
        headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Model": name},
        timeout=120,
        **kwargs,
    )


def test_ping_answers_with_no_model_loaded(endpoint: tuple[Server, dict]) -> None:
    server, _ = endpoint
    assert server.session.get(f"{server.url}/ping").status_code == 200
    assert _invoke(server, "nothing-here").status_code == 404


def test_forest_and_xgboost_side_by_side(endpoint: tuple[Server, dict]) -> None:
    server, urls = endpoint
    assert _load(server, "rf", urls["forest"]).status_code == 200
    assert _load(server, "xgb", urls["xgboost"]).status_code == 200
    try:
        assert _invoke(server, "rf").text == "setosa\n"
        assert _invoke(server, "xgb", "6.6,3.0,5.6,2.0").text == "virginica\n"
        via_header = server.session.post(
            f"{server.url}/invocations",
            data=SETOSA,
            headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Model": "xgb"},
        )
        assert via_header.text == "setosa\n"
        described = server.session.get(f"{server.url}/models/rf").json()
        assert {k: described[k] for k in ("modelName", "modelUrl", "state")} == {
            "modelName": "rf",
            "modelUrl": urls["forest"],
            "state": "ready",
        }
        assert described["loadSeconds"] > 0 and described["memoryBytes"] > 1 << 20
        listed = server.session.get(f"{server.url}/models").json()
        assert {m["modelName"] for m in listed["models"]} >= {"rf", "xgb"}
        assert "nextPageToken" not in listed
    finally:
        for name in ("rf", "xgb"):
            server.session.delete(f"{server.url}/models/{name}")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("folder that does not exist", 404),
        ("name already loaded", 409),
        ("invoke a model never loaded", 404),
        ("describe a model never loaded", 404),
        ("unload a model never loaded", 404),
        ("body without url", 400),
        ("body not json", 400),
        ("no target model on /invocations", 400),
    ],
)
def test_model_api_status_codes(endpoint: tuple[Server, dict], case: str, expected: int) -> None:
    server, urls = endpoint
    post = server.session.post
    if case == "name already loaded":
        assert _load(server, "dup", urls["forest"]).status_code == 200
        try:
            response = _load(server, "dup", urls["xgboost"])
        finally:
            server.session.delete(f"{server.url}/models/dup")
    else:
        response = {
            "folder that does not exist": lambda: _load(
                server, "x", str(Path(urls["forest"]).parents[1] / "nonexistent" / "model")
            ),
            "invoke a model never loaded": lambda: _invoke(server, "ghost"),
            "describe a model never loaded": lambda: server.session.get(f"{server.url}/models/ghost"),
            "unload a model never loaded": lambda: server.session.delete(f"{server.url}/models/ghost"),
            "body without url": lambda: post(f"{server.url}/models", json={"model_name": "x"}),
            "body not json": lambda: post(f"{server.url}/models", data="model_name=x"),
            "no target model on /invocations": lambda: post(
                f"{server.url}/invocations", data=SETOSA, headers={"Content-Type": "text/csv"}
            ),
        }[case]()
    assert response.status_code == expected, response.text
    assert response.json()["code"] == expected
    assert _load(server, "after", urls["forest"]).status_code == 200  # still serving
    assert _invoke(server, "after").text == "setosa\n"
    server.session.delete(f"{server.url}/models/after")


def test_names_are_opaque_keys(endpoint: tuple[Server, dict]) -> None:
    server, urls = endpoint
    name = "../../etc/passwd model.tar.gz"
    assert _load(server, name, urls["forest"]).status_code == 200
    try:
        quoted = requests.utils.quote(name, safe="")
        assert _invoke(server, quoted).text == "setosa\n"
        assert server.session.get(f"{server.url}/models/{quoted}").json()["modelName"] == name
    finally:
        assert (
            server.session.delete(f"{server.url}/models/{requests.utils.quote(name, safe='')}").status_code
            == 200
        )


def test_paging_through_twelve_models(endpoint: tuple[Server, dict]) -> None:
    """Pages of `limit` models in name order, each naming the next one's token (the default page
    of 100 is the same code with another limit: 12 model hosts, not 101, keep this test short)."""
    server, urls = endpoint
    names = [f"m{i:03d}" for i in range(12)]
    for name in names:
        assert _load(server, name, urls["xgboost"]).status_code == 200
    try:
        seen, token, pages = [], None, 0
        while True:
            params = {"limit": 5, **({"next_page_token": token} if token else {})}
            page = server.session.get(f"{server.url}/models", params=params).json()
            seen += [m["modelName"] for m in page["models"]]
            pages += 1
            token = page.get("nextPageToken")
            if token is None:
                break
        assert seen == names and pages == 3
        whole = server.session.get(f"{server.url}/models").json()
        assert [m["modelName"] for m in whole["models"]] == names and "nextPageToken" not in whole
        small = server.session.get(f"{server.url}/models", params={"limit": 7}).json()
        assert len(small["models"]) == 7 and small["nextPageToken"] == "m006"
    finally:
        for name in names:
            server.session.delete(f"{server.url}/models/{name}")
    assert server.session.get(f"{server.url}/models").json() == {"models": []}


def test_requests_during_a_load_wait_for_that_one_load(
    endpoint: tuple[Server, dict], slow_model: Path
) -> None:
    server, urls = endpoint
    url = place_model(Path(urls["forest"]).parents[2], "slow", slow_model)
    outcomes: dict[str, requests.Response] = {}
    loader = threading.Thread(target=lambda: outcomes.update(load=_load(server, "slow", url)))
    loader.start()
    time.sleep(0.5)
    assert _load(server, "rf-during", urls["forest"]).status_code == 200
    during = _invoke(server, "rf-during")
    load_still_running = loader.is_alive()
    waiters = [
        threading.Thread(target=lambda k=k: outcomes.update({k: _invoke(server, "slow")}))
        for k in ("first", "second")
    ]
    for waiter in waiters:
        waiter.start()
    loader.join()
    for waiter in waiters:
        waiter.join()
    try:
        assert during.text == "setosa\n" and load_still_running, "other models serve during a load"
        assert outcomes["load"].status_code == 200
        assert outcomes["first"].text == outcomes["second"].text == "setosa\n"
        assert (Path(url) / "loads.log").read_text() == "load\n"
    finally:
        server.session.delete(f"{server.url}/models/slow")
        server.session.delete(f"{server.url}/models/rf-during")


def test_unload_during_an_invocation_lets_it_finish(endpoint: tuple[Server, dict], slow_model: Path) -> None:
    server, urls = endpoint
    # The slow model, its predicts of over 1000 rows made to take 3 s: the unload and the
    # requests below come while that invocation runs (a large body alone could finish first).
    url = place_model(Path(urls["forest"]).parents[2], "busy", slow_model)
    (Path(url) / "slow.json").write_text(json.dumps({"delay": 0, "predict_delay": 3}))
    assert _load(server, "busy", url).status_code == 200
    rows = np.random.default_rng(0).uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], size=(2_000, 4))
    body = "\n".join(",".join(f"{v:.2f}" for v in row) for row in rows)
    outcome: dict[str, requests.Response] = {}
    worker = threading.Thread(target=lambda: outcome.update(r=_invoke(server, "busy", body)))
    worker.start()
    time.sleep(0.7)
    unloader = threading.Thread(
        target=lambda: outcome.update(unloaded=requests.delete(f"{server.url}/models/busy", timeout=120))
    )
    unloader.start()
    time.sleep(0.2)
    during = {"load": _load(server, "busy", urls["forest"]), "invoke": _invoke(server, "busy")}
    unloader.join()
    invocation_done_first = not worker.is_alive()
    worker.join()
    assert outcome["unloaded"].status_code == 200
    assert invocation_done_first, "unload returned while its invocation was still running"
    assert outcome["r"].status_code == 200, outcome["r"].text + server.log()[-3000:]
    assert len(outcome["r"].text.splitlines()) == 2_000
    # While the unload waits for that invocation: the name is still taken, the model gone.
    assert during["load"].status_code == 409, during["load"].text
    assert during["invoke"].status_code == 404, during["invoke"].text
    assert _invoke(server, "busy").status_code == 404
    assert _load(server, "busy", urls["forest"]).status_code == 200  # free again once unloaded
    assert server.session.delete(f"{server.url}/models/busy").status_code == 200


@pytest.mark.slow
def test_memory_budget_answers_507_and_unload_returns_memory(
    tmp_path: Path, iris_forest: TrainingTree, big_forest: Path
) -> None:
    url = place_model(tmp_path, "big", big_forest)
    small = place_model(tmp_path, "small", iris_forest.model_dir)
    server = Server(tmp_path, SAGEMAKER_MULTI_MODEL="true").wait_ready()
    try:
        # A first load and unload pays one-time costs (imports, caches); then measure a cycle.
        assert _load(server, "big", url).status_code == 200
        assert server.session.delete(f"{server.url}/models/big").status_code == 200
        baseline = server.pss_bytes()  # every process of the endpoint, as its budget counts
        assert _load(server, "big", url).status_code == 200
        loaded = server.pss_bytes()
        assert server.session.delete(f"{server.url}/models/big").status_code == 200
        after = server.pss_bytes()
        grown = loaded - baseline
        print(f"PSS baseline {baseline >> 20} MiB, loaded {loaded >> 20} MiB, after unload {after >> 20} MiB")
        assert grown > 20 << 20, "the big model should take tens of MiB"
        assert after - baseline < grown / 4, "unload kept more than a quarter of the model's memory"
        assert _load(server, "small", small).status_code == 200
        small_cost = server.pss_bytes() - after  # the small model and its process
    finally:
        server.stop()
    # Room for the small model with half the big one's size to spare (processes differ from one
    # start to the next by tens of MiB), not for the big one as well.
    budget_mb = baseline + small_cost + grown // 2 >> 20
    tight = Server(
        tmp_path, SAGEMAKER_MULTI_MODEL="true", SAGECRAFT_MEMORY_BUDGET_MB=str(budget_mb)
    ).wait_ready()
    try:
        assert _load(tight, "small", small).status_code == 200
        refused = _load(tight, "big", url)
        assert refused.status_code == 507, refused.text
        assert "budget" in refused.json()["message"]
        assert _invoke(tight, "small").text == "setosa\n"  # the server keeps serving
        assert "big" not in [
            m["modelName"] for m in tight.session.get(f"{tight.url}/models").json()["models"]
        ]
    finally:
        tight.stop()


@pytest.mark.slow
def test_eviction_makes_room_for_a_new_model(tmp_path: Path, big_forest: Path) -> None:
    first = place_model(tmp_path, "a", big_forest)
    second = place_model(tmp_path, "b", big_forest)
    probe = Server(tmp_path, SAGEMAKER_MULTI_MODEL="true").wait_ready()
    settled = probe.pss_bytes()  # libraries imported, no model
    assert _load(probe, "a", first).status_code == 200
    cost = probe.pss_bytes() - settled  # one big model and its process (about 170 MiB)
    probe.stop()
    # Room for one big model and 40 MiB of slack for what processes gather over time, not for two.
    budget_mb = (settled + cost >> 20) + 40
    server = Server(
        tmp_path,
        SAGEMAKER_MULTI_MODEL="true",
        SAGECRAFT_EVICT_IDLE_MODELS="true",
        SAGECRAFT_MEMORY_BUDGET_MB=str(budget_mb),
    ).wait_ready()
    try:
        loaded_a = _load(server, "a", first)
        assert loaded_a.status_code == 200, loaded_a.text
        loaded_b = _load(server, "b", second)
        assert loaded_b.status_code == 200, loaded_b.text
        names = [m["modelName"] for m in server.session.get(f"{server.url}/models").json()["models"]]
        assert names == ["b"]
        assert "evicting idle model 'a'" in server.log()
        assert _invoke(server, "b", "0,0,0,0,0").status_code == 200
    finally:
        server.stop()


def test_a_stop_right_after_the_endpoint_is_ready_reaches_every_front(
    tmp_path: Path, iris_forest: TrainingTree
) -> None:
    """SIGTERM as soon as the endpoint answers: a front worker still starting has not yet put
    its handler in place of the zygote's SIG_IGN, so the parent signals again until every front
    has drained (the first signal alone was lost about half the time, and the endpoint waited
    out its whole shutdown timeout). The last time with a model loaded: its process ends with the
    endpoint, and is not taken for a crash and reloaded (it was, and the stop waited for it)."""
    for attempt in range(3):
        base = tmp_path / str(attempt)
        base.mkdir()
        server = Server(base, SAGEMAKER_MULTI_MODEL="true", SAGECRAFT_SHUTDOWN_TIMEOUT="60").wait_ready()
        if attempt == 2:
            url = place_model(base, "forest", iris_forest.model_dir)
            assert _load(server, "forest", url).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        try:
            # A lost signal would keep it 65 s (the timeout, then the parent's kill).
            assert server.process.wait(30) == 0, server.log()
            assert "reloading" not in server.log(), server.log()
        finally:
            server.stop()
