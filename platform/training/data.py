"""Read a training channel (every file under its folder) into features, labels and weights.

Formats (CSV, libsvm, Parquet, JSON Lines) are read by formats.py; this module finds the files,
checks that they agree, and picks the label. Two conventions, chosen by the `target` hyperparameter:
- `target` set: the label is the column of that name (CSV files then have a header row: the R
  blog's way);
- `target` absent: the label is the first column (SageMaker's built-in algorithms' way); CSV files
  have no header unless the ContentType says `header=present`. A header row found in header-less
  CSV is reported, never trained on as data.
Files may be gzipped (detected by content, not name) and nested in folders; names starting with
`.` or `_` are skipped, as SageMaker's own algorithms do.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import gzip
import io
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ..errors import DataError
from ..files import describe_kind
from ..memory import MemoryGuard
from . import formats
from .formats import is_gzip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChannelTable:
    """One channel's rows: features (columns named), raw labels, optional weights, the files they
    came from and their format (see formats.py)."""

    features: pd.DataFrame
    labels: pd.Series
    files: list[Path]
    weights: pd.Series | None = None
    format: str = "csv"


def channel_files(channel_dir: Path) -> list[Path]:
    """Every data file under `channel_dir`, nested ones and linked folders included, in a stable
    order. Only regular files are data: a FIFO would block the reader, a device be read without
    end. Entries that are skipped for that (or are dangling links, or links that lead back to a
    folder already read) are named in the log; names starting with `.` or `_` are skipped
    quietly, as SageMaker's own algorithms do."""
    files: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def walk(folder: Path) -> None:
        status = folder.stat()
        if (status.st_dev, status.st_ino) in seen:
            log.warning("%s leads back to a folder already read (a link loop): skipped", folder)
            return
        seen.add((status.st_dev, status.st_ino))
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.name.startswith((".", "_")):
                continue
            path = Path(entry.path)
            try:
                mode = path.stat().st_mode  # through links
            except FileNotFoundError:
                log.warning("%s is a link to nothing: skipped", path)
                continue
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    log.warning("%s is a link that leads back to itself: skipped", path)
                else:
                    log.warning("%s cannot be read (%s): skipped", path, exc.strerror)
                continue
            if stat.S_ISDIR(mode):
                walk(path)
            elif stat.S_ISREG(mode):
                files.append(path)
            else:
                log.warning("%s is %s, not a regular file: skipped", path, describe_kind(mode))

    walk(channel_dir)
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


def _open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    if is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return path.open("r", encoding=encoding, newline="")


def _first_rows(path: Path, count: int, encoding: str = "utf-8") -> list[list[str]]:
    rows = []
    try:
        with _open_text(path, encoding) as handle:
            for row in csv.reader(handle):
                if row:
                    rows.append(row)
                if len(rows) == count:
                    break
    except (UnicodeDecodeError, LookupError, OSError, csv.Error) as exc:
        raise DataError(f"{path} cannot be read as {encoding} CSV text: {exc}") from None
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


def _read_csv(
    path: Path,
    *,
    header: bool,
    encoding: str,
    label: str | None,
    first_row: list[str],
    feature_type: pa.DataType,
    guard: MemoryGuard | None,
) -> pa.Table:
    try:
        return formats.read_csv(
            path,
            header=header,
            encoding=encoding,
            label=label,
            first_row=first_row,
            feature_type=feature_type,
            guard=guard,
        )
    except pa.ArrowInvalid as exc:
        first = _first_rows(path, 1)
        if first and "Expected" in str(exc):
            raise DataError(f"{path} is not valid CSV: {_bad_row_location(path, len(first[0]))}") from None
        raise DataError(f"{path} is not valid CSV: {exc}") from None


def _is_numeric(column: pa.ChunkedArray) -> bool:
    kind = column.type
    return (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_null(kind)
        or (pa.types.is_boolean(kind))
    )


def _check_numeric_features(table: pa.Table, feature_names: list[str], path: Path) -> None:
    """Numbers, or text (a categorical feature); nothing else (dates, lists, ...)."""
    for name in feature_names:
        column = table.column(name)
        if _is_numeric(column) or formats.is_text(column.type):
            continue
        values = column.to_pylist()
        bad = next(((i, v) for i, v in enumerate(values) if v is not None and not _is_number(str(v))), None)
        where = f": row {bad[0] + 1} holds {bad[1]!r}" if bad else ""
        raise DataError(
            f"feature column '{name}' in {path} is not numeric{where}. Features must be numbers "
            "(empty cells are missing values)"
        )


