"""Hook implementations for XGBoost."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

import xgboost as xgb
from sagecraft.categories import numeric_matrix
from sagecraft.errors import DataError, HyperparameterError, TrainingStoppedError, UnsupportedOutputError
from sagecraft.hooks import (
    CLASSIFICATION,
    CONTRIBUTIONS,
    LABEL,
    LEAVES,
    PROBABILITIES,
    RAW_MARGIN,
    REGRESSION,
    AlgorithmInfo,
    Dataset,
    FitContext,
    hookimpl,
)
from sagecraft.hyperparameters import did_you_mean
from sagecraft.manifest import Manifest
from sagecraft.metrics import HIGHER_IS_BETTER, METRICS, evaluate

from .checkpoints import CheckpointAndStop, Progress, resume
from .ensemble import ENSEMBLE_SETTING, VOTED_OBJECTIVES, check_member, mean, member_files, vote
from .flat_booster import FLAT_MAX_ROWS, FlatBooster, flatten
from .foreign import describe
from .hyperparameters import HYPERPARAMETERS, LEGACY, PLUGIN_ONLY
from .matrices import matrices
from .messages import xgboost_message
from .model_checks import check_against_manifest
from .persistence import (
    BUILTIN_MODEL_FILE,
    MODEL_FILE,
    booster_objective,
    load_booster,
    read_booster,
    save_booster,
)

CLASSIFICATION_FAMILIES = ("binary", "multi")
# Metrics XGBoost lacks that SageMaker's built-in XGBoost offers; computed by sagecraft.metrics.
# The core's metrics that XGBoost computes itself; the others (accuracy, f1, mse, r2 and the rest
# SageMaker's built-in XGBoost adds) are computed from each round's predictions.
NATIVE_METRICS = {"error", "merror", "logloss", "mlogloss", "rmse", "mae"}
EXTRA_METRICS = {
    task: tuple(name for name in METRICS[task] if name not in NATIVE_METRICS) for task in METRICS
}
# What XGBoost can print as an eval_metric (its parametrised forms, such as ndcg@3, aside).
XGBOOST_METRICS = (
    "rmse", "rmsle", "mae", "mape", "mphe", "logloss", "error", "merror", "mlogloss", "auc",
    "aucpr", "pre", "ndcg", "map", "poisson-nloglik", "gamma-nloglik", "cox-nloglik",
    "gamma-deviance", "tweedie-nloglik", "aft-nloglik", "interval-regression-accuracy",
)  # fmt: skip
# XGBoost's objective families; XGBoost itself rejects unknown names within a family.
OBJECTIVE_FAMILIES = ("reg", "binary", "multi", "count", "survival", "rank")
_UNUSED = re.compile(r"Parameters: \{(?P<names>[^}]*)\} (?:are|is) not used")


@dataclass(frozen=True)
class XGBoostModel:
    """A booster and what its predictions mean: its objective and number of classes (0: none);
    `flat`, its trees as flat arrays for small requests, when they answer exactly as XGBoost."""

    booster: xgb.Booster
    objective: str
    n_classes: int
    flat: FlatBooster | None = None
    # The other files of a built-in algorithm's folder, answering with this one (ensemble.py).
    members: tuple[XGBoostModel, ...] = ()
    # XGBoost predicts in place for trees only: a gblinear booster needs a DMatrix. Read from
    # the booster once (None: not yet); `replace` copies it.
    linear: bool | None = None

    def __post_init__(self) -> None:
        if self.linear is None:
            booster_name = orjson.loads(self.booster.save_config())["learner"]["gradient_booster"]["name"]
            object.__setattr__(self, "linear", booster_name == "gblinear")

    def _library(self, matrix: np.ndarray | pd.DataFrame, margin: bool) -> np.ndarray:
        if self.linear:
            data = xgb.DMatrix(matrix, missing=np.nan, feature_names=self.booster.feature_names)
            return self.booster.predict(data, output_margin=margin)
        return self.booster.inplace_predict(matrix, predict_type="margin" if margin else "value")

    def margin(self, matrix: np.ndarray | pd.DataFrame) -> np.ndarray:
        if self.flat is not None and isinstance(matrix, np.ndarray) and len(matrix) <= FLAT_MAX_ROWS:
            return self.flat.margins(matrix)
        return self._library(matrix, margin=True)

    def regression(self, matrix: np.ndarray | pd.DataFrame) -> np.ndarray:
        if self.flat is not None and self.flat.identity_link:
            return self.margin(matrix)
        return self._library(matrix, margin=False)


@hookimpl
def algorithm_info() -> AlgorithmInfo:
    return AlgorithmInfo(
        description="Gradient-boosted trees (XGBoost), with SageMaker's built-in parameter names",
        hyperparameters=HYPERPARAMETERS,
        accepts_extra_hyperparameters=True,
        libraries={"xgboost": xgb.__version__},
        feature_dtype="float32",  # XGBoost stores and compares float32
        several_hosts=True,  # XGBoost's own collective, which the core joins
        metrics=[
            *XGBOOST_METRICS,
            *(m for task in METRICS for m in EXTRA_METRICS[task] if m not in XGBOOST_METRICS),
        ],
        checkpoints=True,
        streaming=True,  # QuantileDMatrix / ExtMemQuantileDMatrix from the batches (matrices.py)
    )


@hookimpl
def infer_task(hyperparameters: dict[str, Any]) -> str | None:
    objective = hyperparameters.get("objective")
    if not objective:
        return None
    family = objective.split(":")[0]
    if family not in OBJECTIVE_FAMILIES or ":" not in objective:
        raise HyperparameterError(
            f"objective '{objective}' is not an XGBoost objective; use one such as "
            "reg:squarederror, binary:logistic or multi:softprob"
        )
    return CLASSIFICATION if family in CLASSIFICATION_FAMILIES else REGRESSION


def _objective(hyperparameters: dict[str, Any], context: FitContext) -> str:
    objective = hyperparameters.get("objective")
    if context.task == REGRESSION:
        objective = objective or "reg:squarederror"
        if objective.split(":")[0] in CLASSIFICATION_FAMILIES:
            raise HyperparameterError(
                f"objective '{objective}' is for classification, but the task is regression"
            )
        return objective
    classes = context.n_classes
    objective = objective or ("binary:logistic" if classes == 2 else "multi:softprob")
    family = objective.split(":")[0]
    if family not in CLASSIFICATION_FAMILIES:
        raise HyperparameterError(
            f"objective '{objective}' is for regression, but the task is classification"
        )
    if family == "binary" and classes != 2:
        raise HyperparameterError(
            f"objective '{objective}' needs two classes; the labels have {classes}: "
            f"{list(context.classes)[:10]}. Use multi:softprob"
        )
    given = hyperparameters.get("num_class")
    if family == "multi" and given is not None and given != classes:
        raise HyperparameterError(
            f"hyperparameter 'num_class' = {given}, but the labels have {classes} classes"
        )
    return objective


def _check_interaction_constraints(value: Any, n_features: int) -> None:
    """Column numbers in interaction_constraints must be columns: XGBoost ignores one that is not."""
    try:
        groups = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        return  # XGBoost explains what it cannot parse
    if not isinstance(groups, list):
        return
    for group in groups:
        for column in group if isinstance(group, list) else [group]:
            if isinstance(column, int) and not 0 <= column < n_features:
                raise HyperparameterError(
                    f"interaction_constraints names column {column}, but the data has {n_features} "
                    f"features (columns 0 to {n_features - 1})"
                )


def _gpu_usable() -> bool:
    """Whether XGBoost can train on a GPU here: a CUDA build, and an NVIDIA device visible."""
    return bool(xgb.build_info().get("USE_CUDA")) and Path("/dev/nvidiactl").exists()


def _tuning_metric(context: FitContext) -> str | None:
    """The validation metric a SageMaker tuning job optimises ("validation:rmse" -> "rmse")."""
    data_name, _, metric = (context.tuning_objective_metric or "").partition(":")
    return metric if data_name == "validation" and metric else None


def _booster_params(hyperparameters: dict[str, Any], objective: str, context: FitContext) -> dict[str, Any]:
    params = {k: v for k, v in hyperparameters.items() if k not in PLUGIN_ONLY}
    params["objective"] = objective
    if params.get("tree_method") == "gpu_hist":  # XGBoost 3 spells it hist on device cuda
        params["tree_method"] = "hist"
        if _gpu_usable():
            params.setdefault("device", "cuda")
        else:
            context.logger.warning(
                "tree_method=gpu_hist: this XGBoost (%s) cannot use a GPU here; training with "
                "tree_method=hist on the CPU",
                "built without CUDA" if not xgb.build_info().get("USE_CUDA") else "no GPU visible",
            )
    _check_interaction_constraints(params.get("interaction_constraints"), len(context.feature_names))
    for name in LEGACY:
        if name in hyperparameters:
            context.logger.warning(
                "hyperparameter '%s' has no effect on XGBoost %s; it is accepted as SageMaker's "
                "built-in XGBoost accepts it",
                name,
                xgb.__version__,
            )
    if objective.startswith("multi:"):
        params["num_class"] = context.n_classes
    # A tuning job reads its objective from the log: evaluate it even if eval_metric omits it.
    tuned = _tuning_metric(context)
    if tuned and "eval_metric" in params and tuned not in params["eval_metric"]:
        params["eval_metric"] = [*params["eval_metric"], tuned]
    elif tuned and "eval_metric" not in params:
        params["eval_metric"] = [tuned]
    return params


def _split_metrics(params: dict[str, Any], task: str) -> list[str]:
    """Move the metrics XGBoost does not compute itself (accuracy, f1, mse, r2: those SageMaker's
    built-in XGBoost adds) out of `eval_metric`; they are returned, to be computed each round."""
    extra = [m for m in params.get("eval_metric") or [] if m in EXTRA_METRICS.get(task, ())]
    if extra:
        native = [m for m in params["eval_metric"] if m not in extra]
        if native:
            params["eval_metric"] = native
        else:
            del params["eval_metric"]
    return extra


def _extra_metric_function(
    names: list[str], task: str, objective: str, context: FitContext
) -> Callable[[np.ndarray, xgb.DMatrix], list[tuple[str, float]]]:
    """XGBoost's custom_metric: the extra metrics from each round's predictions. On several
    hosts each computes them from sums over every host's rows (XGBoost would average the hosts'
    own values, which is wrong for unequal shards), so the values are the whole data set's."""

    def extra_metrics(predictions: np.ndarray, data: xgb.DMatrix) -> list[tuple[str, float]]:
        labels = data.get_label()
        probabilities = None
        if task == REGRESSION:
            predicted = predictions
        elif predictions.ndim == 2:  # multi:softprob
            probabilities, predicted = predictions, np.argmax(predictions, axis=1)
        elif objective.startswith("multi:"):  # multi:softmax answers class codes
            predicted = predictions
        elif objective == "binary:logitraw":
            predicted = (predictions > 0).astype(float)
        else:
            predicted = (predictions > 0.5).astype(float)
            if objective == "binary:logistic":
                probabilities = np.column_stack([1 - predictions, predictions])
        scores = evaluate(
            task,
            names,
            labels,
            predicted,
            probabilities,
            n_classes=context.n_classes or None,
            combine=context.cluster.allreduce,
        )
        return list(scores.items())

    return extra_metrics


