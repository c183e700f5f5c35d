"""k-fold cross-validation (`kfold`) for both plugins: a metric line per fold and the mean, the
out-of-fold predictions and metrics in output/data/, and the final model fitted on every row."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sagemaker_tree import TrainingTree, iris_tree, regression_rows


@pytest.mark.parametrize("algorithm", ["random_forest", "xgboost"])
def test_kfold_classification_writes_out_of_fold_predictions(tmp_path: Path, algorithm: str) -> None:
    tree = iris_tree(tmp_path, {"algorithm": algorithm, "target": "Species", "kfold": 5})
    assert tree.train().returncode == 0, tree.explain()
    out = tree.result.stdout
    folds = [float(v) for v in re.findall(r"\[\d\]\tcv-fold-accuracy:(\S+)", out)]
    assert len(folds) == 5 and all(0.8 <= f <= 1 for f in folds), out
    mean = float(re.search(r".*\[[0-9]+\].*\tcv-accuracy:(\S+)", out).group(1))
    assert abs(mean - np.mean(folds)) < 1e-5
    metrics = json.loads((tree.base / "output/data/cv-metrics.json").read_text())
    assert len(metrics["folds"]) == 5 and set(metrics["mean"]) == {"accuracy", "f1", "logloss"}
    oof = pd.read_csv(tree.base / "output/data/oof-predictions.csv")
    assert len(oof) == 150 and sorted(oof["fold"].unique()) == [0, 1, 2, 3, 4]
    assert set(oof["predicted"]) <= {"setosa", "versicolor", "virginica"}
    assert abs((oof["label"] == oof["predicted"]).mean() - mean) < 0.01  # stratified, equal folds
    probabilities = oof[[f"probability_{c}" for c in ("setosa", "versicolor", "virginica")]]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    # The model the job saves is the usual one, fitted on all rows.
    assert (tree.model_dir / "manifest.json").exists()


def test_kfold_regression(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "train.csv", regression_rows(0, 300))
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 30, "kfold": 3})
    assert tree.train().returncode == 0, tree.explain()
    assert len(re.findall(r"cv-fold-rmse:", tree.result.stdout)) == 3
    assert "cv-r2:" in tree.result.stdout and "cv-rmse-std:" in tree.result.stdout
    oof = pd.read_csv(tmp_path / "output/data/oof-predictions.csv")
    assert np.corrcoef(oof["label"], oof["predicted"])[0, 1] > 0.9


def test_kfold_needs_enough_rows(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "train.csv", "1,2\n0,3\n1,4\n")
    tree.hyperparameters({"algorithm": "random_forest", "kfold": 5})
    assert tree.train().returncode == 1
    assert "kfold=5 needs at least 5 training rows" in tree.failure


def test_repeated_kfold_under_the_builtin_algorithms_names(tmp_path: Path) -> None:
    """SageMaker's built-in XGBoost spells them _kfold and _num_cv_round."""
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "train.csv", regression_rows(0, 300))
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 20, "_kfold": 3, "_num_cv_round": 2})
    result = tree.train()
    assert result.returncode == 0, tree.explain()
    assert "3-fold cross-validation of xgboost, 2 times" in result.stderr
    assert len(re.findall(r"cv-fold-rmse:", result.stdout)) == 6
    metrics = json.loads((tmp_path / "output/data/cv-metrics.json").read_text())
    assert len(metrics["folds"]) == 6 and metrics["repeats"] == 2
    oof = pd.read_csv(tmp_path / "output/data/oof-predictions.csv")
    assert len(oof) == 600 and sorted(oof["repeat"].unique()) == [0, 1]
    for _, block in oof.groupby("repeat"):
        assert sorted(block["row"]) == list(range(300)) and sorted(block["fold"].unique()) == [0, 1, 2]
    first, second = (block.sort_values("row") for _, block in oof.groupby("repeat"))
    assert not np.array_equal(first["fold"].to_numpy(), second["fold"].to_numpy())  # reshuffled
    assert np.corrcoef(oof["label"], oof["predicted"])[0, 1] > 0.9
    lone = TrainingTree(tmp_path / "lone")
    lone.add_file("train", "train.csv", regression_rows(0, 50))
    lone.hyperparameters({"algorithm": "xgboost", "_num_cv_round": 2})
    assert lone.train().returncode == 1
    assert "num_cv_round repeats the k-fold cross-validation: set kfold too" in (lone.failure or "")
