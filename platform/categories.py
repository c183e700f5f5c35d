"""Categorical features: text columns of the training data, encoded the same way everywhere.

The categories of a feature are its distinct training values, sorted; the manifest keeps them.
Training, validation and every request are encoded against that list as pandas categoricals, so
code 0 is the same category for the plugin at training and at serving time. A value outside the
list (a category never seen in training) becomes a missing value, as an empty cell does: both
plugins route missing values down their trees' learnt default branches. Numbers in a categorical
column are their text (`3` is the category "3").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

__all__ = [
    "FeatureNames",
    "code_matrix",
    "numeric_matrix",
]

log = logging.getLogger(__name__)

MANY_LEVELS = 1000  # past this a column looks like an identifier: warned about, still encoded


class FeatureNames(list):
    """The model's feature names (a plain list to any decoder), with the categories of its
    categorical features in `categories` for decoders that can use them, and in `largest` the
    largest magnitude a feature value may have (the model's library computes in float32: 1e39 is
    finite as sent but infinite there), or None for any finite float64."""

    def __init__(
        self,
        names: Sequence[str],
        categories: Mapping[str, Sequence[str]] | None = None,
        largest: float | None = None,
    ):
        super().__init__(names)
        self.categories: dict[str, list[str]] = {k: list(v) for k, v in (categories or {}).items()}
        self.largest = largest


def as_text(value: object) -> str | None:
    """A cell as category text; None for a missing one. 3 and 3.0 both read as "3"."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    return text if text.strip() else None


def levels(features: pd.DataFrame) -> dict[str, list[str]]:
    """The categories of each text column of a training table."""
    found = {}
    for name in features.columns:
        column = features[name]
        if column.dtype.kind in "biuf":
            continue
        values = sorted({t for v in column.unique() if (t := as_text(v)) is not None})
        if len(values) > MANY_LEVELS:
            log.warning("feature '%s' has %d categories: is it an identifier?", name, len(values))
        found[str(name)] = values
    return found


def encode(features: pd.DataFrame, categories: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """`features` with each categorical column as a pandas categorical over its training
    categories; values outside them become missing."""
    if not categories:
        return features
    encoded = features.copy(deep=False)
    for name, values in categories.items():
        column = encoded[name]
        if isinstance(column.dtype, pd.CategoricalDtype) and list(column.cat.categories) == values:
            continue
        text = [as_text(v) for v in column.to_numpy(dtype=object)]
        encoded[name] = pd.Categorical(text, categories=values)
    return encoded


def numeric_matrix(
    features: pd.DataFrame, dtype: type = np.float32, order: Literal["C", "F"] = "C"
) -> np.ndarray | None:
    """`features` as a `dtype` matrix, NaN for missing values, when no column is categorical;
    None when one is (the caller encodes those columns its own way). Categories are text, so a
    table holding one is not all floats; the check costs 2 µs, scanning `features.dtypes` 16 µs
    (more than a small prediction). `order="F"` (column-major, what scikit-learn's trees fit
    on) is a view of a training table's one float block, not a copy."""
    matrix = features.to_numpy()
    if matrix.dtype.kind == "f":  # pandas hands back its column-major block
        return np.asarray(matrix, dtype=dtype, order=order)
    if any(isinstance(t, pd.CategoricalDtype) for t in features.dtypes):
        return None
    return features.to_numpy(dtype=dtype, na_value=np.nan)


def code_matrix(
    features: pd.DataFrame, dtype: type = np.float32, order: Literal["C", "F"] = "C"
) -> np.ndarray:
    """`features` as one `dtype` matrix for a library without categorical support: a categorical
    feature as its category's code (0, 1, ... in the order of the training categories), a missing
    or unseen category, like any missing value, as NaN."""
    matrix = numeric_matrix(features, dtype, order)
    if matrix is not None:
        return matrix
    columns = []
    for name in features.columns:
        column = features[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy().astype(dtype)
            codes[codes < 0] = np.nan
            columns.append(codes)
        else:
            columns.append(column.to_numpy(dtype=dtype, na_value=np.nan))
    return np.column_stack(columns)
