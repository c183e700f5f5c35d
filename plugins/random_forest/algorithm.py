"""Hook implementations for the random forest."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from sagecraft.categories import code_matrix
from sagecraft.errors import HyperparameterError, UnsupportedOutputError
from sagecraft.hooks import (
    CLASSIFICATION,
    CONTRIBUTIONS,
    LABEL,
    LEAVES,
    PROBABILITIES,
    RAW_MARGIN,
    AlgorithmInfo,
    Dataset,
    FitContext,
    hookimpl,
)
from sagecraft.manifest import Manifest
from sagecraft.metrics import DEFAULT_METRIC, METRICS, check_metric_names, evaluate
from sagecraft.progress import FitProgress

from .across_hosts import gather_rows, host_seed, merge_on_leader, summed_values, tree_share, widen_classes
from .flat_forest import FLAT_MAX_ROWS, FlatForest, Forest
from .hyperparameters import HYPERPARAMETERS, SKLEARN_PARAMETERS
from .persistence import load_forest, save_forest

STAGES = 10  # the forest grows a tenth of its trees at a time


@dataclass(frozen=True)
class ServingForest:
    """A loaded forest: scikit-learn's object for large requests, flat arrays for small ones."""

    forest: Forest
    flat: FlatForest

    @property
    def is_classifier(self) -> bool:
        return isinstance(self.forest, RandomForestClassifier)

    def values(self, matrix: np.ndarray) -> np.ndarray:
        """Class probabilities, or regression predictions, exactly as scikit-learn computes them."""
        if len(matrix) <= FLAT_MAX_ROWS:
            values = self.flat.predict_values(matrix)
            return values if self.is_classifier else values[:, 0]
        return self.forest.predict_proba(matrix) if self.is_classifier else self.forest.predict(matrix)


@hookimpl
def algorithm_info() -> AlgorithmInfo:
    return AlgorithmInfo(
        description="Random forest (scikit-learn RandomForestClassifier / RandomForestRegressor)",
        hyperparameters=HYPERPARAMETERS,
        libraries={"scikit-learn": sklearn.__version__},
        feature_dtype="float32",  # scikit-learn's trees convert to float32 before they split
        several_hosts=True,  # each host grows its share of the trees; the leader merges them
        metrics=list(dict.fromkeys(name for task in METRICS for name in METRICS[task])),
        metric_channels=("train", "oob", "validation"),
    )


def _as_matrix(features: pd.DataFrame) -> np.ndarray:
    """float32 (the trees compare float32 thresholds; converting once here saves a copy inside
    scikit-learn); a categorical feature as its category code, a missing or unseen one as NaN."""
    return code_matrix(features)


def _check_max_features(value: Any, n_features: int) -> None:
    if isinstance(value, int) and value > n_features:
        raise HyperparameterError(
            f"hyperparameter 'max_features' (mtry) = {value} exceeds the number of features, {n_features}"
        )


def _check_criterion(value: str | None, task: str) -> None:
    allowed = (
        ("gini", "entropy", "log_loss")
        if task == CLASSIFICATION
        else ("squared_error", "absolute_error", "friedman_mse", "poisson")
    )
    if value is not None and value not in allowed:
        raise HyperparameterError(
            f"hyperparameter 'criterion' = {value!r} does not fit {task}; choose one of: {', '.join(allowed)}"
        )


@hookimpl
def fit(
    train: Dataset, validation: Dataset | None, hyperparameters: dict[str, Any], context: FitContext
) -> Forest:
    params = {k: v for k, v in hyperparameters.items() if k in SKLEARN_PARAMETERS}
    _check_max_features(params.get("max_features"), train.features.shape[1])
    _check_criterion(params.get("criterion"), context.task)
    if context.task != CLASSIFICATION and "class_weight" in params:
        raise HyperparameterError("hyperparameter 'class_weight' applies to classification only")
    metrics = hyperparameters.get("eval_metric") or [DEFAULT_METRIC[context.task]]
    check_metric_names(context.task, metrics)

    bootstrap = params.get("bootstrap", True)
    oob = hyperparameters.get("oob_score")
    if oob and not bootstrap:
        raise HyperparameterError("oob_score needs bootstrap=true: without it no row is out of bag")
    oob = bootstrap if oob is None else oob
    estimator = RandomForestClassifier if context.task == CLASSIFICATION else RandomForestRegressor
    cluster = context.cluster
    if cluster.size > 1:  # this host's share of the trees, with its own seed
        rows = cluster.allreduce(np.eye(cluster.size, dtype=np.int64)[cluster.rank] * train.n_rows)
        params["n_estimators"] = tree_share(params["n_estimators"], rows.tolist(), cluster.rank)
        params["random_state"] = host_seed(params.get("random_state"), cluster)
    model = estimator(**params, oob_score=oob) if params["n_estimators"] else None
    if model is not None:
        # Column-major, as scikit-learn's trees fit: a view of the training table's float block
        # (combine.py builds one), so the rows are held once, not twice.
        _fit_in_stages(model, code_matrix(train.features, order="F"), train, context)
        if cluster.size > 1 and context.task == CLASSIFICATION:
            widen_classes(model, context.n_classes)
    trees = int(cluster.allreduce(np.array([0 if model is None else len(model.estimators_)]))[0])

    scores = _scores(model, "train", train, metrics, context)
    if oob:
        scores.update(_oob_scores(model, train, metrics, context))
    if validation is not None:
        scores.update(_validation_scores(model, trees, validation, metrics, context))
    context.log_metrics(trees, scores)
    # One value per training row: not worth carrying in the model file.
    for attribute in ("oob_decision_function_", "oob_prediction_"):
        if model is not None and hasattr(model, attribute):
            delattr(model, attribute)
    return merge_on_leader(model, cluster) if cluster.size > 1 else model