def _watched_metric(params: dict[str, Any], context: FitContext) -> str | None:
    """The metric early stopping watches: the tuning job's objective, else the last eval_metric."""
    metrics = params.get("eval_metric")
    return _tuning_metric(context) or (metrics[-1] if metrics else None)


class _MetricLines(xgb.callback.TrainingCallback):
    """Hands each round's evaluation to the core, which prints it in SageMaker's format."""

    def __init__(self, context: FitContext) -> None:
        self.context = context

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict) -> bool:
        latest = {
            f"{data}-{metric}": values[-1]
            for data, by_metric in evals_log.items()
            for metric, values in by_metric.items()
        }
        if latest:
            # The round number, not the epoch: a run resumed from a checkpoint counts on.
            self.context.log_metrics(model.num_boosted_rounds() - 1, latest)
        return False


class _RejectUnusedParameters(xgb.callback.TrainingCallback):
    """After the first round, fail on pass-through names XGBoost reported as not used.

    XGBoost warns, rather than fails, on parameter names it does not know; a typo would then train
    a different model than the user asked for.
    """

    def __init__(self, caught: list[warnings.WarningMessage], passed_through: set[str]) -> None:
        self.caught = caught
        self.passed_through = passed_through

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict) -> bool:
        if epoch != 0:
            return False
        for warning in self.caught:
            match = _UNUSED.search(str(warning.message))
            if not match:
                continue
            names = [n.strip().strip('"') for n in match.group("names").split(",")]
            unknown = [n for n in names if n in self.passed_through]
            if unknown:
                declared = [h.name for h in HYPERPARAMETERS]
                raise HyperparameterError(
                    f"unknown hyperparameter '{unknown[0]}' for algorithm 'xgboost'"
                    f"{did_you_mean(unknown[0], declared)}: XGBoost does not use it"
                )
        return False


