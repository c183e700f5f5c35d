"""A sagecraft algorithm plugin: logistic regression (classification) or ridge (regression).

Train with the hyperparameter `algorithm=linear`. The model is saved as plain JSON (coefficients,
intercepts and the column means used for missing values), so loading it can never run code.

Logistic regression is fitted in rounds of ROUND_ITERATIONS solver iterations (warm-started), to
show what an iterative plugin does: a metric line per round, an early end when SageMaker stops the
job (SIGTERM), and checkpoints through the core's `CheckpointFolder`, resumed by a restarted job.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge

from sagecraft.categories import code_matrix
from sagecraft.checkpoints import CheckpointFolder
from sagecraft.errors import ModelLoadError, UnsupportedOutputError
from sagecraft.files import read_model_file
from sagecraft.hooks import (
    CLASSIFICATION,
    LABEL,
    PROBABILITIES,
    AlgorithmInfo,
    Dataset,
    FitContext,
    Hyperparameter,
    hookimpl,
)
from sagecraft.manifest import Manifest

MODEL_FILE = "linear-model.json"
ROUND_ITERATIONS = 10
METRIC = {CLASSIFICATION: "accuracy", "regression": "r2"}


@hookimpl
def algorithm_info() -> AlgorithmInfo:
    return AlgorithmInfo(
        description="Linear models: logistic regression or ridge regression (scikit-learn)",
        hyperparameters=[
            Hyperparameter(
                "C",
                float,
                "Inverse regularisation strength (classification).",
                default=1.0,
                minimum=0,
                exclusive_minimum=True,
            ),
            Hyperparameter("alpha", float, "Regularisation strength (regression).", default=1.0, minimum=0),
            Hyperparameter("max_iter", int, "Most solver iterations.", default=1000, minimum=1),
        ],
        libraries={"scikit-learn": sklearn.__version__},
        api_version=6,  # AlgorithmInfo.metrics and checkpoints
        metrics=list(METRIC.values()),
        checkpoints=True,
    )


def _matrix(features: pd.DataFrame, means: np.ndarray) -> np.ndarray:
    # A categorical feature as its category's code (ordinal: crude for a linear model, but
    # defined), then a missing value, or an unseen category, as the training mean.
    matrix = code_matrix(features, np.float64)
    return np.where(np.isnan(matrix), means, matrix)


@hookimpl
def fit(train: Dataset, validation: Dataset | None, hyperparameters: dict, context: FitContext) -> dict:
    means = np.nan_to_num(np.nanmean(code_matrix(train.features, np.float64), axis=0))
    matrix = _matrix(train.features, means)
    channels = [("train", matrix, train)]
    if validation is not None:
        channels.append(("validation", _matrix(validation.features, means), validation))

    def log_round(number: int, model: LogisticRegression | Ridge) -> None:
        metric = METRIC[context.task]
        context.log_metrics(number, {f"{name}-{metric}": model.score(m, d.labels) for name, m, d in channels})

    if context.task == CLASSIFICATION:
        model = _fit_in_rounds(matrix, train, hyperparameters, context, log_round)
    else:
        model = Ridge(alpha=hyperparameters["alpha"], max_iter=hyperparameters["max_iter"])
        model.fit(matrix, train.labels, sample_weight=train.weights)
        log_round(0, model)
    return {
        "task": context.task,
        "coef": np.atleast_2d(model.coef_).tolist(),
        "intercept": np.atleast_1d(model.intercept_).tolist(),
        "means": means.tolist(),
    }


def _fit_in_rounds(
    matrix: np.ndarray,
    train: Dataset,
    hyperparameters: dict,
    context: FitContext,
    log_round: Callable[[int, LogisticRegression | Ridge], None],
) -> LogisticRegression:
    """Logistic regression, ROUND_ITERATIONS solver iterations a round, warm-started: a metric
    line and a checkpoint each round; it ends when the solver converges, after max_iter
    iterations, or at the round SIGTERM arrives in (`context.stop_requested()`)."""
    model = LogisticRegression(C=hyperparameters["C"], max_iter=ROUND_ITERATIONS, warm_start=True)
    folder = CheckpointFolder(
        context.checkpoint_dir, "linear-checkpoint", ".json", context.cluster, unit="rounds"
    )
    shape = (1 if context.n_classes == 2 else context.n_classes, matrix.shape[1])
    start = 0
    resumed = folder.resume(lambda data, where, step: _checkpoint(data, where, shape), context.logger)
    if resumed is not None:
        start, (model.coef_, model.intercept_) = resumed
    rounds = -(-hyperparameters["max_iter"] // ROUND_ITERATIONS)
    for number in range(start, rounds):
        with warnings.catch_warnings():  # a round that stops short of convergence is the point
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(matrix, train.labels, sample_weight=train.weights)
        log_round(number, model)
        state = {"coef": model.coef_.tolist(), "intercept": model.intercept_.tolist()}
        folder.write(number + 1, json.dumps(state).encode())
        if model.n_iter_.max() < ROUND_ITERATIONS or context.stop_requested():
            break
    return model


def _checkpoint(data: bytes, where: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A checkpoint's coefficients and intercepts, checked against this job's data (a checkpoint
    comes from a bucket: it is as untrusted as a model file)."""
    try:
        state = json.loads(data)
        coef = np.array(state["coef"], np.float64)
        intercept = np.array(state["intercept"], np.float64)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{where} is not a linear checkpoint: {exc}") from None
    if coef.shape != shape or intercept.shape != shape[:1] or not np.isfinite(coef).all():
        raise ModelLoadError(f"{where} does not fit this job's data (coefficients of shape {coef.shape})")
    return coef, intercept


@hookimpl
def save_model(model: dict, model_dir: Path) -> None:
    (model_dir / MODEL_FILE).write_text(json.dumps(model))


@hookimpl
def load_model(model_dir: Path, manifest: Manifest | None) -> dict:
    path = model_dir / MODEL_FILE
    try:  # read_model_file: a regular file of bounded size, whatever the folder holds
        saved = json.loads(read_model_file(path))
        model = {
            "task": saved["task"],
            "coef": np.array(saved["coef"], np.float64),
            "intercept": np.array(saved["intercept"], np.float64),
            "means": np.array(saved["means"], np.float64),
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path} is not a linear model: {exc}") from None
    coef = model["coef"]
    # The file is untrusted: arrays whose shapes disagree would fail every request.
    if (
        coef.ndim != 2
        or model["intercept"].shape != coef.shape[:1]
        or model["means"].shape != coef.shape[1:]
        or not all(np.isfinite(model[k]).all() for k in ("coef", "intercept", "means"))
    ):
        raise ModelLoadError(f"{path}: coefficients, intercepts and means do not fit together")
    if manifest is not None:
        manifest.require_features(coef.shape[1], model_dir)
    return model


@hookimpl
def predict(model: dict, features: pd.DataFrame, output: str) -> np.ndarray:
    scores = _matrix(features, model["means"]) @ model["coef"].T + model["intercept"]
    if model["task"] != CLASSIFICATION:
        if output != LABEL:
            raise UnsupportedOutputError(f"a regression model cannot predict '{output}'")
        return scores[:, 0]
    if scores.shape[1] == 1:  # binary: one score for the second class
        positive = 1 / (1 + np.exp(-scores[:, 0]))
        probabilities = np.column_stack([1 - positive, positive])
    else:
        exp = np.exp(scores - scores.max(axis=1, keepdims=True))
        probabilities = exp / exp.sum(axis=1, keepdims=True)
    if output == PROBABILITIES:
        return probabilities
    return np.argmax(probabilities, axis=1)
