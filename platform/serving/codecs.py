"""The built-in codecs: CSV, JSON, JSON Lines, NPY, libsvm and Parquet bodies to feature tables,
predictions back (in all but libsvm and Parquet).

Decoders name the row and column at fault in a BadRequestError; they never guess missing columns.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..content_registry import ContentTypeRegistry
from ..errors import BadRequestError, NotAcceptableError
from ..hooks import hookimpl
from ..media_types import CSV, JSON, JSONLINES, LIBSVM, NPY, PARQUET

# Bodies above this size are parsed by pyarrow's multi-threaded reader; smaller ones by Python,
# which starts faster.
LARGE_CSV_BYTES = 256 * 1024
SMALL_BODY_BYTES = 16 * 1024  # up to this size, plain numbers take the fast path


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"the body is not UTF-8 text (byte {exc.start})") from None


def _expects(features: Sequence[str]) -> str:
    names = ", ".join(features[:20]) + (", ..." if len(features) > 20 else "")
    return f"the model expects {len(features)}: {names}"


def _number(value: Any, row: int, column: int, features: Sequence[str]) -> float:
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
def _columns(features: tuple[str, ...]) -> pd.Index:
    """The column index for a model's features, built once: building it costs more than a row."""
    return pd.Index(features, dtype=object)


def feature_table(matrix: np.ndarray, features: Sequence[str]) -> pd.DataFrame:
    """A float matrix as the feature table hooks receive, without copying it."""
    return pd.DataFrame(matrix, columns=_columns(tuple(features)), copy=False)


def _frame(rows: Sequence[Sequence[Any]], features: Sequence[str], first_row: int = 1) -> pd.DataFrame:
    """Rows of cells (numbers or text) to a float table, or a message naming the bad cell.

    `first_row` is the number the first row has in the request, for messages.
    """
    if not rows:
        raise BadRequestError("the request holds no rows")
    for index, row in enumerate(rows, start=first_row):
        if len(row) != len(features):
            raise BadRequestError(f"row {index} has {len(row)} values, {_expects(features)}")
    if getattr(features, "categories", None):
        return _mixed_frame(rows, features, first_row)
    try:
        matrix = np.array(rows, dtype=np.float64)
    except (ValueError, TypeError):
        matrix = None
    if matrix is None or matrix.ndim != 2:  # (cells that are lists make a deeper array)
        matrix = np.array(
            [
                [_number(v, r, c, features) for c, v in enumerate(row, 1)]
                for r, row in enumerate(rows, first_row)
            ],
            dtype=np.float64,
        )
    return feature_table(_checked_finite(matrix, features, first_row), features)


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
            columns[name] = [_number(v, r, index + 1, features) for r, v in enumerate(cells, first_row)]
    return pd.DataFrame(columns, columns=_columns(tuple(features)))


def _checked_finite(matrix: np.ndarray, features: Sequence[str], first_row: int = 1) -> np.ndarray:
    if np.isinf(matrix).any():
        row, column = map(int, np.argwhere(np.isinf(matrix))[0])
        _number(matrix[row, column], row + first_row, column + 1, features)
    return matrix


# --- decoders --------------------------------------------------------------------------------


def _literal_newlines(text: str) -> str:
    """A shell passes `--body "1,2\\n3,4"` with a literal backslash-n, which no number contains:
    read as a row separator, but only outside quoted cells (a category may be `C:\\new`)."""
    if "\\n" not in text:
        return text
    pieces = text.split('"')
    # Even pieces lie outside quotes (a doubled quote inside a cell makes an empty odd piece).
    return '"'.join(p.replace("\\n", "\n") if i % 2 == 0 else p for i, p in enumerate(pieces))


def _csv_rows(text: str, first_row: int) -> list[list[str]]:
    text = _literal_newlines(text).strip("\r\n")
    try:
        rows = list(csv.reader(io.StringIO(text))) if text else []
    except csv.Error as exc:
        raise BadRequestError(f"the body is not valid CSV: {exc}") from None
    for index, row in enumerate(rows, start=first_row):
        # An empty line inside a batch is a record too: dropping it would shift every answer.
        if not any(cell.strip() for cell in row):
            raise BadRequestError(f"row {index} is empty")
    return rows


