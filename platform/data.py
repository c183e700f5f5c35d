"""Read a training channel (every CSV file under its folder) into features and labels.

Two conventions, chosen by the `target` hyperparameter:
- `target` set: every file has a header row and the label is the column of that name (the R blog's way);
- `target` absent: no header, label in the first column (SageMaker's built-in algorithms' way). A
  header row found in that case is reported, never trained on as data.
Files may be gzipped (detected by content, not name) and nested in folders; names starting with
`.` or `_` are skipped, as SageMaker's own algorithms do.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from .errors import DataError

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
CSV_CONTENT_TYPES = {"text/csv", "text/x-csv", "application/csv"}


@dataclass(frozen=True)
class ChannelTable:
    """One channel's rows: features (columns named), raw labels, and the files they came from."""

    features: pd.DataFrame
    labels: pd.Series
    files: list[Path]


def channel_files(channel_dir: Path) -> list[Path]:
    """Every data file under `channel_dir`, nested ones included, in a stable order."""
    files = []
    for path in sorted(channel_dir.rglob("*")):
        relative = path.relative_to(channel_dir)
        if any(part.startswith((".", "_")) for part in relative.parts):
            continue
        if path.is_file():
            files.append(path)
    return files


def _signature(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


def _check_unchanged(path: Path, before: tuple[int, int]) -> None:
    """A file written to while we read it would train on a mix of old and new rows."""
    after = _signature(path)
    if after != before:
        raise DataError(
            f"{path} changed while it was being read (size {before[0]} -> {after[0]} bytes); "
            "something is still writing to the channel. Start training once the data is complete"
        )


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def _open_text(path: Path) -> io.TextIOBase:
    if _is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _first_rows(path: Path, count: int) -> list[list[str]]:
    rows = []
    try:
        with _open_text(path) as handle:
            for row in csv.reader(handle):
                if row:
                    rows.append(row)
                if len(rows) == count:
                    break
    except (UnicodeDecodeError, OSError, csv.Error) as exc:
        raise DataError(f"{path} cannot be read as CSV text: {exc}") from None
    return rows


def _is_number(text: str) -> bool:
    text = text.strip()
    if text == "":
        return True  # a missing value
    try:
        float(text)
    except ValueError:
        return False
    return True


def _looks_like_header(rows: list[list[str]]) -> bool:
    """True when the first row has text where the second row has numbers."""
    if len(rows) < 2:
        return len(rows) == 1 and not any(_is_number(cell) for cell in rows[0][1:])
    first, second = rows[0], rows[1]
    return any(
        not _is_number(a) and _is_number(b) and b.strip() != "" for a, b in zip(first, second, strict=False)
    )


def _bad_row_location(path: Path, expected: int) -> str:
    """Find the first row whose field count differs, to name it in the error (error path only)."""
    with _open_text(path) as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if row and len(row) != expected:
                return f"line {number} has {len(row)} values where the first line has {expected}"
    return "its rows do not all have the same number of values"


def _read_table(path: Path, *, header: bool) -> pa.Table:
    stream = pa.input_stream(str(path), compression="gzip" if _is_gzip(path) else None)
    read_options = pacsv.ReadOptions(autogenerate_column_names=not header)
    try:
        return pacsv.read_csv(stream, read_options=read_options)
    except pa.ArrowInvalid as exc:
        first = _first_rows(path, 1)
        if first and "Expected" in str(exc):
            raise DataError(f"{path} is not valid CSV: {_bad_row_location(path, len(first[0]))}") from None
        raise DataError(f"{path} is not valid CSV: {exc}") from None


def _is_numeric(column: pa.ChunkedArray) -> bool:
    kind = column.type
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind) or (
        pa.types.is_boolean(kind)
    )


def _check_numeric_features(table: pa.Table, feature_names: list[str], path: Path) -> None:
    for name in feature_names:
        column = table.column(name)
        if _is_numeric(column):
            continue
        values = column.to_pylist()
        bad = next(((i, v) for i, v in enumerate(values) if v is not None and not _is_number(str(v))), None)
        where = f": row {bad[0] + 1} holds {bad[1]!r}" if bad else ""
        raise DataError(
            f"feature column '{name}' in {path} is not numeric{where}. Features must be numbers "
            "(empty cells are missing values)"
        )


def read_channel(
    channel_dir: Path, *, channel: str, target: str | None, content_type: str | None = None
) -> ChannelTable:
    """Read every file of one channel. Raises DataError naming the file and row at fault."""
    if content_type:
        media_type = content_type.split(";")[0].strip().lower()
        if media_type not in CSV_CONTENT_TYPES:
            raise DataError(
                f"channel '{channel}' has ContentType '{content_type}'; sagecraft reads "
                f"{', '.join(sorted(CSV_CONTENT_TYPES))} training data"
            )
    if not channel_dir.is_dir():
        raise DataError(
            f"the '{channel}' channel is missing: no folder {channel_dir}. Pass it to fit(), "
            f"e.g. estimator.fit({{'{channel}': 's3://bucket/prefix'}})"
        )
    files = channel_files(channel_dir)
    if not files:
        raise DataError(f"the '{channel}' channel holds no data files (looked in {channel_dir})")

    tables: list[pa.Table] = []
    columns: list[str] | None = None
    for path in files:
        before = _signature(path)
        head = _first_rows(path, 2)
        if not head:
            log.warning("%s is empty; skipped", path)
            continue
        if target is None and _looks_like_header(head):
            first = ", ".join(_first_rows(path, 1)[0])
            raise DataError(
                f"{path} starts with a header row ({first[:200]}), but without the 'target' "
                "hyperparameter files must have no header and the label in the first column. "
                "Set target=<label column name> to use the header, or remove the header row"
            )
        table = _read_table(path, header=target is not None)
        _check_unchanged(path, before)
        if table.num_rows == 0:
            log.warning("%s holds no rows; skipped", path)
            continue
        if columns is None:
            columns = table.column_names
            if target is not None and target not in columns:
                raise DataError(
                    f"target column '{target}' is not in {path}; its columns are: {', '.join(columns)}"
                )
            if len(columns) < 2:
                raise DataError(f"{path} has {len(columns)} column; a label and features are needed")
        elif table.column_names != columns:
            raise DataError(
                f"{path} has columns ({', '.join(table.column_names)}) that differ from "
                f"{files[0]} ({', '.join(columns)}); every file of a channel needs the same columns"
            )
        label_name = target if target is not None else columns[0]
        _check_numeric_features(table, [c for c in columns if c != label_name], path)
        tables.append(table)

    if not tables or columns is None:
        raise DataError(f"the '{channel}' channel holds no rows (files: {', '.join(map(str, files))})")
    combined = pa.concat_tables(tables, promote_options="permissive")
    label_name = target if target is not None else columns[0]
    labels = combined.column(label_name).to_pandas()
    features = combined.drop_columns([label_name]).to_pandas()
    if target is None:
        features.columns = [f"f{i}" for i in range(features.shape[1])]
    missing = int(labels.isna().sum())
    if missing:
        raise DataError(f"the '{channel}' channel has {missing} row(s) with no label")
    log.info(
        "channel '%s': %d rows, %d features from %d file(s) (CSV, %s)",
        channel, len(features), features.shape[1], len(tables),
        f"header row, target '{target}'" if target else "no header, label in the first column",
    )
    return ChannelTable(features, labels, files)
