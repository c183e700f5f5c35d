"""XGBoost's hyperparameters under the names SageMaker's built-in XGBoost algorithm uses."""

from __future__ import annotations

import json
from typing import Any

from sagecraft.hooks import Hyperparameter
from sagecraft.hyperparameters import string_list


def constraints(value: Any) -> str | list[Any]:
    """A constraint as XGBoost takes it: a string as written ("(1,0,-1)", "[[0,1],[2,3]]"), or
    the list a JSON value decodes to ("[[0,1]]" arrives as a list from a generic Estimator): as
    its JSON text when it holds column numbers, as the list when it holds feature names (which
    XGBoost maps to their columns: [["f0","f1"]])."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise ValueError("expected a constraint such as (1,0,-1) or [[0,1],[2,3]]")
    flat = [v for item in value for v in (item if isinstance(item, list) else [item])]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        return json.dumps(value)
    if all(isinstance(v, str) for v in flat):
        return value
    raise ValueError("expected column numbers or feature names, not a mix")


constraints.type_name = "str"  # type: ignore[attr-defined]

_UNIT: dict[str, Any] = {"minimum": 0, "maximum": 1}
FLOAT32_MAX = 3.4028234663852886e38
_FRACTION: dict[str, Any] = {"minimum": 0, "exclusive_minimum": True, "maximum": 1}

HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter(
        "num_round",
        int,
        "Number of boosting rounds.",
        default=100,
        minimum=1,
        aliases=("num_boost_round", "n_estimators"),
    ),
    Hyperparameter(
        "objective",
        str,
        "Learning objective, e.g. reg:squarederror, binary:logistic, "
        "multi:softprob. Default: from the task and the number of classes.",
    ),
    Hyperparameter("eta", float, "Step size shrinkage.", aliases=("learning_rate",), **_UNIT),
    Hyperparameter("max_depth", int, "Deepest a tree may grow (0: no limit with lossguide).", minimum=0),
    Hyperparameter("min_child_weight", float, "Least hessian weight in a child.", minimum=0),
    Hyperparameter(
        "gamma", float, "Least loss reduction to split further.", minimum=0, aliases=("min_split_loss",)
    ),
    Hyperparameter("max_delta_step", float, "Cap on each leaf's output step.", minimum=0),
    Hyperparameter("subsample", float, "Fraction of rows sampled per tree.", **_FRACTION),
    Hyperparameter("sampling_method", str, "How rows are sampled.", choices=("uniform", "gradient_based")),
    Hyperparameter("colsample_bytree", float, "Fraction of columns per tree.", **_FRACTION),
    Hyperparameter("colsample_bylevel", float, "Fraction of columns per level.", **_FRACTION),
    Hyperparameter("colsample_bynode", float, "Fraction of columns per split.", **_FRACTION),
    Hyperparameter("lambda", float, "L2 regularisation of weights.", minimum=0, aliases=("reg_lambda",)),
    Hyperparameter("alpha", float, "L1 regularisation of weights.", minimum=0, aliases=("reg_alpha",)),
    Hyperparameter(
        "tree_method",
        str,
        "Tree construction algorithm; gpu_hist (SageMaker's built-in spelling) is hist on the GPU.",
        choices=("auto", "exact", "approx", "hist", "gpu_hist"),
    ),
    Hyperparameter("scale_pos_weight", float, "Weight of positive examples (binary).", minimum=0),
    Hyperparameter("grow_policy", str, "How new nodes are added.", choices=("depthwise", "lossguide")),
    Hyperparameter("max_leaves", int, "Most leaves per tree (0: no limit).", minimum=0),
    Hyperparameter("max_bin", int, "Histogram bins per feature (hist, approx).", minimum=2),
    Hyperparameter("num_parallel_tree", int, "Trees built per round (boosted forests).", minimum=1),
    Hyperparameter("booster", str, "Booster kind.", choices=("gbtree", "gblinear", "dart")),
    # XGBoost keeps it in float32: a larger value trains, then saves a model that cannot load.
    Hyperparameter(
        "base_score", float, "Initial prediction of every row.", minimum=-FLOAT32_MAX, maximum=FLOAT32_MAX
    ),
    Hyperparameter("tweedie_variance_power", float, "Variance power of reg:tweedie.", minimum=1, maximum=2),
    Hyperparameter("max_cat_to_onehot", int, "Categories below which splits are one-hot.", minimum=1),
    Hyperparameter("monotone_constraints", constraints, "Monotonicity per feature, e.g. (1,0,-1)."),
    Hyperparameter("interaction_constraints", constraints, "Features allowed to interact, e.g. [[0,1]]."),
    Hyperparameter("rate_drop", float, "Dropout rate (dart).", **_UNIT),
    Hyperparameter("skip_drop", float, "Probability of skipping dropout (dart).", **_UNIT),
    Hyperparameter("one_drop", bool, "Always drop at least one tree (dart)."),
    Hyperparameter("sample_type", str, "Dropout sampling (dart).", choices=("uniform", "weighted")),
    Hyperparameter("normalize_type", str, "Dropout normalisation (dart).", choices=("tree", "forest")),
    Hyperparameter("seed", int, "Random seed.", aliases=("random_state",)),
    Hyperparameter("nthread", int, "Threads used to fit (default: every core).", minimum=1),
    Hyperparameter("verbosity", int, "XGBoost's own log level.", minimum=0, maximum=3),
    Hyperparameter("num_class", int, "Number of classes (set automatically from the labels).", minimum=2),
    Hyperparameter(
        "eval_metric",
        string_list,
        "Metrics evaluated each round: XGBoost's own (rmse, mae, logloss, error, "
        "mlogloss, merror, auc, ...) and, as in SageMaker's built-in XGBoost, accuracy, "
        "balanced_accuracy, f1, f1_binary, f1_macro, precision, precision_macro, "
        "precision_micro, recall, recall_macro, recall_micro, mse, r2; early stopping "
        "watches the last one.",
    ),
    Hyperparameter(
        "save_model_on_termination",
        bool,
        "On SIGTERM (a stopped job): true saves the model trained so far; false writes none.",
        default=True,
    ),
    Hyperparameter(
        "checkpoint_rounds",
        int,
        "With a checkpoint folder (the job's CheckpointConfig): "
        "write a checkpoint every this many rounds; a restarted job resumes from the "
        "newest.",
        default=10,
        minimum=1,
    ),
    Hyperparameter(
        "external_memory",
        str,
        "true: train from external memory (ExtMemQuantileDMatrix, its pages cached on the "
        "scratch disk); false: the binned matrix in memory; auto: external when the binned "
        "matrix would pass the job's memory for data.",
        default="auto",
        choices=("auto", "true", "false"),
    ),
    Hyperparameter(
        "early_stopping_rounds",
        int,
        "Stop when the validation metric has not improved for this many rounds "
        "(needs the validation channel).",
        minimum=1,
    ),
)

# Names SageMaker's built-in XGBoost accepts that XGBoost 3 no longer uses: accepted, so that a
# job written for it runs, with a warning that each has no effect.
LEGACY = ("predictor", "sketch_eps", "dsplit", "lambda_bias", "deterministic_histogram", "prob_buffer_row",
          "use_dask_gpu_training")  # fmt: skip
HYPERPARAMETERS += tuple(
    Hyperparameter(name, str, "Accepted as SageMaker's built-in XGBoost does; no effect on XGBoost 3.")
    for name in LEGACY
)

# Read by the plugin itself; everything else goes to XGBoost's parameter dictionary.
PLUGIN_ONLY = {
    "num_round",
    "early_stopping_rounds",
    "checkpoint_rounds",
    "save_model_on_termination",
    "external_memory",
    *LEGACY,
}
