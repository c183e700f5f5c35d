"""The training report in output/data/report/: one HTML page with its figures inlined, and the
PNG files, for both plugins and both tasks; and the progress lines of long XGBoost fits."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from sagecraft.model_types import Dataset
from sagecraft.plugins import installed_plugins
from sagecraft.training.report import permutation_importance
from sagecraft_xgboost.checkpoints import Progress
from sagemaker_tree import TrainingTree, environment, regression_rows

pytestmark = pytest.mark.usefixtures("with_report")

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
def test_permutation_importance_ranks_the_informative_features_first(tmp_path: Path, algorithm: str) -> None:
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


# --- bounded whatever the data, and stopped by SIGTERM -----------------------------------------


def _start(tree: TrainingTree) -> subprocess.Popen:
    return subprocess.Popen(
        [*tree.command, "train"],
        env=environment(tree.base),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_line(process: subprocess.Popen, phrase: str) -> list[str]:
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if phrase in line:
            return seen
    raise AssertionError(f"'{phrase}' never appeared:\n{''.join(seen)}")


@pytest.mark.slow
def test_a_report_of_three_thousand_classes_stays_bounded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    classes = 3000
    labels = np.repeat(np.arange(classes), 2)
    features = labels[:, None] + rng.normal(scale=0.1, size=(len(labels), 3))
    tree = TrainingTree(tmp_path)
    tree.add_file(
        "train",
        "train.csv",
        "\n".join(
            f"class{label}," + ",".join(f"{v:.3f}" for v in row)
            for label, row in zip(labels, features, strict=True)
        )
        + "\n",
    )
    # XGBoost: a forest of 3,000 classes keeps 3,000 probabilities in every node (gigabytes).
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 1, "max_depth": 2})
    process = subprocess.Popen(
        [*tree.command, "train"],
        env=environment(tree.base),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(process.pid, 0)
    stderr = process.stderr.read() if process.stderr else ""
    assert os.waitstatus_to_exitcode(status) == 0, stderr
    assert "Traceback" not in stderr, stderr
    report = tmp_path / "output/data/report"
    assert {"confusion-matrix.png", "feature-importance.png"} <= set(_figures(report))
    # It took over 15 GB before the confusion matrix was bounded to its 30 largest classes.
    assert usage.ru_maxrss / 1024 < 2048, usage.ru_maxrss


@pytest.mark.slow
def test_sigterm_while_the_report_is_written_stops_it_and_keeps_the_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(3000, 100))
    tree = TrainingTree(tmp_path)
    tree.add_file(
        "train",
        "train.csv",
        "\n".join(f"{int(r[0] > 0)}," + ",".join(f"{v:.3f}" for v in r) for r in rows) + "\n",
    )
    tree.hyperparameters({"algorithm": "random_forest", "ntree": 300, "task": "classification"})
    process = _start(tree)
    _wait_for_line(process, "writing the training report")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "the training report was stopped by SIGTERM; the model is saved" in stderr
    assert (tree.model_dir / "model.skops").exists() and (tree.model_dir / "manifest.json").exists()
    assert not (tmp_path / "output/failure").exists()


@pytest.mark.slow
def test_sigterm_during_cross_validation_writes_no_model(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "train.csv", regression_rows(0, 2000))
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 100_000, "kfold": 3})
    process = _start(tree)
    _wait_for_line(process, "3-fold cross-validation")
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert tree.failure is not None and tree.failure.startswith(
        "stopped by SIGTERM during cross-validation, before the final model was fitted"
    ), tree.failure
    assert "its model is incomplete and not scored" in stderr
    assert not any(tree.model_dir.iterdir())
    assert "[1]\tcv-fold" not in stderr  # the cut-short fold printed no score


def test_an_xgboost_report_with_a_categorical_feature_is_written(tmp_path: Path) -> None:
    """Permutation importance shuffles a categorical column as a categorical one (through numpy it
    became text, XGBoost refused it, and the report was missing)."""
    rng = np.random.default_rng(0)
    colours = rng.choice(list("abcde"), 400)
    numbers = rng.normal(size=400)
    tree = TrainingTree(tmp_path)
    tree.add_file(
        "train",
        "train.csv",
        "y,colour,x\n"
        + "\n".join(
            f"{int((c in 'ab') ^ (x > 0))},{c},{x:.3f}" for c, x in zip(colours, numbers, strict=True)
        ),
    )
    tree.channels(train="text/csv")
    tree.hyperparameters({"algorithm": "xgboost", "target": "y", "num_round": 5, "task": "classification"})
    result = tree.train()
    assert result.returncode == 0, tree.explain()
    assert "could not be written" not in result.stderr, result.stderr
    assert "feature-importance.png" in _figures(tmp_path / "output/data/report")


def test_the_report_can_be_turned_off_and_a_bad_setting_is_named(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path / "off")
    tree.add_file("train", "data.csv", regression_rows(3, 200))
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 3})
    result = tree.train(SAGECRAFT_TRAINING_REPORT="false")
    assert result.returncode == 0, tree.explain()
    assert "no training report: SAGECRAFT_TRAINING_REPORT is false" in result.stderr
    assert not (tree.base / "output/data/report").exists()
    assert tree.train(SAGECRAFT_TRAINING_REPORT="sometimes").returncode == 1
    assert "SAGECRAFT_TRAINING_REPORT='sometimes' must be true or false" in (tree.failure or "")
