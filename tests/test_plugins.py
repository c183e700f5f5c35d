"""Plugin discovery through real entry points: third-party algorithms, conflicts, broken plugins."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

import pytest
import requests

from sagemaker_tree import (
    SAGECRAFT,
    Server,
    TrainingTree,
    environment,
    install_test_plugin,
    iris_tree,
)

# A complete third-party algorithm: predicts the most frequent class, loads slowly on request.
MAJORITY_PLUGIN = """
    import json, os, time
    import numpy as np
    from sagecraft.hooks import AlgorithmInfo, Hyperparameter, hookimpl

    @hookimpl
    def algorithm_info():
        return AlgorithmInfo(description="always the most frequent class", hyperparameters=[
            Hyperparameter("load_delay", float, "seconds load_model sleeps", default=0.0,
                           minimum=0)])

    @hookimpl
    def fit(train, hyperparameters, context):
        # Takes fewer arguments than the spec: a plugin written before `validation` existed.
        counts = np.bincount(train.labels)
        return {"code": int(np.argmax(counts)), "delay": hyperparameters["load_delay"]}

    @hookimpl
    def save_model(model, model_dir):
        (model_dir / "majority.json").write_text(json.dumps(model))

    @hookimpl
    def load_model(model_dir):
        model = json.loads((model_dir / "majority.json").read_text())
        time.sleep(model["delay"])
        return model

    @hookimpl
    def predict(model, features, output):
        return np.full(len(features), model["code"])
"""

IMPOSTOR = """
    from sagecraft.hooks import AlgorithmInfo, hookimpl

    @hookimpl
    def algorithm_info():
        return AlgorithmInfo(description="a second xgboost")
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    install_test_plugin(
        site,
        "sagecraft-majority",
        {"majority": "sagecraft_majority"},
        {"sagecraft_majority": MAJORITY_PLUGIN},
    )
    install_test_plugin(
        site, "sagecraft-impostor", {"xgboost": "sagecraft_impostor"}, {"sagecraft_impostor": IMPOSTOR}
    )
    install_test_plugin(
        site,
        "sagecraft-broken",
        {"broken": "sagecraft_broken"},
        {"sagecraft_broken": "import no_such_module\n"},
    )
    install_test_plugin(
        site,
        "sagecraft-typo",
        {"typo": "sagecraft_typo"},
        {
            "sagecraft_typo": """
        from sagecraft.hooks import hookimpl

        @hookimpl
        def fitt(train):
            return None
    """
        },
    )
    return site


def _plugins_listing(site: Path, tmp_path: Path) -> str:
    result = subprocess.run(
        [*SAGECRAFT, "plugins"],
        env=environment(tmp_path, site),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_listing_reports_each_plugin_and_problem_by_name(site: Path, tmp_path: Path) -> None:
    listing = _plugins_listing(site, tmp_path)
    assert "majority" in listing and "sagecraft-majority 1.0" in listing
    assert "random_forest" in listing
    broken = next(line for line in listing.splitlines() if line.startswith("broken"))
    assert "sagecraft-broken 1.0" in broken and "No module named 'no_such_module'" in broken
    typo = next(line for line in listing.splitlines() if line.startswith("typo"))
    assert "unknown hook(s) fitt" in typo


def test_two_distributions_claiming_one_name_fail_naming_both(site: Path, tmp_path: Path) -> None:
    listing = _plugins_listing(site, tmp_path)
    conflict = next(line for line in listing.splitlines() if line.startswith("xgboost"))
    assert "sagecraft 0.1.0" in conflict and "sagecraft-impostor 1.0" in conflict

    tree = iris_tree(tmp_path, {"algorithm": "xgboost", "target": "Species"})
    tree.pythonpath = site
    assert tree.train().returncode == 1
    assert "plugin name 'xgboost' is claimed by sagecraft" in tree.failure
    assert "sagecraft-impostor" in tree.failure


def test_third_party_algorithm_trains_and_serves_beside_broken_plugins(site: Path, tmp_path: Path) -> None:
    tree = iris_tree(tmp_path, {"algorithm": "majority", "target": "Species", "load_delay": 3})
    tree.pythonpath = site
    assert tree.train().returncode == 0, tree.explain()
    manifest = json.loads((tree.model_dir / "manifest.json").read_text())
    assert manifest["plugin"] == {"name": "majority", "distribution": "sagecraft-majority", "version": "1.0"}

    server = Server(tree.base, pythonpath=site)
    try:
        statuses = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.ConnectionError):
                statuses.append(server.session.get(f"{server.url}/ping", timeout=2).status_code)
            if statuses and statuses[-1] == 200:
                break
            time.sleep(0.05)
        assert 503 in statuses, "the model loads for 3 s, so /ping must say 503 first"
        loading = server.invoke("5,3,1,0.2")
        assert statuses[-1] == 200, server.log()
        assert loading.status_code == 200
        assert server.invoke("5,3,1,0.2\n6,3,5,2").text == "setosa\nsetosa\n"
    finally:
        server.stop()


def test_invocation_before_the_model_loads_gets_503(site: Path, tmp_path: Path) -> None:
    tree = iris_tree(tmp_path, {"algorithm": "majority", "target": "Species", "load_delay": 5})
    tree.pythonpath = site
    assert tree.train().returncode == 0, tree.explain()
    server = Server(tree.base, pythonpath=site)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = server.invoke("5,3,1,0.2")
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert response.status_code == 503
        assert response.json()["message"] == "the model is still loading"
    finally:
        server.stop()


def test_serve_exits_with_a_clear_message_when_the_model_cannot_load(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    server = Server(tree.base)
    code = server.process.wait(60)
    assert code == 1
    assert "manifest.json is missing" in server.log()
    server.stop()


def test_serve_reports_a_model_whose_plugin_is_not_installed(
    iris_forest: TrainingTree, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    manifest = json.loads((iris_forest.model_dir / "manifest.json").read_text())
    manifest["algorithm"] = "catboost"
    (model / "manifest.json").write_text(json.dumps(manifest))
    server = Server(tmp_path)
    assert server.process.wait(60) == 1
    assert "unknown algorithm 'catboost'" in server.log()
    server.stop()
