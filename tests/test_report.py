"""The training report in output/data/report/: one HTML page with its figures inlined, and the
PNG files, for both plugins and both tasks; and the progress lines of long XGBoost fits."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from sagecraft.model_types import Dataset
from sagecraft.plugins import installed_plugins
from sagecraft.report import permutation_importance
from sagecraft_xgboost.checkpoints import Progress
from sagemaker_tree import TrainingTree, regression_rows

PNG = b"\x89PNG\r\n\x1a\n"


def _figures(report: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in report.glob("*.png")}


def test_classification_report_has_a_confusion_matrix_and_importances(
    iris_forest: TrainingTree,
) -> None:
    report = iris_forest.base / "output/data/report"
    page = (report / "report.html").read_text()
    figures = _figures(report)
    assert set(figures) == {"confusion-matrix.png", "feature-importance.png"}
    assert all(data.startswith(PNG) for data in figures.values())
    assert page.count("data:image/png;base64,") == 2
    assert "Training report: random_forest (classification)" in page
    assert "oob-accuracy" in page and "train-accuracy" in page
    assert "150 training rows" in page


def test_xgboost_regression_report_has_a_learning_curve_and_ranks_features(
    regression_xgboost: TrainingTree,
) -> None:
    report = regression_xgboost.base / "output/data/report"
    assert set(_figures(report)) == {"learning-curve.png", "residuals.png", "feature-importance.png"}
    page = (report / "report.html").read_text()
    assert "100 validation rows" in page and "validation-rmse" in page


@pytest.mark.parametrize("algorithm", ["random_forest", "xgboost"])
def test_permutation_importance_ranks_the_informative_features_first(tmp_path: Path,
                                                                     algorithm: str) -> None:
    """y = 3 x0 - 2 x1 + noise: shuffling x0 hurts most, then x1."""
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "train.csv", regression_rows(0, 600))
    tree.hyperparameters({"algorithm": algorithm})
    assert tree.train().returncode == 0, tree.explain()
    plugin = installed_plugins().algorithm(algorithm)
    model = plugin.load_model(tree.model_dir)
    text = regression_rows(1, 400)
    rows = np.array([[float(v) for v in line.split(",")] for line in text.splitlines()])
    features = pd.DataFrame(rows[:, 1:], columns=[f"f{i}" for i in range(5)])
    ranked = permutation_importance(plugin, model, Dataset(features, rows[:, 0]), "regression")
    assert list(ranked.index[:2]) == ["f0", "f1"]


def test_progress_of_a_long_fit_says_the_time_left(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    progress = Progress(200, logging.getLogger("test.progress"), quiet_s=5, clock=lambda: now[0])
    booster = xgb.Booster()
    with caplog.at_level(logging.INFO, logger="test.progress"):
        for epoch in range(200):
            now[0] = (epoch + 1) * 0.1  # 0.1 s a round: 20 s in all
            progress.after_iteration(booster, epoch, {})
    lines = [r.getMessage() for r in caplog.records]
    # Quiet for the first 5 s (rounds 20 and 40 pass unlogged), then each tenth until the end.
    assert lines[0] == "round 60 of 200 (30%), 6 s so far, about 14 s left"
    assert lines[-1].startswith("round 180 of 200 (90%)")
    assert len(lines) == 7
    assert all(re.match(r"round \d+ of 200 \(\d+%\), \d+ s so far, about \d+ s left", x) for x in lines)
