"""Evaluation metrics, and the log line SageMaker's metric regexes read.

The line keeps the format of SageMaker's built-in XGBoost, `[12]<TAB>train-rmse:0.43<TAB>validation-rmse:0.51`
(CloudWatch shows the tab as `#011`), so users' existing `MetricDefinitions` keep working.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import HyperparameterError
from .model_types import CLASSIFICATION, REGRESSION

__all__ = [
    "DEFAULT_METRIC",
    "HIGHER_IS_BETTER",
    "METRICS",
    "Metric",
    "Statistics",
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


# Every metric is computed from sums over the rows (a confusion matrix, squared errors): sums
# that the hosts of a multi-host job add up (`allreduce`) so that each metric is exact for the
# whole data set, not an average of the hosts' values. One host adds nothing to them.
Combine = Callable[[np.ndarray], np.ndarray]


def _local(values: np.ndarray) -> np.ndarray:
    return values


@dataclass(frozen=True)
class Statistics:
    """What the metrics of one data set are computed from.

    Classification: `confusion[true, predicted]` row counts and the summed log loss (None
    without probabilities). Regression: the row count, the summed squared and absolute errors,
    and the summed squared deviation of the labels from their mean (for r2)."""

    rows: float
    confusion: np.ndarray | None = None
    log_loss: float | None = None
    squared_error: float = 0.0
    absolute_error: float = 0.0
    label_deviation: float = 0.0

    @classmethod
    def of_classification(
        cls,
        labels: np.ndarray,
        predicted: np.ndarray,
        probabilities: np.ndarray | None,
        n_classes: int | None,
        combine: Combine = _local,
    ) -> Statistics:
        truth, guess = labels.astype(np.int64), predicted.astype(np.int64)
        k = n_classes or int(max(truth.max(initial=0), guess.max(initial=0))) + 1
        confusion = np.bincount(truth * k + guess, minlength=k * k).astype(np.float64)
        log_loss = np.nan
        if probabilities is not None:
            picked = np.clip(probabilities[np.arange(len(truth)), truth], 1e-15, 1.0)
            log_loss = float(-np.sum(np.log(picked)))
        sums = combine(np.concatenate([confusion, [log_loss]]))
        return cls(
            rows=float(sums[:-1].sum()),
            confusion=sums[:-1].reshape(k, k),
            log_loss=None if np.isnan(sums[-1]) else float(sums[-1]),
        )

    @classmethod
    def of_regression(
        cls, labels: np.ndarray, predicted: np.ndarray, combine: Combine = _local
    ) -> Statistics:
        y, errors = labels.astype(np.float64), labels - predicted
        rows, label_sum, squared, absolute = combine(
            np.array([len(y), np.sum(y), np.sum(errors**2), np.sum(np.abs(errors))], dtype=np.float64)
        )
        mean = label_sum / rows if rows else 0.0
        (deviation,) = combine(np.array([np.sum((y - mean) ** 2)], dtype=np.float64))
        return cls(
            rows=float(rows),
            squared_error=float(squared),
            absolute_error=float(absolute),
            label_deviation=float(deviation),
        )

    def per_class(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The classes among the labels or the predictions, and each one's true positives,
        false positives and false negatives."""
        assert self.confusion is not None
        truth, guessed = self.confusion.sum(axis=1), self.confusion.sum(axis=0)
        classes = np.flatnonzero(truth + guessed > 0)
        tp = np.diag(self.confusion)[classes]
        return classes, tp, guessed[classes] - tp, truth[classes] - tp


# Each metric takes the Statistics of one data set.
Metric = Callable[[Statistics], float]


def _share(top: float, bottom: float) -> float:
    return float(top / bottom) if bottom else 0.0


def _accuracy(s: Statistics) -> float:
    assert s.confusion is not None
    return _share(np.trace(s.confusion), s.rows)


def _error(s: Statistics) -> float:
    return 1.0 - _accuracy(s)


def _logloss(s: Statistics) -> float:
    if s.log_loss is None:
        raise HyperparameterError("metric 'logloss' needs class probabilities")
    return _share(s.log_loss, s.rows)