def _check_empty_hosts(train: Dataset, validation: Dataset | None, context: FitContext) -> None:
    """XGBoost cannot build a categorical matrix on a host without rows (it learns the categories
    from the data): every host fails, saying so, rather than the one host failing inside XGBoost."""
    cluster = context.cluster
    if cluster.size == 1:
        return
    categorical = any(isinstance(t, pd.CategoricalDtype) for t in train.features.dtypes)
    empty = train.n_rows == 0 or (validation is not None and validation.n_rows == 0)
    if cluster.any(categorical and empty):
        raise DataError(
            "a host of this job holds no rows of a channel, and XGBoost cannot train on several hosts "
            "with categorical features unless every host has rows of every channel: give each "
            "host some rows (more objects than instances with ShardedByS3Key), or use FullyReplicated"
        )


@hookimpl
def fit(
    train: Dataset, validation: Dataset | None, hyperparameters: dict[str, Any], context: FitContext
) -> XGBoostModel:
    objective = _objective(hyperparameters, context)
    params = _booster_params(hyperparameters, objective, context)
    rounds = hyperparameters["num_round"]
    early_stopping = hyperparameters.get("early_stopping_rounds")
    if early_stopping and validation is None:
        raise HyperparameterError("early_stopping_rounds needs a 'validation' channel")
    declared = {name for h in HYPERPARAMETERS for name in (h.name, *h.aliases)}
    passed_through = set(hyperparameters) - declared

    _check_empty_hosts(train, validation, context)
    evals = matrices(train, validation, params, hyperparameters["external_memory"], context)
    resumed = resume(context.checkpoint_dir, context.cluster, context.logger)
    done = resumed.num_boosted_rounds() if resumed is not None else 0
    if resumed is not None and done >= rounds:
        context.logger.info("the checkpoint already holds all %d rounds", rounds)
        return XGBoostModel(resumed[:rounds], objective, context.n_classes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        callbacks: list[xgb.callback.TrainingCallback] = [
            _RejectUnusedParameters(caught, passed_through),
            _MetricLines(context),
            CheckpointAndStop(
                context.checkpoint_dir,
                hyperparameters["checkpoint_rounds"],
                context.stop_requested,
                context.logger,
                context.cluster,
            ),
            Progress(rounds - done, context.logger),
        ]
        watched = _watched_metric(params, context)
        extra = _split_metrics(params, context.task)
        if early_stopping:
            callbacks.append(
                xgb.callback.EarlyStopping(
                    rounds=early_stopping,
                    metric_name=watched,
                    data_name="validation",
                    save_best=False,
                    maximize=True if watched in HIGHER_IS_BETTER else None,
                )
            )
        try:
            booster = xgb.train(
                params,
                evals[0][0],
                num_boost_round=rounds - done,
                evals=evals,
                verbose_eval=False,
                callbacks=callbacks,
                xgb_model=resumed,
                custom_metric=_extra_metric_function(extra, context.task, objective, context)
                if extra
                else None,
            )
        except xgb.core.XGBoostError as exc:  # (a ValueError too: caught first)
            if (lost := context.cluster.lost(exc)) is not None:
                raise lost from None
            message = xgboost_message(exc)
            if "label" in message.lower():
                raise DataError(f"XGBoost rejected the labels: {message}") from None
            raise HyperparameterError(f"XGBoost rejected the hyperparameters: {message}") from None
        except ValueError as exc:  # XGBoost's Python checks, e.g. constraints on unknown features
            raise HyperparameterError(f"XGBoost rejected the hyperparameters: {exc}") from None
    for warning in caught:
        context.logger.warning("xgboost: %s", str(warning.message).strip())
    if context.stop_requested() and not hyperparameters["save_model_on_termination"]:
        raise TrainingStoppedError(
            "stopped by SIGTERM; save_model_on_termination is false, so no model was written"
        )
    if early_stopping and booster.num_boosted_rounds() > booster.best_iteration + 1:
        context.logger.info(
            "early stopping: keeping rounds 0-%d of %d",
            booster.best_iteration,
            booster.num_boosted_rounds() - 1,
        )
        booster = booster[: booster.best_iteration + 1]
    return XGBoostModel(booster, objective, context.n_classes)


@hookimpl
def save_model(model: XGBoostModel, model_dir: Path) -> None:
    save_booster(model.booster, model_dir)


@hookimpl
def describe_model(model_dir: Path) -> Manifest | None:
    """A model folder of SageMaker's built-in XGBoost (a lone `xgboost-model`), see foreign.py."""
    return describe(model_dir)


@hookimpl
def load_model(model_dir: Path, manifest: Manifest | None) -> XGBoostModel:
    booster, objective, n_classes, document = load_booster(model_dir)
    if manifest is not None:
        check_against_manifest(document, manifest, str(model_dir))
    model = XGBoostModel(booster, objective, n_classes, flatten(booster, objective, document))
    if (model_dir / MODEL_FILE).exists() or not (model_dir / BUILTIN_MODEL_FILE).exists():
        return model  # a folder sagecraft trained: one model file
    return replace(model, members=tuple(_members(model_dir, model)))


def _features(booster: xgb.Booster) -> tuple[Sequence[str] | None, Sequence[str] | None, int]:
    return booster.feature_names, booster.feature_types, booster.num_features()


def _members(model_dir: Path, first: XGBoostModel) -> list[XGBoostModel]:
    """The other model files of a built-in algorithm's folder, checked against xgboost-model."""
    members = []
    for path in member_files(model_dir):
        booster, document = read_booster(path)
        objective, n_classes = booster_objective(booster, path)
        check_member(
            path,
            objective,
            n_classes,
            _features(booster),
            (first.objective, first.n_classes, _features(first.booster)),
        )
        members.append(XGBoostModel(booster, objective, n_classes, flatten(booster, objective, document)))
    return members


def _ensemble(model: XGBoostModel, features: pd.DataFrame, output: str) -> np.ndarray:
    """The answer of an ensemble (ensemble.py): means of probabilities, values and margins; votes
    for the classes of objectives without probabilities."""
    everyone = (replace(model, members=()), *model.members)
    if output in (CONTRIBUTIONS, LEAVES):
        raise UnsupportedOutputError(
            f"this model folder is an ensemble of {len(everyone)} model files, which has no single "
            f"'{output}'; serve one file alone ({ENSEMBLE_SETTING}=false) to ask for it"
        )
    if output == LABEL and model.n_classes:
        if model.objective in VOTED_OBJECTIVES:
            return vote([predict(m, features, LABEL) for m in everyone], model.n_classes)
        return mean([predict(m, features, PROBABILITIES) for m in everyone]).argmax(axis=1)
    return mean([predict(m, features, output) for m in everyone])


# What SageMaker's built-in XGBoost answers by default: the objective's output.
BUILTIN_DEFAULTS = {
    "binary:logistic": "probability",
    "multi:softprob": "probabilities",
    "binary:logitraw": "raw_margin",
}


@hookimpl
def builtin_default_output(model: XGBoostModel, manifest: Manifest) -> str | None:
    """A model whose objective the user chose (or a built-in algorithm's own model file) answers as
    SageMaker's built-in XGBoost: the objective's output. One whose objective sagecraft chose (text
    labels, no objective) answers its labels, sagecraft's default."""
    if "objective" not in manifest.hyperparameters:
        return None
    return BUILTIN_DEFAULTS.get(model.objective, "predicted_label")


def _softmax(margin: np.ndarray) -> np.ndarray:
    shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@hookimpl
def predict(model: XGBoostModel, features: pd.DataFrame, output: str) -> np.ndarray:
    if model.members:
        return _ensemble(model, features, output)
    # Categorical features go as the DataFrame (XGBoost reads their codes); others as float32.
    numbers = numeric_matrix(features)
    categorical = numbers is None
    matrix = features if numbers is None else numbers
    if output == RAW_MARGIN:
        return model.margin(matrix)
    if output in (CONTRIBUTIONS, LEAVES):
        data = (
            xgb.DMatrix(features, enable_categorical=True)
            if categorical
            else xgb.DMatrix(matrix, missing=np.nan, feature_names=model.booster.feature_names)
        )
        try:
            result = model.booster.predict(
                data, pred_contribs=output == CONTRIBUTIONS, pred_leaf=output == LEAVES
            )
        except xgb.core.XGBoostError as exc:  # a tree's statistics TreeSHAP cannot use, say
            why = xgboost_message(exc)
            raise UnsupportedOutputError(f"this model cannot give '{output}': {why}") from None
        # Multi-class contributions are (rows, classes, features + 1): one flat row per record.
        return result.reshape(len(matrix), -1)
    if model.n_classes == 0:
        if output == LABEL:
            return model.regression(matrix)
        raise UnsupportedOutputError(f"a regression model cannot predict '{output}'")
    margin = model.margin(matrix)
    if model.n_classes == 2:
        if output == LABEL:
            return (margin > 0).astype(np.int32)
        if model.objective == "binary:hinge":
            raise UnsupportedOutputError("objective binary:hinge gives no probabilities")
        positive = 1.0 / (1.0 + np.exp(-margin))
        return np.column_stack([1.0 - positive, positive])
    if output == LABEL:
        return np.argmax(margin, axis=1)
    return _softmax(margin)