def _decode_large_csv(body: bytes, features: Sequence[str]) -> pd.DataFrame | None:
    """pyarrow's reader for big bodies; None to fall back to the exact (slower) Python path."""
    if getattr(features, "categories", None):
        return None
    options = pacsv.ConvertOptions(column_types={f"f{i}": pa.float64() for i in range(len(features))})
    try:
        table = pacsv.read_csv(
            io.BytesIO(body),
            read_options=pacsv.ReadOptions(autogenerate_column_names=True, column_names=None),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
            convert_options=options,
        )
    except pa.ArrowInvalid:
        return None
    if table.num_columns != len(features):
        return None
    matrix = np.column_stack([c.to_numpy() for c in table.columns])
    if np.isinf(matrix).any():
        return None
    return feature_table(matrix, features)


def read_csv_numbers(body: bytes, features: Sequence[str]) -> list[list[float]] | None:
    """A small body of a few rows of plain numbers as lists of floats, split and converted without
    the csv module, text decoding or numpy (numpy's per-call cost, with the caches cold from
    serving, was most of this reader's); None for anything else (quotes, empty cells, text, a
    wrong count, a possible header, infinities), which decode_csv reads or explains."""
    if (
        len(body) > SMALL_BODY_BYTES
        or b'"' in body
        or b"\\n" in body
        or getattr(features, "categories", None)
    ):
        return None
    rows = [line.split(b",") for line in body.strip(b"\r\n").split(b"\n")]
    width = len(features)
    if any(len(row) != width for row in rows) or rows[0][0].strip() == features[0].encode():
        return None
    try:
        numbers = [list(map(float, row)) for row in rows]  # numpy too reads bytes with float()
    except ValueError:
        return None
    return _finite(numbers, features)


def _finite(rows: list[list[float]], features: Sequence[str]) -> list[list[float]] | None:
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


def decode_csv(body: bytes, features: Sequence[str], first_row: int = 1) -> pd.DataFrame:
    if first_row == 1:
        numbers = read_csv_numbers(body, features)
        if numbers is not None:
            return feature_table(np.array(numbers, dtype=np.float64), features)
    if len(body) > LARGE_CSV_BYTES and b"\\n" not in body[:4096]:
        frame = _decode_large_csv(body.rstrip(b"\r\n"), features)
        if frame is not None:
            return frame
    rows = _csv_rows(_text(body), first_row)
    if first_row == 1 and rows and [c.strip() for c in rows[0]] == list(features):
        rows = rows[1:]  # a header row naming exactly the model's features
    return _frame(rows, features, first_row)


def _json_row(item: Any, index: int, features: Sequence[str]) -> Sequence[Any]:
    if isinstance(item, list):
        return item
    if isinstance(item, dict):
        if "features" in item and isinstance(item["features"], list):
            return item["features"]
        unknown = [k for k in item if k not in features]
        if unknown:
            raise BadRequestError(f"record {index} has unknown feature '{unknown[0]}'; {_expects(features)}")
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
    return _frame([_json_row(item, i, features) for i, item in enumerate(instances, 1)], features)


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
        return _finite([list(map(float, row)) for row in rows], features)  # as numpy converts
    except (TypeError, ValueError, OverflowError):
        pass
    try:  # nulls (missing values) and the like: numpy converts them as _frame does
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
    return _frame(rows, features, first_row)


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
        raise BadRequestError(f"the array has {matrix.shape[1]} columns, {_expects(features)}")
    return feature_table(_checked_finite(matrix, features), features)


