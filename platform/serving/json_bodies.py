"""JSON and JSON Lines request bodies: rows as lists, `{"features": [...]}` or objects keyed by
feature name, under `{"instances": [...]}`, as a bare list, or one record per line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pandas as pd

from ..content_registry import SMALL_BODY_BYTES
from ..errors import BadRequestError
from .tables import expects, finite_rows, rows_table


def _json_row(item: Any, index: int, features: Sequence[str]) -> Sequence[Any]:
    if isinstance(item, list):
        return item
    if isinstance(item, dict):
        if "features" in item and isinstance(item["features"], list):
            return item["features"]
        unknown = [k for k in item if k not in features]
        if unknown:
            raise BadRequestError(f"record {index} has unknown feature '{unknown[0]}'; {expects(features)}")
        missing = [f for f in features if f not in item]
        if missing:
            raise BadRequestError(
                f"record {index} lacks feature(s) {', '.join(missing[:10])} (send null for a missing value)"
            )
        return [item[f] for f in features]
    raise BadRequestError(
        f"record {index} is a {type(item).__name__}; send a list of values, "
        '{"features": [...]}, or an object keyed by feature name'
    )


def _json_instances(document: Any) -> list[Any]:
    if isinstance(document, dict):
        if "instances" in document:
            instances = document["instances"]
        elif "features" in document or (document and all(isinstance(k, str) for k in document)):
            instances = [document]
        else:
            instances = None
    else:
        instances = document
    if not isinstance(instances, list):
        raise BadRequestError(
            'send {"instances": [[...], ...]}, a list of rows, or records keyed by feature name'
        )
    if instances and all(not isinstance(i, (list, dict)) for i in instances):
        return [instances]  # one flat row
    return instances


def _loads(text: bytes, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"{what} is not valid JSON: {exc}") from None


def decode_json(body: bytes, features: Sequence[str]) -> pd.DataFrame:
    instances = _json_instances(_loads(body, "the body"))
    return rows_table([_json_row(item, i, features) for i, item in enumerate(instances, 1)], features)


def read_json_numbers(body: bytes, features: Sequence[str]) -> list[list[float]] | np.ndarray | None:
    """A small body of plain rows of numbers (`{"instances": [[...], ...]}`, `[[...], ...]` or
    one flat row) as decode_json reads it, without the DataFrame; None for anything else (records
    keyed by name, wrong counts, text, infinities), which decode_json reads or explains."""
    if len(body) > SMALL_BODY_BYTES or getattr(features, "categories", None):
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(document, dict):
        if len(document) != 1 or "instances" not in document:
            return None
        document = document["instances"]
    if not isinstance(document, list) or not document:
        return None
    rows = document if isinstance(document[0], list) else [document]
    width = len(features)
    if any(not isinstance(row, list) or len(row) != width for row in rows):
        return None
    try:
        return finite_rows([list(map(float, row)) for row in rows], features)  # as numpy converts
    except (TypeError, ValueError, OverflowError):
        pass
    try:  # nulls (missing values) and the like: numpy converts them as rows_table does
        matrix = np.array(rows, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        return None
    if matrix.ndim != 2 or not np.isfinite(matrix[~np.isnan(matrix)]).all():
        return None
    largest = getattr(features, "largest", None)
    return None if largest is not None and (np.abs(np.nan_to_num(matrix)) > largest).any() else matrix


def decode_jsonlines(body: bytes, features: Sequence[str], first_row: int = 1) -> pd.DataFrame:
    rows = []
    for number, line in enumerate(body.strip(b"\r\n").splitlines(), first_row):
        if not line.strip():
            raise BadRequestError(f"line {number} is empty")
        rows.append(_json_row(_loads(line, f"line {number}"), number, features))
    return rows_table(rows, features, first_row)
