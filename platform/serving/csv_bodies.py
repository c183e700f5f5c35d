"""CSV request bodies: a fast reader for a few rows of plain numbers, pyarrow for large bodies, and
Python's csv module for everything else (quotes, text categories, empty cells, a header row)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from ..content_registry import SMALL_BODY_BYTES
from ..errors import BadRequestError
from .tables import body_text, feature_table, finite_rows, rows_table

# Bodies above this size are parsed by pyarrow's multi-threaded reader; smaller ones by Python,
# which starts faster.
LARGE_CSV_BYTES = 256 * 1024


def _literal_newlines(text: str) -> str:
    """A shell passes `--body "1,2\\n3,4"` with a literal backslash-n, which no number contains:
    read as a row separator, but only outside quoted cells (a category may be `C:\\new`)."""
    if "\\n" not in text:
        return text
    pieces = text.split('"')
    # Even pieces lie outside quotes (a doubled quote inside a cell makes an empty odd piece).
    return '"'.join(p.replace("\\n", "\n") if i % 2 == 0 else p for i, p in enumerate(pieces))


DELIMITERS = ",\t;|"


def delimiter(head: str, width: int) -> str:
    """The body's delimiter, sniffed from its first line as SageMaker's built-in XGBoost does:
    a comma, unless the line holds exactly `width - 1` tabs, semicolons or pipes and too few commas."""
    line = head.split("\n", 1)[0]
    if width <= 1 or line.count(",") >= width - 1:
        return ","
    return next((d for d in DELIMITERS[1:] if line.count(d) == width - 1), ",")


def _csv_rows(text: str, first_row: int, width: int) -> list[list[str]]:
    text = _literal_newlines(text).strip("\r\n")
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter(text[:4096], width))) if text else []
    except csv.Error as exc:
        raise BadRequestError(f"the body is not valid CSV: {exc}") from None
    for index, row in enumerate(rows, start=first_row):
        if not row and width == 1:
            row.append("")  # an empty line is the one empty field of a one-feature row
        # A row of empty fields is a row of missing values; an empty line inside a batch is an
        # error (dropping it would shift every answer after it).
        if not row or (not any(cell.strip() for cell in row) and len(row) != width):
            raise BadRequestError(f"row {index} is empty")
    return rows


def _decode_large_csv(body: bytes, features: Sequence[str]) -> pd.DataFrame | None:
    """pyarrow's reader for big bodies; None to fall back to the exact (slower) Python path."""
    if getattr(features, "categories", None):
        return None
    options = pacsv.ConvertOptions(column_types={f"f{i}": pa.float64() for i in range(len(features))})
    separator = delimiter(body[:4096].decode("utf-8", "replace"), len(features))
    try:
        table = pacsv.read_csv(
            io.BytesIO(body),
            read_options=pacsv.ReadOptions(autogenerate_column_names=True, column_names=None),
            parse_options=pacsv.ParseOptions(delimiter=separator, ignore_empty_lines=False),
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
    return finite_rows(numbers, features)


def decode_csv(body: bytes, features: Sequence[str], first_row: int = 1) -> pd.DataFrame:
    if first_row == 1:
        numbers = read_csv_numbers(body, features)
        if numbers is not None:
            return feature_table(np.array(numbers, dtype=np.float64), features)
    if len(body) > LARGE_CSV_BYTES and b"\\n" not in body[:4096]:
        frame = _decode_large_csv(body.rstrip(b"\r\n"), features)
        if frame is not None:
            return frame
    rows = _csv_rows(body_text(body), first_row, len(features))
    if first_row == 1 and rows and [c.strip() for c in rows[0]] == list(features):
        rows = rows[1:]  # a header row naming exactly the model's features
    return rows_table(rows, features, first_row)