def decode_libsvm(
    body: bytes, features: Sequence[str], first_row: int = 1, *, limits: ContentTypeRegistry | None = None
) -> pd.DataFrame:
    """`[label] index:value ...` per line; the index is the feature's column number, as in
    training (see formats.LIBSVM_INDEX_NOTE); a leading label is ignored, absent features are
    missing values. A line of two bytes is a row of every feature, so the matrix is checked
    against `limits` before it is made."""
    lines = _text(body).strip("\r\n").split("\n")
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
            index, _, value = token.partition(":")
            try:
                column, number_value = int(index), float(value)
            except ValueError:
                raise BadRequestError(f"row {number}: '{token[:40]}' is not index:value") from None
            if not 0 <= column < len(features):
                raise BadRequestError(
                    f"row {number}: index {column} is outside the model's {len(features)} "
                    "features (indices are column numbers from 0)"
                )
            matrix[row, column] = number_value
    return feature_table(_checked_finite(matrix, features, first_row), features)


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
        raise BadRequestError(f"the Parquet file has {len(names)} columns, {_expects(features)}")
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
    columns = {}
    for name, column in zip(features, table.columns, strict=True):
        kind = column.type
        if name in categorical:
            columns[name] = column.to_pandas().astype(object)
            continue
        if not (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_null(kind)
            or pa.types.is_boolean(kind)
        ):
            raise BadRequestError(f"Parquet column for feature '{name}' holds {kind}, not numbers")
        columns[name] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if not categorical:
        return feature_table(_checked_finite(np.column_stack(list(columns.values())), features), features)
    return pd.DataFrame(columns, columns=_columns(tuple(features)))


# --- encoders --------------------------------------------------------------------------------


def _is_numeric(predictions: np.ndarray) -> bool:
    return predictions.dtype.kind in "biuf"


def _record_cells(record: dict) -> list[Any]:
    """A multi-output record (see outputs.predict_output) as CSV cells, lists flattened."""
    cells: list[Any] = []
    for value in record.values():
        cells.extend(value if isinstance(value, list) else [value])
    return cells


def encode_csv(predictions: np.ndarray) -> bytes:
    if predictions.ndim == 1 and len(predictions) and isinstance(predictions[0], dict):
        predictions = np.array([_record_cells(r) for r in predictions], dtype=object)
    if _is_numeric(predictions):
        predictions = np.ascontiguousarray(predictions)  # orjson reads contiguous arrays only
        if predictions.ndim == 1:
            body = orjson.dumps(predictions, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
            return body.replace(b",", b"\n") + b"\n"
        rows = (orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1] for row in predictions)
        return b"\n".join(rows) + b"\n"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows([row] if predictions.ndim == 1 else row for row in predictions.tolist())
    return out.getvalue().encode("utf-8")


def _jsonable(predictions: np.ndarray) -> Any:
    # orjson serialises contiguous numeric arrays directly (a column slice is not contiguous).
    return np.ascontiguousarray(predictions) if _is_numeric(predictions) else predictions.tolist()


def encode_json(predictions: np.ndarray) -> bytes:
    return orjson.dumps({"predictions": _jsonable(predictions)}, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_jsonlines(predictions: np.ndarray) -> bytes:
    lines = [orjson.dumps(item, option=orjson.OPT_SERIALIZE_NUMPY) for item in _jsonable(predictions)]
    return b"\n".join(lines) + b"\n"


def encode_npy(predictions: np.ndarray) -> bytes:
    if predictions.ndim == 1 and len(predictions) and isinstance(predictions[0], dict):
        raise NotAcceptableError(
            "application/x-npy cannot hold several outputs per record; accept text/csv or application/json"
        )
    if predictions.dtype == object:
        predictions = predictions.astype(str)
    out = io.BytesIO()
    np.save(out, predictions, allow_pickle=False)
    return out.getvalue()


@hookimpl
def register_content_types(registry: ContentTypeRegistry) -> None:
    """The built-in content types, registered exactly as a plugin's would be."""
    # In order of preference: a wildcard Accept such as application/* picks the first that fits.
    registry.add_decoder(CSV, decode_csv, line_oriented=True, numbers=read_csv_numbers)
    registry.add_decoder(JSON, decode_json, numbers=read_json_numbers)
    registry.add_decoder(JSONLINES, decode_jsonlines, line_oriented=True)
    registry.add_decoder(NPY, decode_npy)
    registry.add_decoder(LIBSVM, functools.partial(decode_libsvm, limits=registry), line_oriented=True)
    registry.add_decoder(PARQUET, functools.partial(decode_parquet, limits=registry))
    registry.add_encoder(CSV, encode_csv, line_oriented=True)
    registry.add_encoder(JSON, encode_json)
    registry.add_encoder(JSONLINES, encode_jsonlines, line_oriented=True)
    registry.add_encoder(NPY, encode_npy)
