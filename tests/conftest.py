"""Shared fixtures: models trained once per session by the real `sagecraft train`, and servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The SDK v2 warns on import that v3 exists; the tests use v2's Predictor on purpose.
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
# The training report costs about a second of CPU a job, a quarter of a small one: off for the
# suite's hundreds of jobs, on for the tests of the report (the `with_report` fixture).
os.environ.setdefault("SAGECRAFT_TRAINING_REPORT", "false")

from sagemaker_tree import Server, TrainingTree, iris_tree, regression_rows


@pytest.fixture
def with_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training jobs of this test (in-process or `sagecraft train`) write their report."""
    monkeypatch.setenv("SAGECRAFT_TRAINING_REPORT", "true")


@pytest.fixture(scope="session")
def iris_forest(tmp_path_factory: pytest.TempPathFactory) -> TrainingTree:
    tree = iris_tree(
        tmp_path_factory.mktemp("iris-forest"), {"algorithm": "random_forest", "target": "Species", "mtry": 2}
    )
    assert tree.train(SAGECRAFT_TRAINING_REPORT="true").returncode == 0, (
        tree.explain()
    )  # test_report.py reads it
    return tree


@pytest.fixture(scope="session")
def iris_xgboost(tmp_path_factory: pytest.TempPathFactory) -> TrainingTree:
    tree = iris_tree(
        tmp_path_factory.mktemp("iris-xgboost"),
        {"algorithm": "xgboost", "target": "Species", "num_round": 20, "max_depth": 3},
    )
    assert tree.train().returncode == 0, tree.explain()
    return tree


@pytest.fixture(scope="session")
def regression_xgboost(tmp_path_factory: pytest.TempPathFactory) -> TrainingTree:
    tree = TrainingTree(tmp_path_factory.mktemp("regression-xgboost"))
    tree.add_file("train", "train.csv", regression_rows(0, 400))
    tree.add_file("validation", "validation.csv", regression_rows(1, 100))
    tree.channels(train="text/csv", validation="text/csv")
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 30, "eval_metric": "rmse"})
    assert tree.train(SAGECRAFT_TRAINING_REPORT="true").returncode == 0, tree.explain()  # test_report.py
    return tree


@pytest.fixture(scope="session")
def big_forest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A forest of about 100 MiB in memory: large enough to dominate the server's noise."""
    big = TrainingTree(tmp_path_factory.mktemp("big-forest"))
    big.add_file("train", "d.csv", regression_rows(0, 3000))
    big.hyperparameters({"algorithm": "random_forest", "ntree": 150, "n_jobs": 2})
    assert big.train().returncode == 0, big.explain()
    return big.model_dir


def _serve(tree: TrainingTree) -> Iterator[Server]:
    server = Server(tree.base).wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def forest_server(iris_forest: TrainingTree) -> Iterator[Server]:
    yield from _serve(iris_forest)


@pytest.fixture(scope="session")
def xgboost_server(iris_xgboost: TrainingTree) -> Iterator[Server]:
    yield from _serve(iris_xgboost)


@pytest.fixture(scope="session")
def regression_server(regression_xgboost: TrainingTree) -> Iterator[Server]:
    yield from _serve(regression_xgboost)


@pytest.fixture(params=["forest", "xgboost"])
def iris_server(request: pytest.FixtureRequest) -> Server:
    """Each iris model in turn: both algorithms must behave the same at the HTTP boundary."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(scope="session")
def binary_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folders `<name>/xgboost-model` in XGBoost's old binary format, written by XGBoost 2.1.4
    (old_xgboost.py), each with the writer's own predictions of old_xgboost.PROBE."""
    from old_xgboost import install_writer, write_binary_models

    site = install_writer(tmp_path_factory.mktemp("xgboost-writer"))
    return write_binary_models(site, tmp_path_factory.mktemp("binary-models"))
