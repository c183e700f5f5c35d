"""Metrics in SageMaker's log format: the extra metrics built-in XGBoost offers, for both plugins,
early stopping on a metric that grows, and the forest's out-of-bag estimate."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sagemaker_tree import TrainingTree, iris_rows, regression_rows


def _metric(stdout: str, name: str) -> list[float]:
    """Every value of `name` in the log, read with the regex a SageMaker user would write."""
    return [float(v) for v in re.findall(rf".*\[[0-9]+\].*\t{name}:(\S+)", stdout)]


def _iris_with_validation(tmp_path: Path, hyperparameters: dict[str, object]) -> TrainingTree:
    header, rows = iris_rows()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(rows))
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "train.csv", "\n".join([header, *(rows[i] for i in order[:100])]) + "\n")
    tree.add_file("validation", "validation.csv", "\n".join([header, *(rows[i] for i in order[100:])]) + "\n")
    tree.channels(train="text/csv", validation="text/csv")
    tree.hyperparameters({"target": "Species", **hyperparameters})
    return tree


def test_xgboost_extra_classification_metrics_are_logged(tmp_path: Path) -> None:
    tree = _iris_with_validation(
        tmp_path, {"algorithm": "xgboost", "num_round": 10, "eval_metric": "mlogloss,accuracy,f1"}
    )
    assert tree.train().returncode == 0, tree.explain()
    out = tree.result.stdout
    for name in ("train-mlogloss", "validation-accuracy", "validation-f1", "train-accuracy"):
        values = _metric(out, name)
        assert len(values) == 10, (name, out)
    assert all(0.8 < v <= 1 for v in _metric(out, "validation-accuracy")[3:])


def test_xgboost_early_stopping_on_accuracy_keeps_the_most_accurate_round(tmp_path: Path) -> None:
    tree = _iris_with_validation(
        tmp_path,
        {
            "algorithm": "xgboost",
            "num_round": 60,
            "eta": 0.3,
            "max_depth": 2,
            "eval_metric": "accuracy",
            "early_stopping_rounds": 5,
        },
    )
    assert tree.train().returncode == 0, tree.explain()
    accuracy = _metric(tree.result.stdout, "validation-accuracy")
    best = int(np.argmax(accuracy))  # the first round reaching the maximum
    assert len(accuracy) == min(60, best + 6), accuracy  # stopped 5 rounds after the best
    if len(accuracy) < 60:
        assert f"keeping rounds 0-{best}" in tree.result.stderr


def test_xgboost_extra_regression_metrics_are_logged(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "train.csv", regression_rows(0, 300))
    tree.add_file("validation", "validation.csv", regression_rows(1, 100))
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 30, "eval_metric": "rmse,mse,r2"})
    assert tree.train().returncode == 0, tree.explain()
    rmse, mse, r2 = (_metric(tree.result.stdout, f"validation-{m}") for m in ("rmse", "mse", "r2"))
    assert len(r2) == 30 and r2[-1] > 0.9
    np.testing.assert_allclose(np.sqrt(mse), rmse, rtol=1e-4)


def test_forest_logs_its_out_of_bag_estimate(tmp_path: Path) -> None:
    tree = _iris_with_validation(
        tmp_path, {"algorithm": "random_forest", "ntree": 60, "eval_metric": "accuracy,error"}
    )
    assert tree.train().returncode == 0, tree.explain()
    out = tree.result.stdout
    (line,) = [line for line in out.splitlines() if line.startswith("[")]
    names = [field.split(":")[0] for field in line.split("\t")[1:]]
    assert names == [
        "train-accuracy",
        "train-error",
        "oob-accuracy",
        "oob-error",
        "validation-accuracy",
        "validation-error",
    ]
    oob = _metric(out, "oob-accuracy")[0]
    assert 0.85 < oob < 1.0
    assert abs(oob + _metric(out, "oob-error")[0] - 1) < 1e-9


@pytest.mark.parametrize(
    ("hyperparameters", "expected"),
    [
        ({"bootstrap": "false"}, None),
        ({"oob_score": "false"}, None),
        ({"oob_score": "true", "bootstrap": "false"}, "oob_score needs bootstrap=true"),
    ],
)
def test_forest_out_of_bag_follows_bootstrap(
    tmp_path: Path, hyperparameters: dict[str, str], expected: str | None
) -> None:
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "train.csv", regression_rows(0, 200))
    tree.hyperparameters({"algorithm": "random_forest", "ntree": 20, **hyperparameters})
    result = tree.train()
    if expected is None:
        assert result.returncode == 0, tree.explain()
        assert "oob-" not in result.stdout and "train-rmse" in result.stdout
    else:
        assert result.returncode == 1
        assert tree.failure is not None and expected in tree.failure


def test_forest_regression_out_of_bag_rmse(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "train.csv", regression_rows(0, 400))
    tree.hyperparameters({"algorithm": "random_forest", "ntree": 50, "eval_metric": "rmse,r2"})
    assert tree.train().returncode == 0, tree.explain()
    oob_rmse = _metric(tree.result.stdout, "oob-rmse")[0]
    train_rmse = _metric(tree.result.stdout, "train-rmse")[0]
    assert oob_rmse > train_rmse  # rows the trees never saw are harder than seen ones
    assert _metric(tree.result.stdout, "oob-r2")[0] > 0.8