def _f1(s: Statistics) -> float:
    """Binary F1 for two classes, macro-averaged F1 for more."""
    classes, tp, fp, fn = s.per_class()
    if len(classes) <= 2:
        tp, fp, fn = tp[-1:], fp[-1:], fn[-1:]
    scores = [0.0 if t == 0 else 2 * t / (2 * t + p + n) for t, p, n in zip(tp, fp, fn, strict=True)]
    return float(np.mean(scores)) if scores else 0.0


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), 0.0)


def _positive(s: Statistics) -> tuple[float, float, float]:
    """Binary counts for the positive class, code 1 (the larger of two classes)."""
    assert s.confusion is not None
    if len(s.confusion) < 2:
        return 0.0, 0.0, 0.0
    tp = float(s.confusion[1, 1])
    return tp, float(s.confusion[:, 1].sum()) - tp, float(s.confusion[1].sum()) - tp


def _precision(s: Statistics) -> float:
    tp, fp, _ = _positive(s)
    return _share(tp, tp + fp)


def _recall(s: Statistics) -> float:
    tp, _, fn = _positive(s)
    return _share(tp, tp + fn)


def _f1_binary(s: Statistics) -> float:
    tp, fp, fn = _positive(s)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _macro(kind: str) -> Metric:
    def metric(s: Statistics) -> float:
        _, tp, fp, fn = s.per_class()
        if kind == "precision":
            ratios = _ratio(tp, tp + fp)
        elif kind == "recall":
            ratios = _ratio(tp, tp + fn)
        else:
            ratios = _ratio(2 * tp, 2 * tp + fp + fn)
        return float(np.mean(ratios)) if len(ratios) else 0.0

    return metric


def _micro(s: Statistics) -> float:
    """Micro-averaged precision and recall, which for single-label classes equal accuracy."""
    _, tp, fp, _ = s.per_class()
    return _share(tp.sum(), tp.sum() + fp.sum())


def _balanced_accuracy(s: Statistics) -> float:
    """The mean of each true class's recall."""
    assert s.confusion is not None
    truth = s.confusion.sum(axis=1)
    present = np.flatnonzero(truth > 0)
    return float(np.mean(np.diag(s.confusion)[present] / truth[present])) if len(present) else 0.0


def _mse(s: Statistics) -> float:
    return _share(s.squared_error, s.rows)


def _rmse(s: Statistics) -> float:
    return float(np.sqrt(_mse(s)))


def _mae(s: Statistics) -> float:
    return _share(s.absolute_error, s.rows)


def _r2(s: Statistics) -> float:
    return float(1.0 - s.squared_error / s.label_deviation) if s.label_deviation > 0 else 0.0


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
    *,
    n_classes: int | None = None,
    combine: Combine | None = None,
) -> dict[str, float]:
    """The named metrics of one data set, in the order given.

    On several hosts pass `combine=context.cluster.allreduce` and `n_classes`: every host then
    gets the metrics of all the hosts' rows together (each host must call with the same names)."""
    check_metric_names(task, names)
    statistics = (
        Statistics.of_classification(labels, predictions, probabilities, n_classes, combine or _local)
        if task == CLASSIFICATION
        else Statistics.of_regression(labels, predictions, combine or _local)
    )
    return {name: METRICS[task][name](statistics) for name in names}


# The value, and only it: in CloudWatch the next metric follows after "#011", not whitespace.
NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def metric_definitions(metrics: Sequence[str], channels: Sequence[str]) -> list[dict[str, str]]:
    """SageMaker's `MetricDefinitions` for metric lines printed by `print_metrics`: one per
    channel and metric, named as tuning jobs name them ("validation:rmse"), with the regex that
    reads the value from the log (where CloudWatch shows the tab as `#011`)."""
    return [
        {
            "Name": f"{channel}:{metric}",
            "Regex": rf".*\[[0-9]+\].*#011{re.escape(channel)}-{re.escape(metric)}:{NUMBER}",
        }
        for channel in channels
        for metric in metrics
    ]
