"""Evaluation metrics, and the log line SageMaker's metric regexes read.

The line keeps the format of SageMaker's built-in XGBoost, `[12]<TAB>train-rmse:0.43<TAB>validation-rmse:0.51`
(CloudWatch shows the tab as `#011`), so users' existing `MetricDefinitions` keep working.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

import numpy as np

from .errors import HyperparameterError
from .model_types import CLASSIFICATION, REGRESSION

__all__ = [
    "DEFAULT_METRIC",
    "Metric",
    "check_metric_names",
    "evaluate",
]


def format_metric_line(iteration: int, metrics: Mapping[str, float]) -> str:
    fields = "\t".join(f"{name}:{value:.6g}" for name, value in metrics.items())
    return f"[{iteration}]\t{fields}"


def print_metrics(iteration: int, metrics: Mapping[str, float]) -> None:
    """Print one metric line to stdout, flushed at once so SageMaker sees it as it happens."""
    sys.stdout.write(format_metric_line(iteration, metrics) + "\n")
    sys.stdout.flush()


# Each metric takes (labels, predicted labels or values, class probabilities or None).
Metric = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], float]


def _accuracy(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> float:
    return float(np.mean(y == pred))


def _error(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> float:
    return 1.0 - _accuracy(y, pred, proba)


def _logloss(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> float:
    if proba is None:
        raise HyperparameterError("metric 'logloss' needs class probabilities")
    eps = 1e-15
    picked = np.clip(proba[np.arange(len(y)), y.astype(int)], eps, 1.0)
    return float(-np.mean(np.log(picked)))


def _f1(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> float:
    """Binary F1 for two classes, macro-averaged F1 for more."""
    classes = np.unique(np.concatenate([y, pred]))
    positive = classes[-1:] if len(classes) <= 2 else classes
    scores = []
    for c in positive:
        tp = np.sum((pred == c) & (y == c))
        fp = np.sum((pred == c) & (y != c))
        fn = np.sum((pred != c) & (y == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def _mse(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> float:
    return float(np.mean((y - pred) ** 2))


def _rmse(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> float:
    return float(np.sqrt(_mse(y, pred, proba)))


def _mae(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> float:
    return float(np.mean(np.abs(y - pred)))


def _r2(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> float:
    total = np.sum((y - np.mean(y)) ** 2)
    return float(1.0 - np.sum((y - pred) ** 2) / total) if total > 0 else 0.0


METRICS: dict[str, dict[str, Metric]] = {
    CLASSIFICATION: {
        "accuracy": _accuracy,
        "error": _error,
        "merror": _error,
        "logloss": _logloss,
        "mlogloss": _logloss,
        "f1": _f1,
    },
    REGRESSION: {"rmse": _rmse, "mse": _mse, "mae": _mae, "r2": _r2},
}
DEFAULT_METRIC = {CLASSIFICATION: "accuracy", REGRESSION: "rmse"}


def check_metric_names(task: str, names: list[str]) -> None:
    known = METRICS[task]
    for name in names:
        if name not in known:
            raise HyperparameterError(
                f"eval_metric '{name}' is not available for {task}; choose from: {', '.join(known)}"
            )


def evaluate(
    task: str,
    names: list[str],
    labels: np.ndarray,
    predictions: np.ndarray,
    probabilities: np.ndarray | None = None,
) -> dict[str, float]:
    """The named metrics of one data set, in the order given."""
    check_metric_names(task, names)
    return {name: METRICS[task][name](labels, predictions, probabilities) for name in names}
