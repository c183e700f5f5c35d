"""What a prediction returns, chosen per request or by a container default.

`predicted_label` (the default: the class label, or the value for regression), `probabilities` (one
value per class), `probability` (the positive class's for two classes, the winning class's for
more), `raw_margin` (the score before the link function), `contributions` (per-feature
contributions and the bias, SHAP values for XGBoost) or `leaves` (the leaf reached in each tree).
Chosen by the request's `X-Amzn-SageMaker-Custom-Attributes: output=probabilities`, an `Accept`
parameter (`text/csv; output=probabilities`), or SAGEMAKER_INFERENCE_OUTPUT, in that order.

The keys of SageMaker's built-in algorithms answer with the meanings they have there: `labels`
(every class label), `raw_score` (the score of the prediction: the positive class's probability,
the winning class's, or the regression value; for an objective without probabilities, its own
output: the margin of binary:logitraw, the class of binary:hinge and multi:softmax), `raw_scores`
(every class's score; `[1 - x, x]` of that output for those objectives), and `predicted_score`
(a regression's value); a key that does not apply to the model (`labels` of a regression,
`predicted_score` of a classifier) answers NaN, as there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..environment import OUTPUT_KINDS as KINDS
from ..errors import BadRequestError, UnsupportedOutputError
from ..loaded_model import LoadedModel
from ..media_types import JSON, JSONLINES
from ..model_types import CLASSIFICATION, CONTRIBUTIONS, LABEL, LEAVES, PROBABILITIES, RAW_MARGIN

PREDICTED_LABEL = KINDS[0]
RECORD_TYPES = (JSON, JSONLINES)
# Output kinds answered by the plugin's predict as they are.
_PLUGIN_OUTPUTS = {"raw_margin": RAW_MARGIN, "contributions": CONTRIBUTIONS, "leaves": LEAVES}


def _plain(value: object) -> object:
    """A numpy value or row as the JSON-able Python value the encoders write."""
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value


def check_kind(kind: str, where: str) -> str:
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise BadRequestError(f"{where}: output '{kind}' is not one of {', '.join(KINDS)}")
    return kind


def _parameter(text: str | None, separator: str) -> str | None:
    for part in (text or "").split(separator):
        name, _, value = part.partition("=")
        if name.strip().lower() == "output" and value.strip():
            return value.strip()
    return None


def requested_output(custom_attributes: str | None, accept: str | None, default: str | None) -> str | None:
    """The output kind one request asks for, else SAGEMAKER_INFERENCE_OUTPUT's; None when neither
    chooses (the model's default answers). A BadRequestError names a kind that does not exist."""
    if value := _parameter(custom_attributes, ",") or _parameter(custom_attributes, ";"):
        return check_kind(value, "X-Amzn-SageMaker-Custom-Attributes")
    if value := _parameter(accept, ";"):
        return check_kind(value, "Accept")
    return default


def default_kind(model: LoadedModel) -> str:
    """What a model answers when nothing chooses: `predicted_label`, or for a model that answers
    as a SageMaker built-in algorithm, that algorithm's default (P(class 1) for binary:logistic)."""
    return model.builtin_default or PREDICTED_LABEL


def labels_only(model: LoadedModel, chosen: str | None) -> bool:
    """Whether the answer is the bare predicted labels (the batcher's fast path)."""
    return model.builtin_default is None and chosen in (None, PREDICTED_LABEL)


def answer_for(model: LoadedModel, features: pd.DataFrame, chosen: str | None, accept: str) -> np.ndarray:
    """The predictions to encode for `accept`: the chosen kind, or the model's default. A model
    that answers as a SageMaker built-in algorithm answers JSON and JSON Lines as that algorithm
    does, one object a row: `{"score": x}` for the default, `{"<kind>": x}` for a chosen kind."""
    kind = chosen or default_kind(model)
    predictions = (
        _builtin_output(model, features, kind)
        if model.builtin_default
        else predict_output(model, features, kind)
    )
    if model.builtin_default is None or accept not in RECORD_TYPES or "," in kind:
        return predictions
    return _records(["score" if chosen is None else kind], [predictions], len(predictions))


def predict_output(model: LoadedModel, features: pd.DataFrame, kind: str) -> np.ndarray:
    """The model's answer in the requested kind; for several kinds (`predicted_label,probability`,
    from SAGEMAKER_INFERENCE_OUTPUT) one record per row, a dict of the kinds in the order given,
    which the encoders write as `label,probability` CSV lines or JSON objects."""
    if "," in kind:
        kinds = kind.split(",")
        return _records(kinds, [predict_output(model, features, k) for k in kinds], len(features))
    if kind == PREDICTED_LABEL:
        return model.predict(features, LABEL)
    if kind in _PLUGIN_OUTPUTS:
        return model.predict(features, _PLUGIN_OUTPUTS[kind])
    if kind in _BUILT_IN_KEYS:
        return _built_in_key(model, features, kind)
    probabilities = model.predict(features, PROBABILITIES)
    if kind == PROBABILITIES:
        return probabilities
    return _score(probabilities)


_BUILT_IN_KEYS = ("labels", "raw_score", "raw_scores", "predicted_score")
# The keys SageMaker's built-in algorithms answer (NaN where one does not apply).
AWS_KEYS = (PREDICTED_LABEL, "labels", "probability", "probabilities", *_BUILT_IN_KEYS[1:])


def _builtin_output(model: LoadedModel, features: pd.DataFrame, kind: str) -> np.ndarray:
    """As `predict_output`, for a model that answers as a built-in algorithm: one of that
    algorithm's keys that does not apply to the model (the probabilities of a regression) answers
    NaN, as there, not a 400; sagecraft's own kinds (contributions...) still say why not."""
    kinds = kind.split(",")
    answers = []
    for one in kinds:
        try:
            answers.append(predict_output(model, features, one))
        except UnsupportedOutputError:
            if one not in AWS_KEYS:
                raise
            answers.append(np.full(len(features), np.nan))
    return answers[0] if len(kinds) == 1 else _records(kinds, answers, len(features))


def _records(kinds: list[str], answers: list[np.ndarray], rows: int) -> np.ndarray:
    """One dict a row, the kinds in the order given: what the encoders write as records."""
    records = np.empty(rows, dtype=object)
    for row in range(rows):
        records[row] = {k: _plain(a[row]) for k, a in zip(kinds, answers, strict=True)}
    return records


def _score(probabilities: np.ndarray) -> np.ndarray:
    """The score of each row's prediction: the positive class's probability (two classes), else
    the winning class's."""
    return probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities.max(axis=1)


def _built_in_key(model: LoadedModel, features: pd.DataFrame, kind: str) -> np.ndarray:
    """`labels`, `raw_score`, `raw_scores`, `predicted_score`, as SageMaker's built-in algorithms
    answer them; NaN where a key does not apply to the model."""
    rows = len(features)
    if model.manifest.task != CLASSIFICATION:
        if kind in ("raw_score", "predicted_score"):
            return np.asarray(model.predict(features, LABEL), dtype=np.float64)
        return np.full(rows, np.nan)
    if kind == "labels":
        classes = model.classes.astype(object)
        return np.tile(classes, (rows, 1)) if rows else np.empty((0, len(classes)), dtype=object)
    if kind == "predicted_score":  # a regression's value: a classifier has none
        return np.full(rows, np.nan)
    if model.builtin_default in ("raw_margin", PREDICTED_LABEL):
        # An objective without probabilities (binary:logitraw, binary:hinge, multi:softmax): the
        # built-in algorithm's raw score is the objective's output, its raw scores [1 - x, x]
        # (for multi:softmax too, where x is the class index: AWS's meaning, kept as it is).
        score = _objective_output(model, features)
        return score if kind == "raw_score" else np.column_stack([1.0 - score, score])
    probabilities = model.predict(features, PROBABILITIES)
    return probabilities if kind == "raw_scores" else _score(probabilities)


def _objective_output(model: LoadedModel, features: pd.DataFrame) -> np.ndarray:
    """What a classifier's objective outputs when it has no probabilities: the margin
    (binary:logitraw), else the class's index (binary:hinge's 0 or 1, multi:softmax's class)."""
    if model.builtin_default == "raw_margin":
        return np.asarray(model.predict(features, RAW_MARGIN), dtype=np.float64).reshape(len(features))
    labels = model.predict(features, LABEL)
    return pd.Index(model.classes).get_indexer(labels).astype(np.float64)
