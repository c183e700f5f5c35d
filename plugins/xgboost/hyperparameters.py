"""XGBoost's hyperparameters under the names SageMaker's built-in XGBoost algorithm uses."""

from __future__ import annotations

from typing import Any

from sagecraft.hooks import Hyperparameter
from sagecraft.hyperparameters import string_list

_UNIT: dict[str, Any] = {"minimum": 0, "maximum": 1}
FLOAT32_MAX = 3.4028234663852886e38
_FRACTION: dict[str, Any] = {"minimum": 0, "exclusive_minimum": True, "maximum": 1}

HYPERPARAMETERS = (
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
        "tree_method", str, "Tree construction algorithm.", choices=("auto", "exact", "approx", "hist")
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
    Hyperparameter("monotone_constraints", str, "Monotonicity per feature, e.g. (1,0,-1)."),
    Hyperparameter("interaction_constraints", str, "Features allowed to interact, e.g. [[0,1]]."),
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
        "mlogloss, merror, auc, ...) and accuracy, f1, mse, r2 as in SageMaker's "
        "built-in XGBoost; early stopping watches the last one.",
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
        "early_stopping_rounds",
        int,
        "Stop when the validation metric has not improved for this many rounds "
        "(needs the validation channel).",
        minimum=1,
    ),
)

# Read by the plugin itself; everything else goes to XGBoost's parameter dictionary.
PLUGIN_ONLY = {"num_round", "early_stopping_rounds", "checkpoint_rounds"}