def _csv_header(spec: formats.FormatSpec | None, target: str | None, channel: str) -> bool:
    """Whether CSV files have a header row: as the ContentType says, else when `target` is set."""
    header = spec.header if spec is not None else None
    if header is False and target is not None:
        raise DataError(
            f"channel '{channel}' says header=absent, but the 'target' hyperparameter names a "
            "column: remove 'target' (the label is then the first column) or send header=present"
        )
    return target is not None if header is None else header


def _read_file(
    path: Path,
    fmt: str,
    spec: formats.FormatSpec | None,
    header: bool,
    target: str | None,
    feature_type: pa.DataType,
    guard: MemoryGuard | None,
) -> pa.Table | None:
    """One file as a table, or None when it holds nothing."""
    if fmt == formats.CSV:
        encoding = spec.encoding if spec else "utf-8"
        head = _first_rows(path, 2, encoding)
        if not head:
            return None
        if not header and _looks_like_header(head):
            first = ", ".join(head[0])
            raise DataError(
                f"{path} starts with a header row ({first[:200]}), but without the 'target' "
                "hyperparameter files must have no header and the label in the first column. "
                "Set target=<label column name> to use the header, send the channel as "
                "text/csv;header=present, or remove the header row"
            )
        if target is not None and target not in head[0]:
            raise DataError(
                f"target column '{target}' is not in {path}; its columns are: {', '.join(head[0])}"
            )
        return _read_csv(
            path,
            header=header,
            encoding=encoding,
            label=target,
            first_row=head[0],
            feature_type=feature_type,
            guard=guard,
        )
    if path.stat().st_size == 0:
        return None
    if fmt == formats.LIBSVM:
        return formats.read_libsvm(path, feature_type, guard)
    if fmt == formats.PARQUET:
        return formats.read_parquet(path, guard)
    table = formats.read_jsonlines(path, guard)
    if guard is not None:
        guard.charge(table.nbytes, str(path))
    return table


def _check_categorical(values: pd.Series, name: str, channel: str) -> None:
    """A text column is categorical, unless it is mostly numbers: then its text is a mistake."""
    present = values.dropna()
    present = present[present.str.strip() != ""]
    numeric = pd.to_numeric(present, errors="coerce").notna()
    if len(present) and numeric.mean() >= 0.5:
        row = int(numeric.to_numpy().argmin())
        raise DataError(
            f"feature column '{name}' in the '{channel}' channel is not numeric: it holds "
            f"{present.iloc[row]!r} among numbers. Features must be numbers (empty cells are "
            "missing values) or text categories"
        )


def read_channel(
    channel_dir: Path,
    *,
    channel: str,
    target: str | None,
    content_type: str | None = None,
    csv_weights: bool = False,
    feature_dtype: str = "float64",
    guard: MemoryGuard | None = None,
) -> ChannelTable:
    """Read every file of one channel. Raises DataError naming the file and row at fault, and
    DataTooLargeError once what is read passes `guard` (the job's memory for its data).

    With `csv_weights` the column after the label holds each row's weight (SageMaker's built-in
    XGBoost convention). CSV and libsvm features are read as `feature_dtype`."""
    spec = formats.FormatSpec.from_content_type(content_type, channel) if content_type else None
    if not channel_dir.is_dir():
        raise DataError(
            f"the '{channel}' channel is missing: no folder {channel_dir}. Pass it to fit(), "
            f"e.g. estimator.fit({{'{channel}': 's3://bucket/prefix'}})"
        )
    files = channel_files(channel_dir)
    if not files:
        raise DataError(f"the '{channel}' channel holds no data files (looked in {channel_dir})")
    header = _csv_header(spec, target, channel)

    read: list[tuple[Path, str, pa.Table]] = []
    for path in files:
        before = _signature(path)
        fmt = spec.name if spec is not None else formats.detect_format(path)
        table = _read_file(path, fmt, spec, header, target, pa.from_numpy_dtype(feature_dtype), guard)
        _check_unchanged(path, before)
        if table is None or table.num_rows == 0:
            log.warning("%s holds no rows; skipped", path)
            continue
        read.append((path, fmt, table))
    if not read:
        raise DataError(f"the '{channel}' channel holds no rows (files: {', '.join(map(str, files))})")
    fmt = read[0][1]
    for path, other, _ in read:
        if other != fmt:
            raise DataError(
                f"{path} holds {other} data but {read[0][0]} holds {fmt}; a channel holds one "
                "format (or give the channel a ContentType)"
            )
    if fmt == formats.LIBSVM:
        width = max(t.num_columns for _, _, t in read) - 1
        read = [(p, f, formats.pad_columns(t, formats.libsvm_columns(width))) for p, f, t in read]
    return _combine(
        read,
        channel=channel,
        target=target,
        fmt=fmt,
        header=header,
        csv_weights=csv_weights,
        source=spec.source if spec else "detected",
    )


