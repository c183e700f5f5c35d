"""Cells to feature tables: what every built-in decoder builds its answer with.

A feature table is the pandas DataFrame that `predict` hooks receive: one column per model feature,
in the model's order, float64 (categorical columns as sent, until the registry encodes them).
Every function here names the row and column at fault in a BadRequestError.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BadRequestError


def body_text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"the body is not UTF-8 text (byte {exc.start})") from None


def expects(features: Sequence[str]) -> str:
    names = ", ".join(features[:20]) + (", ..." if len(features) > 20 else "")
    return f"the model expects {len(features)}: {names}"


def number_cell(value: Any, row: int, column: int, features: Sequence[str]) -> float:
    """One cell as a float; row and column are 1-based for the message."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        number = None
    else:
        try:
            number = float(value)
        except ValueError:
            number = None
    where = f"row {row}, column {column} ({features[column - 1]})"
    if number is None:
        raise BadRequestError(f"{where}: {str(value)[:50]!r} is not a number")
    if math.isinf(number):
        raise BadRequestError(f"{where}: infinite values are not allowed")
    return number


@functools.lru_cache(maxsize=256)
def feature_columns(features: tuple[str, ...]) -> pd.Index:
    """The column index for a model's features, built once: building it costs more than a row."""
    return pd.Index(features, dtype=object)


def feature_table(matrix: np.ndarray, features: Sequence[str]) -> pd.DataFrame:
    """A float matrix as the feature table hooks receive, without copying it."""
    return pd.DataFrame(matrix, columns=feature_columns(tuple(features)), copy=False)


def rows_table(rows: Sequence[Sequence[Any]], features: Sequence[str], first_row: int = 1) -> pd.DataFrame:
    """Rows of cells (numbers or text) to a float table, or a message naming the bad cell.

    `first_row` is the number the first row has in the request, for messages.
    """
    if not rows:
        raise BadRequestError("the request holds no rows")
    for index, row in enumerate(rows, start=first_row):
        if len(row) != len(features):
            raise BadRequestError(f"row {index} has {len(row)} values, {expects(features)}")
    if getattr(features, "categories", None):
        return _mixed_frame(rows, features, first_row)
    try:
        matrix = np.array(rows, dtype=np.float64)
    except (ValueError, TypeError):
        matrix = None
    if matrix is None or matrix.ndim != 2:  # (cells that are lists make a deeper array)
        matrix = np.array(
            [
                [number_cell(v, r, c, features) for c, v in enumerate(row, 1)]
                for r, row in enumerate(rows, first_row)
            ],
            dtype=np.float64,
        )
    return feature_table(checked_finite(matrix, features, first_row), features)


def _mixed_frame(rows: Sequence[Sequence[Any]], features: Sequence[str], first_row: int) -> pd.DataFrame:
    """Rows for a model with categorical features: their cells stay as sent (the registry encodes
    them against the training categories), the other columns are numbers."""
    categorical = features.categories  # type: ignore[attr-defined]
    columns = {}
    for index, name in enumerate(features):
        cells = [row[index] for row in rows]
        if name in categorical:
            columns[name] = pd.array(cells, dtype=object)
        else:
            columns[name] = [number_cell(v, r, index + 1, features) for r, v in enumerate(cells, first_row)]
    return pd.DataFrame(columns, columns=feature_columns(tuple(features)))


def checked_finite(matrix: np.ndarray, features: Sequence[str], first_row: int = 1) -> np.ndarray:
    if np.isinf(matrix).any():
        row, column = map(int, np.argwhere(np.isinf(matrix))[0])
        number_cell(matrix[row, column], row + first_row, column + 1, features)
    return matrix


def finite_rows(rows: list[list[float]], features: Sequence[str]) -> list[list[float]] | None:
    """The rows, or None if a cell is infinite or beyond the model's largest value. A row's sum
    is finite unless a cell is infinite or missing (or the sum overflows), so only those rows are
    looked at cell by cell."""
    largest = getattr(features, "largest", None)
    for row in rows:
        total = sum(row)
        if total - total != 0:  # an infinite or missing cell, or a sum that overflows
            if any(math.isinf(cell) or (largest is not None and abs(cell) > largest) for cell in row):
                return None
        elif largest is not None and (max(row) > largest or min(row) < -largest):
            return None
    return rows