def _fit_in_stages(model: Forest, matrix: np.ndarray, train: Dataset, context: FitContext) -> None:
    """Grow the forest a tenth of its trees at a time (scikit-learn's warm start), so that a long
    fit can log its progress and time left, and SIGTERM can stop it with the trees grown so far.
    The out-of-bag estimate is computed once, over all the trees, at the end."""
    total, oob = model.n_estimators, model.oob_score
    stages = sorted({max(1, round(total * k / STAGES)) for k in range(1, STAGES + 1)})
    progress = FitProgress(total, "tree", context.logger)
    model.set_params(warm_start=True, oob_score=False)
    for trees in stages:
        model.set_params(n_estimators=trees)
        model.fit(matrix, train.labels, sample_weight=train.weights)
        if context.stop_requested() and trees < total:
            context.logger.warning("stopping with %d of %d trees", trees, total)
            break
        progress.advance(trees)
    if oob:
        with warnings.catch_warnings():  # "fitting without increasing n_estimators": intended
            warnings.simplefilter("ignore", UserWarning)
            model.set_params(oob_score=True)
            model.fit(matrix, train.labels, sample_weight=train.weights)
    model.set_params(warm_start=False)


def _evaluate(
    name: str,
    metrics: list[str],
    labels: np.ndarray,
    values: np.ndarray,
    context: FitContext,
    combine: bool = True,
) -> dict[str, float]:
    """`<name>-<metric>` of predictions given as class probabilities or predicted values; with
    `combine` the sums behind each metric are added up across the hosts."""
    if context.task == CLASSIFICATION:
        proba, predicted = values, np.argmax(values, axis=1)
    else:
        proba, predicted = None, values.reshape(-1)
    results = evaluate(
        context.task,
        metrics,
        labels,
        predicted,
        proba,
        n_classes=context.n_classes or None,
        combine=context.cluster.allreduce if combine else None,
    )
    return {f"{name}-{metric}": value for metric, value in results.items()}


def _width(context: FitContext) -> int:
    return context.n_classes if context.task == CLASSIFICATION else 1


def _scores(
    model: Forest | None, name: str, data: Dataset, metrics: list[str], context: FitContext
) -> dict[str, float]:
    """The metrics of the forest's predictions for one data set (on several hosts: each host's
    trees on its own rows, the sums added up)."""
    if model is None:  # a host without trees has no rows: it adds nothing to the sums
        values, labels = np.zeros((0, _width(context))), data.labels[:0]
    else:
        matrix = _as_matrix(data.features)
        values = model.predict_proba(matrix) if context.task == CLASSIFICATION else model.predict(matrix)
        labels = data.labels
    return _evaluate(name, metrics, labels, values, context)


def _validation_scores(
    model: Forest | None, trees: int, validation: Dataset, metrics: list[str], context: FitContext
) -> dict[str, float]:
    """The validation metrics of the whole forest. On several hosts every host predicts every
    host's validation rows with its own trees, and the summed values add up to the merged
    forest's, so the metrics are exactly the saved model's without moving a tree."""
    cluster = context.cluster
    if cluster.size == 1:
        return _scores(model, "validation", validation, metrics, context)
    matrix, labels = gather_rows(cluster, _as_matrix(validation.features), validation.labels)
    classifier = context.task == CLASSIFICATION
    summed = cluster.allreduce(summed_values(model, matrix, _width(context), classifier))
    return _evaluate("validation", metrics, labels, summed / max(trees, 1), context, combine=False)


def _oob_scores(
    model: Forest | None, train: Dataset, metrics: list[str], context: FitContext
) -> dict[str, float]:
    """The metrics on out-of-bag predictions: each row predicted by the trees that never saw it
    (rows every tree saw, possible with few trees, are left out). On several hosts: by the trees
    of its own host that never saw it."""
    if model is None:
        values, labels = np.zeros((0, _width(context))), train.labels[:0]
    elif context.task == CLASSIFICATION:
        values = model.oob_decision_function_
        seen = ~np.isnan(values).any(axis=1)
        values, labels = values[seen], train.labels[seen]
    else:
        values = model.oob_prediction_
        seen = ~np.isnan(values)
        values, labels = values[seen], train.labels[seen]
    if not context.cluster.any(len(labels) > 0):
        return {}
    return _evaluate("oob", metrics, labels, values, context)


@hookimpl
def save_model(model: Forest, model_dir: Path) -> None:
    save_forest(model, model_dir)


@hookimpl
def load_model(model_dir: Path, manifest: Manifest | None) -> ServingForest:
    model = load_forest(model_dir)
    if manifest is not None:
        manifest.require_features(model.n_features_in_, model_dir)
    return ServingForest(model, FlatForest.from_forest(model))


@hookimpl
def predict(model: ServingForest, features: pd.DataFrame, output: str) -> np.ndarray:
    if output == LEAVES:
        return model.forest.apply(_as_matrix(features))
    if output in (RAW_MARGIN, CONTRIBUTIONS):
        raise UnsupportedOutputError(
            f"a random forest has no '{output}': ask for predicted_label, probabilities or leaves"
        )
    if output == PROBABILITIES and not model.is_classifier:
        raise UnsupportedOutputError(f"a regression forest cannot predict '{output}'")
    values = model.values(_as_matrix(features))
    if output == LABEL and model.is_classifier:
        # argmax of the probabilities is what scikit-learn's predict() does, minus its label lookup.
        return np.argmax(values, axis=1)
    return values
