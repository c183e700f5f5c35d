"""Decide the task and encode labels: class codes 0..k-1 for classification, floats for regression."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from ..model_types import CLASSIFICATION, REGRESSION


def is_numeric(labels: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)


def infer_task(labels: pd.Series) -> str:
    """Non-numeric labels mean classification, numeric ones regression (as R's randomForest does)."""
    return REGRESSION if is_numeric(labels) else CLASSIFICATION


def _plain(value: Any) -> Any:
    """A JSON-friendly label: numpy scalars become Python ones, whole floats become ints."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass(frozen=True)
class LabelEncoding:
    task: str
    classes: list[Any]

    @classmethod
    def fit(cls, task: str, labels: pd.Series) -> LabelEncoding:
        if task == REGRESSION:
            if not is_numeric(labels):
                example = next(v for v in labels if not _is_number(v))
                raise DataError(
                    f"task is regression but the label column holds non-numeric values such as "
                    f"{example!r}; set task=classification or fix the labels"
                )
            return cls(task, [])
        return cls.of_classes(task, distinct_labels(labels))

    @classmethod
    def of_classes(cls, task: str, classes: list[Any]) -> LabelEncoding:
        """A classification's encoding from its classes (each host's, on a multi-host job)."""
        ordered = sorted(set(classes), key=lambda v: (str(type(v)), v))
        if len(ordered) < 2:
            raise DataError(f"classification needs at least two classes; the labels hold only {ordered!r}")
        return cls(task, ordered)

    def encode(self, labels: pd.Series, channel: str) -> np.ndarray:
        if self.task == REGRESSION:
            return labels.to_numpy(dtype=np.float64)
        index = {c: i for i, c in enumerate(self.classes)}
        values = labels.to_numpy()
        # Distinct labels looked up once each, then spread to the rows by pandas' codes.
        positions, distinct = pd.factorize(values, use_na_sentinel=False)
        of_distinct = np.array([index.get(_plain(v), -1) for v in distinct], dtype=np.int32)
        codes = of_distinct[positions]
        unknown = np.flatnonzero(codes < 0)
        if unknown.size:
            row = int(unknown[0])
            raise DataError(
                f"the '{channel}' channel has label {values[row]!r} (row {row + 1}), which the "
                f"'train' channel never has; known classes: {self.classes}"
            )
        return codes


def distinct_labels(labels: pd.Series) -> list[Any]:
    """Each distinct label once, as a plain Python value (pandas' hash table, not a Python loop)."""
    return sorted({_plain(v) for v in pd.unique(labels.to_numpy())}, key=lambda v: (str(type(v)), v))


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