def _combine(
    read: list[tuple[Path, str, pa.Table]],
    *,
    channel: str,
    target: str | None,
    fmt: str,
    header: bool,
    csv_weights: bool,
    source: str,
) -> ChannelTable:
    first_path, _, first = read[0]
    columns = first.column_names
    if target is not None and target not in columns:
        raise DataError(
            f"target column '{target}' is not in {first_path}; its columns are: {', '.join(columns)}"
        )
    label_name = target if target is not None else columns[0]
    weight_name = None
    if csv_weights:
        if target is not None or fmt != formats.CSV:
            raise DataError(
                "csv_weights=1 reads weights from the second column of label-first CSV "
                "files; remove 'target' or csv_weights"
            )
        if len(columns) < 3:
            raise DataError(f"{first_path}: csv_weights=1 needs a label, a weight and features")
        weight_name = columns[1]
    if len(columns) < 2:
        raise DataError(f"{first_path} has {len(columns)} column; a label and features are needed")
    feature_names = [c for c in columns if c not in (label_name, weight_name)]
    for path, _, table in read:
        if table.column_names != columns:
            raise DataError(
                f"{path} has columns ({', '.join(table.column_names)}) that differ from "
                f"{first_path} ({', '.join(columns)}); every file of a channel needs the same columns"
            )
        _check_numeric_features(table, feature_names + ([weight_name] if weight_name else []), path)
    combined = pa.concat_tables([t for _, _, t in read], promote_options="permissive")
    for name in feature_names:
        if formats.is_text(combined.column(name).type):
            _check_categorical(combined.column(name).to_pandas(), name, channel)
    labels = combined.column(label_name).to_pandas()
    weights = combined.column(weight_name).to_pandas() if weight_name else None
    # One block per column: no consolidation copy of the whole table.
    features = combined.select(feature_names).to_pandas(split_blocks=True)
    if fmt == formats.CSV and not header:
        features.columns = [f"f{i}" for i in range(features.shape[1])]
    missing = int(labels.isna().sum())
    if missing:
        raise DataError(f"the '{channel}' channel has {missing} row(s) with no label")
    if weights is not None and (weights.isna().any() or (weights < 0).any()):
        raise DataError(f"the '{channel}' channel has missing or negative weights (csv_weights=1)")
    layout = {
        formats.CSV: f"header row, label '{label_name}'"
        if header
        else "no header, label in the first column",
        formats.LIBSVM: formats.LIBSVM_INDEX_NOTE.split(",")[0],
    }.get(fmt, f"label '{label_name}'")
    log.info(
        "channel '%s': %d rows, %d features from %d file(s) (%s %s, %s%s)",
        channel,
        len(features),
        features.shape[1],
        len(read),
        fmt,
        "from the ContentType" if source == "ContentType" else "detected from the files",
        layout,
        ", weights in the second column" if weight_name else "",
    )
    return ChannelTable(features, labels, [p for p, _, _ in read], weights, fmt)


def align_libsvm_widths(train: ChannelTable, validation: ChannelTable) -> tuple[ChannelTable, ChannelTable]:
    """libsvm channels may mention different highest indices: both get the widest set of columns,
    the features one never mentions being missing values."""
    if train.format != formats.LIBSVM or validation.format != formats.LIBSVM:
        return train, validation
    width = max(train.features.shape[1], validation.features.shape[1])
    names = [f"f{i}" for i in range(width)]
    return (
        dataclasses.replace(train, features=train.features.reindex(columns=names)),
        dataclasses.replace(validation, features=validation.features.reindex(columns=names)),
    )
