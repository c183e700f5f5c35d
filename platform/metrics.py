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
    "HIGHER_IS_BETTER",
    "METRICS",
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


def _counts(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The classes seen, and each one's true positives, false positives and false negatives."""
    classes = np.unique(np.concatenate([y, pred]))
    tp = np.array([np.sum((pred == c) & (y == c)) for c in classes], dtype=float)
    fp = np.array([np.sum((pred == c) & (y != c)) for c in classes], dtype=float)
    fn = np.array([np.sum((pred != c) & (y == c)) for c in classes], dtype=float)
    return classes, tp, fp, fn


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), 0.0)


def _positive(y: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """Binary counts for the positive class, code 1 (the larger of two classes)."""
    tp = float(np.sum((pred == 1) & (y == 1)))
    return tp, float(np.sum((pred == 1) & (y != 1))), float(np.sum((pred != 1) & (y == 1)))


def _precision(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> float:
    tp, fp, _ = _positive(y, pred)
    return tp / (tp + fp) if tp + fp else 0.0


def _recall(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> float:
    tp, _, fn = _positive(y, pred)
    return tp / (tp + fn) if tp + fn else 0.0


def _f1_binary(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> float:
    tp, fp, fn = _positive(y, pred)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _macro(kind: str) -> Metric:
    def metric(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> float:
        _, tp, fp, fn = _counts(y, pred)
        if kind == "precision":
            return float(np.mean(_ratio(tp, tp + fp)))
        if kind == "recall":
            return float(np.mean(_ratio(tp, tp + fn)))
        return float(np.mean(_ratio(2 * tp, 2 * tp + fp + fn)))

    return metric


def _micro(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> float:
    """Micro-averaged precision and recall, which for single-label classes equal accuracy."""
    _, tp, fp, _ = _counts(y, pred)
    return float(tp.sum() / (tp.sum() + fp.sum())) if tp.sum() + fp.sum() else 0.0


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> float:
    """The mean of each true class's recall."""
    classes = np.unique(y)
    return float(np.mean([np.mean(pred[y == c] == c) for c in classes])) if len(classes) else 0.0


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
        # The names SageMaker's built-in XGBoost accepts. Binary ones take class code 1 as the
        # positive class.
        "balanced_accuracy": _balanced_accuracy,
        "precision": _precision,
        "recall": _recall,
        "f1_binary": _f1_binary,
        "f1_macro": _macro("f1"),
        "precision_macro": _macro("precision"),
        "recall_macro": _macro("recall"),
        "precision_micro": _micro,
        "recall_micro": _micro,
    },
    REGRESSION: {"rmse": _rmse, "mse": _mse, "mae": _mae, "r2": _r2},
}
DEFAULT_METRIC = {CLASSIFICATION: "accuracy", REGRESSION: "rmse"}
# Metrics that improve upwards (early stopping and tuning must maximise them).
HIGHER_IS_BETTER = frozenset(
    {
        "accuracy", "f1", "r2", "balanced_accuracy", "precision", "recall", "f1_binary", "f1_macro",
        "precision_macro", "recall_macro", "precision_micro", "recall_micro",
    }
)  # fmt: skip


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
