"""What a prediction returns, chosen per request or by a container default.

`predicted_label` (the default: the class label, or the value for regression), `probabilities` (one
value per class), `probability` (the positive class's, for two classes), `raw_margin` (the score
before the link function), `contributions` (per-feature contributions and the bias, SHAP values for
XGBoost) or `leaves` (the leaf reached in each tree). Chosen by the request's
`X-Amzn-SageMaker-Custom-Attributes: output=probabilities`, an `Accept` parameter
(`text/csv; output=probabilities`), or SAGEMAKER_INFERENCE_OUTPUT, in that order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..environment import OUTPUT_KINDS as KINDS
from ..errors import BadRequestError, UnsupportedOutputError
from ..loaded_model import LoadedModel
from ..model_types import CONTRIBUTIONS, LABEL, LEAVES, PROBABILITIES, RAW_MARGIN

PREDICTED_LABEL = KINDS[0]
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


def requested_output(custom_attributes: str | None, accept: str | None, default: str | None) -> str:
    """The output kind of one request (a BadRequestError names a kind that does not exist)."""
    if value := _parameter(custom_attributes, ",") or _parameter(custom_attributes, ";"):
        return check_kind(value, "X-Amzn-SageMaker-Custom-Attributes")
    if value := _parameter(accept, ";"):
        return check_kind(value, "Accept")
    return default or PREDICTED_LABEL


def predict_output(model: LoadedModel, features: pd.DataFrame, kind: str) -> np.ndarray:
    """The model's answer in the requested kind; for several kinds (`predicted_label,probability`,
    from SAGEMAKER_INFERENCE_OUTPUT) one record per row, a dict of the kinds in the order given,
    which the encoders write as `label,probability` CSV lines or JSON objects."""
    if "," in kind:
        kinds = kind.split(",")
        answers = [predict_output(model, features, k) for k in kinds]
        records = np.empty(len(features), dtype=object)
        for row in range(len(features)):
            records[row] = {k: _plain(a[row]) for k, a in zip(kinds, answers, strict=True)}
        return records
    if kind == PREDICTED_LABEL:
        return model.predict(features, LABEL)
    if kind in _PLUGIN_OUTPUTS:
        return model.predict(features, _PLUGIN_OUTPUTS[kind])
    probabilities = model.predict(features, PROBABILITIES)
    if kind == PROBABILITIES:
        return probabilities
    if probabilities.shape[1] != 2:
        raise UnsupportedOutputError(
            f"output 'probability' needs two classes; this model has {probabilities.shape[1]}: "
            "ask for 'probabilities'"
        )
    return probabilities[:, 1]
