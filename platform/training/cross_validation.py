"""k-fold cross-validation of any algorithm, through its own hooks (the `kfold` hyperparameter).

Each fold's model is fitted on the other folds, saved and loaded again (the only way every plugin
can predict), and predicts the rows it never saw. The metrics of each fold and their mean and
standard deviation are printed in SageMaker's metric-line format; `output/data/` gets
`cv-metrics.json` and `oof-predictions.csv`, the out-of-fold prediction of every training row
(with `num_cv_round` repeats, each repeat's block of rows, split its own way). The model the job
saves is then fitted on all the rows, as without `kfold`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold

from ..errors import HyperparameterError, UnsupportedOutputError
from ..metrics import evaluate
from ..model_types import CLASSIFICATION, LABEL, PROBABILITIES, REGRESSION, Dataset, FitContext
from ..plugins import Algorithm

log = logging.getLogger(__name__)

SEED = 0
METRICS = {CLASSIFICATION: ["accuracy", "f1"], REGRESSION: ["rmse", "mae", "r2"]}


def _splitter(task: str, labels: np.ndarray, folds: int, repeat: int = 0) -> KFold | StratifiedKFold:
    """The k-fold split of one repeat (each repeat shuffles the rows its own way)."""
    if folds > len(labels):
        raise HyperparameterError(f"kfold={folds} needs at least {folds} training rows")
    if task == CLASSIFICATION and np.bincount(labels.astype(int)).min() >= folds:
        return StratifiedKFold(folds, shuffle=True, random_state=SEED + repeat)
    return KFold(folds, shuffle=True, random_state=SEED + repeat)


def _subset(data: Dataset, rows: np.ndarray) -> Dataset:
    return Dataset(
        data.features.iloc[rows], data.labels[rows], None if data.weights is None else data.weights[rows]
    )


def _probabilities(algorithm: Algorithm, model: object, features: pd.DataFrame) -> np.ndarray | None:
    try:
        return np.asarray(algorithm.predict(model, features, PROBABILITIES))
    except UnsupportedOutputError:
        return None


def cross_validate(
    algorithm: Algorithm,
    train: Dataset,
    validation: Dataset | None,
    hyperparameters: dict,
    context: FitContext,
    folds: int,
    output_dir: Path,
    repeats: int = 1,
) -> dict[str, float]:
    """Fit and score `folds` models, `repeats` times over (each repeat its own shuffle); write
    the out-of-fold predictions (one block of rows per repeat). Returns the mean metrics."""
    task = context.task
    splits = [
        (repeat, fit_rows, held_rows)
        for repeat in range(repeats)
        for fit_rows, held_rows in _splitter(task, train.labels, folds, repeat).split(
            train.features, train.labels
        )
    ]
    # Fold fits print nothing of their own: the log's metric lines stay the job's.
    quiet = dataclasses.replace(context, log_metrics=lambda iteration, metrics: None, checkpoint_dir=None)
    rows = train.n_rows * repeats
    predicted = np.empty(rows, dtype=object if task == CLASSIFICATION else float)
    probabilities: np.ndarray | None = None
    fold_of = np.zeros(rows, dtype=int)
    repeat_of = np.repeat(np.arange(repeats), train.n_rows)
    scores: list[dict[str, float]] = []
    for fold, (repeat, fit_rows, held_rows) in enumerate(splits):
        if context.stop_requested():
            log.warning("stop requested: cross-validation ends after %d folds", fold)
            break
        model = algorithm.fit(_subset(train, fit_rows), validation, hyperparameters, quiet)
        if context.stop_requested():  # the fit was cut short: its scores would mislead
            log.warning("stop requested during fold %d: its model is incomplete and not scored", fold)
            break
        with tempfile.TemporaryDirectory(prefix="sagecraft-fold-") as folder:
            algorithm.save_model(model, Path(folder))
            loaded = algorithm.load_model(Path(folder))
        held = train.features.iloc[held_rows]
        labels = np.asarray(algorithm.predict(loaded, held, LABEL))
        proba = _probabilities(algorithm, loaded, held) if task == CLASSIFICATION else None
        names = METRICS[task] + (["logloss"] if proba is not None else [])
        fold_scores = evaluate(task, names, train.labels[held_rows], labels, proba)
        context.log_metrics(fold, {f"cv-fold-{name}": value for name, value in fold_scores.items()})
        scores.append(fold_scores)
        out_rows = held_rows + repeat * train.n_rows  # this repeat's block of the output
        predicted[out_rows] = labels
        fold_of[out_rows] = fold - repeat * folds
        if proba is not None:
            if probabilities is None:
                probabilities = np.full((rows, proba.shape[1]), np.nan)
            probabilities[out_rows] = proba
    if not scores:
        return {}
    mean = {name: float(np.mean([s[name] for s in scores])) for name in scores[0]}
    std = {name: float(np.std([s[name] for s in scores])) for name in scores[0]}
    context.log_metrics(
        len(scores), {**{f"cv-{n}": v for n, v in mean.items()}, **{f"cv-{n}-std": v for n, v in std.items()}}
    )
    _write(output_dir, context, train, predicted, probabilities, fold_of, repeat_of, scores, mean, std)
    return mean


def _write(
    output_dir: Path,
    context: FitContext,
    train: Dataset,
    predicted: np.ndarray,
    probabilities: np.ndarray | None,
    fold_of: np.ndarray,
    repeat_of: np.ndarray,
    scores: list[dict[str, float]],
    mean: dict[str, float],
    std: dict[str, float],
) -> None:
    repeats = int(repeat_of.max()) + 1
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "cv-metrics.json").write_text(
        json.dumps({"folds": scores, "mean": mean, "std": std, "repeats": repeats}, indent=2) + "\n"
    )
    classes = list(context.classes)
    table: dict[str, Any] = {"row": np.tile(np.arange(train.n_rows), repeats), "fold": fold_of}
    if repeats > 1:
        table["repeat"] = repeat_of
    labels = np.tile(train.labels, repeats)
    if context.task == CLASSIFICATION:
        table["label"] = [classes[int(c)] for c in labels]
        table["predicted"] = [classes[int(c)] if c is not None else None for c in predicted]
        if probabilities is not None:
            for index, name in enumerate(classes):
                table[f"probability_{name}"] = probabilities[:, index]
    else:
        table["label"] = labels
        table["predicted"] = predicted
    pd.DataFrame(table).to_csv(output_dir / "oof-predictions.csv", index=False)
    log.info("cross-validation: %s; out-of-fold predictions in %s", mean, output_dir / "oof-predictions.csv")
