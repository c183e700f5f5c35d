"""Request bodies that carry numbers by position rather than as text cells: NPY arrays, Parquet
files, libsvm's `index:value` pairs and RecordIO-protobuf records. Each is checked against the
registry's limits by the size it decodes to before the matrix is made."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..content_registry import DECODED_CELL_BYTES, ContentTypeRegistry
from ..errors import BadRequestError
from ..recordio import RecordIOError, decode_rows
from .tables import body_text, checked_finite, expects, feature_columns, feature_table


def decode_npy(body: bytes, features: Sequence[str]) -> pd.DataFrame:
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except ValueError as exc:
        raise BadRequestError(f"the body is not a .npy array without objects: {exc}") from None
    except (OSError, EOFError) as exc:
        raise BadRequestError(f"the body is not a .npy array: {exc}") from None
    if not isinstance(array, np.ndarray) or array.ndim not in (1, 2):
        raise BadRequestError("send a 1- or 2-dimensional .npy array")
    if array.dtype.kind not in "biuf":
        raise BadRequestError(f"the .npy array holds {array.dtype}, not numbers")
    matrix = np.atleast_2d(array).astype(np.float64)
    if matrix.shape[0] == 0:
        raise BadRequestError("the request holds no rows")
    if matrix.shape[1] != len(features):
        raise BadRequestError(f"the array has {matrix.shape[1]} columns, {expects(features)}")
    return feature_table(checked_finite(matrix, features), features)


def decode_libsvm(
    body: bytes, features: Sequence[str], first_row: int = 1, *, limits: ContentTypeRegistry | None = None
) -> pd.DataFrame:
    """`[label] index:value ...` per line; the index is the feature's column number, as in
    training (see training.formats.LIBSVM_INDEX_NOTE); a leading label is ignored, absent features are
    missing values. A line of two bytes is a row of every feature, so the matrix is checked
    against `limits` before it is made."""
    lines = body_text(body).strip("\r\n").split("\n")
    if limits is not None:
        limits.check_decoded_size(len(lines), len(features), first_row)
    matrix = np.full((len(lines), len(features)), np.nan)
    for row, line in enumerate(lines):
        number = row + first_row
        tokens = line.split()
        if not tokens:
            raise BadRequestError(f"row {number} is empty")
        if ":" not in tokens[0]:
            try:
                float(tokens[0])
            except ValueError:
                raise BadRequestError(
                    f"row {number}: '{tokens[0][:40]}' is neither a label nor index:value"
                ) from None
            tokens = tokens[1:]  # the label, which a prediction does not need
        for token in tokens:
            index, colon, value = token.partition(":")
            try:  # `index:` with no value is a missing value, as SageMaker's built-in XGBoost reads it
                column, number_value = int(index), float(value) if value else np.nan
            except ValueError:
                colon = ""
            if not colon:
                raise BadRequestError(f"row {number}: '{token[:40]}' is not index:value")
            if not 0 <= column < len(features):
                raise BadRequestError(
                    f"row {number}: index {column} is outside the model's {len(features)} "
                    "features (indices are column numbers from 0)"
                )
            matrix[row, column] = number_value
    return feature_table(checked_finite(matrix, features, first_row), features)


def _parquet_columns(
    body: bytes, features: Sequence[str], limits: ContentTypeRegistry | None
) -> tuple[pq.ParquetFile, list[str] | None]:
    """The file, and the columns to read (None: all, by position), chosen from its footer: a few
    KB of Parquet can declare millions of rows or thousands of columns, and nothing is decoded
    before the size the footer declares is within `limits`."""
    try:
        parquet = pq.ParquetFile(pa.BufferReader(body))
        metadata = parquet.metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadRequestError(f"the body is not a Parquet file: {exc}") from None
    names = parquet.schema_arrow.names
    if set(features) <= set(names):
        columns: list[str] | None = list(features)
    elif len(names) != len(features):
        raise BadRequestError(f"the Parquet file has {len(names)} columns, {expects(features)}")
    else:
        columns = None
    declared = max(
        metadata.num_rows, sum(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    )
    if limits is not None:
        limits.check_decoded_size(declared, len(features))
    return parquet, columns


def decode_parquet(
    body: bytes, features: Sequence[str], *, limits: ContentTypeRegistry | None = None
) -> pd.DataFrame:
    """A Parquet file: columns matched by name when they are the model's features, else by
    position; only those columns are decoded, and only once the footer's size fits `limits`."""
    parquet, columns = _parquet_columns(body, features, limits)
    try:
        table = parquet.read(columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadRequestError(f"the body is not a Parquet file: {exc}") from None
    if limits is not None:  # what was decoded, in case the footer understated it
        limits.check_decoded_size(table.num_rows, len(features))
    if table.num_rows == 0:
        raise BadRequestError("the request holds no rows")
    categorical = getattr(features, "categories", None) or {}
    decoded: dict[str, Any] = {}
    for name, column in zip(features, table.columns, strict=True):
        kind = column.type
        if name in categorical:
            decoded[name] = column.to_pandas().astype(object)
            continue
        if not (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_null(kind)
            or pa.types.is_boolean(kind)
        ):
            raise BadRequestError(f"Parquet column for feature '{name}' holds {kind}, not numbers")
        decoded[name] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if not categorical:
        return feature_table(checked_finite(np.column_stack(list(decoded.values())), features), features)
    return pd.DataFrame(decoded, columns=feature_columns(tuple(features)))


def decode_recordio(
    body: bytes, features: Sequence[str], *, limits: ContentTypeRegistry | None = None
) -> pd.DataFrame:
    """RecordIO-protobuf records (the SDK's RecordSerializer), one row each: dense tensors of the
    model's width, or sparse ones no wider, their unmentioned positions missing; labels ignored.
    The records' declared size is checked against `limits` before the matrix is made."""
    cells = None
    if limits is not None and limits.max_decoded_bytes is not None:
        cells = limits.max_decoded_bytes // DECODED_CELL_BYTES
    try:
        rows = decode_rows(body, cells)
    except RecordIOError as exc:
        raise BadRequestError(f"the body is not valid RecordIO-protobuf: {exc}") from None
    matrix = rows.features
    if matrix.shape[1] > len(features) or (matrix.shape[1] < len(features) and not rows.sparse):
        raise BadRequestError(f"the records have {matrix.shape[1]} values, {expects(features)}")
    if limits is not None:
        limits.check_decoded_size(matrix.shape[0], len(features))
    if matrix.shape[1] < len(features):  # sparse records narrower than the model: the rest is missing
        matrix = np.hstack([matrix, np.full((matrix.shape[0], len(features) - matrix.shape[1]), np.nan)])
    return feature_table(checked_finite(matrix, features), features)
