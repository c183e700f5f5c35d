"""The random forest's hyperparameters: scikit-learn's names, with R randomForest's as aliases."""

from __future__ import annotations

from typing import Any

from sagecraft.hooks import Hyperparameter
from sagecraft.hyperparameters import string_list


def max_features(value: Any) -> int | float | str | None:
    """R's mtry (a count), a fraction of the features in (0, 1], or sqrt, log2 or all."""
    if isinstance(value, str) and value.strip().lower() in {"sqrt", "log2"}:
        return value.strip().lower()
    if isinstance(value, str) and value.strip().lower() in {"all", "none"}:
        return None
    number = float(value)
    if number.is_integer() and number >= 1:
        return int(number)
    if 0 < number < 1:
        return number
    raise ValueError("use a count of features >= 1, a fraction in (0, 1), sqrt, log2 or all")


max_features.type_name = "count, fraction, sqrt, log2 or all"  # type: ignore[attr-defined]

HYPERPARAMETERS = (
    Hyperparameter("n_estimators", int, "Number of trees.", default=100, minimum=1, aliases=("ntree",)),
    Hyperparameter(
        "max_features",
        max_features,
        "Features tried at each split: a count (R's mtry), a fraction, sqrt, log2 or "
        "all. Default: sqrt for classification, all for regression.",
        aliases=("mtry",),
    ),
    Hyperparameter(
        "min_samples_leaf", int, "Smallest number of rows in a leaf.", minimum=1, aliases=("nodesize",)
    ),
    Hyperparameter(
        "max_leaf_nodes",
        int,
        "Most leaves per tree (unlimited when absent).",
        minimum=2,
        aliases=("maxnodes",),
    ),
    Hyperparameter("max_depth", int, "Deepest a tree may grow (unlimited when absent).", minimum=1),
    Hyperparameter("min_samples_split", int, "Fewest rows a node needs to be split.", minimum=2),
    Hyperparameter(
        "criterion",
        str,
        "Split quality: gini, entropy or log_loss (classification); "
        "squared_error, absolute_error, friedman_mse or poisson (regression).",
    ),
    Hyperparameter("bootstrap", bool, "Draw each tree's rows with replacement.", aliases=("replace",)),
    Hyperparameter(
        "max_samples",
        float,
        "Fraction of rows drawn for each tree when bootstrapping.",
        minimum=0,
        exclusive_minimum=True,
        maximum=1,
    ),
    Hyperparameter(
        "class_weight",
        str,
        "Weight classes by inverse frequency (classification).",
        choices=("balanced", "balanced_subsample"),
    ),
    Hyperparameter("min_impurity_decrease", float, "Split only when impurity falls this much.", minimum=0),
    Hyperparameter("ccp_alpha", float, "Cost-complexity pruning strength.", minimum=0),
    Hyperparameter("random_state", int, "Seed for reproducible forests.", minimum=0, aliases=("seed",)),
    Hyperparameter("n_jobs", int, "Threads used to fit (-1: every core).", default=-1, minimum=-1),
    Hyperparameter(
        "eval_metric",
        string_list,
        "Metrics logged for train, out-of-bag and validation rows: accuracy, error, "
        "logloss, f1 (classification); rmse, mse, mae, r2 (regression).",
    ),
    Hyperparameter(
        "oob_score",
        bool,
        "Also log the metrics on each row's out-of-bag trees (those "
        "that never saw it), as randomForest prints its OOB error. Default: when "
        "bootstrapping.",
    ),
)

# The declared names that go to the scikit-learn estimator as they are.
SKLEARN_PARAMETERS = {h.name for h in HYPERPARAMETERS} - {"eval_metric", "oob_score"}
