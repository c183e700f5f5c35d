"""Read a training channel (every file under its folder) into features, labels and weights.

Formats (CSV, libsvm, Parquet, JSON Lines, RecordIO-protobuf) are read by formats.py, the files
found by channel_files.py and combined by combine.py; this module reads each file as its format
says and decides how CSV files are laid out. Two conventions, chosen by the `target` hyperparameter:
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
import gzip
import io
import logging
from pathlib import Path

import pyarrow as pa

from ..errors import DataError
from ..media_types import CSV, LIBSVM, PARQUET, RECORDIO, short_name
from ..memory import MemoryGuard
from . import formats
from .channel_files import channel_files, check_unchanged, signature
from .combine import ChannelTable, ColumnRoles, ReadFile, check_files, combine, is_number
from .formats import is_gzip
from .sharding import SHARDED, Share

__all__ = ["ChannelTable", "align_widths", "channel_files", "read_channel", "read_share"]

log = logging.getLogger(__name__)

# Formats whose features are positions (`f0, f1, ...`), a file or channel as wide as its widest row.
POSITIONAL = (LIBSVM, RECORDIO)


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


def looks_like_header(rows: list[list[str]]) -> bool:
    """True when the first row has text where the second row has numbers."""
    if len(rows) < 2:
        return len(rows) == 1 and not any(is_number(cell) for cell in rows[0][1:])
    first, second = rows[0], rows[1]
    return any(
        not is_number(a) and is_number(b) and b.strip() != "" for a, b in zip(first, second, strict=False)
    )


def unexpected_header(where: str, first_row: list[str]) -> DataError:
    """The error for a header row in CSV read without one (the in-memory and streamed readers)."""
    shown = ", ".join(first_row)
    return DataError(
        f"{where} starts with a header row ({shown[:200]}), but without the 'target' "
        "hyperparameter files must have no header and the label in the first column. "
        "Set target=<label column name> to use the header, send the channel as "
        "text/csv;header=present, or remove the header row"
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


def csv_header(spec: formats.FormatSpec | None, target: str | None, channel: str) -> bool:
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
    if fmt == CSV:
        encoding = spec.encoding if spec else "utf-8"
        head = _first_rows(path, 2, encoding)
        if not head:
            return None
        if not header and looks_like_header(head):
            raise unexpected_header(str(path), head[0])
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
    if fmt == LIBSVM:
        return formats.read_libsvm(path, feature_type, guard)
    if fmt == RECORDIO:
        return formats.read_recordio(path, feature_type, guard)
    if fmt == PARQUET:
        return formats.read_parquet(path, guard)
    table = formats.read_jsonlines(path, guard)
    if guard is not None:
        guard.charge(table.nbytes, str(path))
    return table


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
    table = read_share(
        channel_dir,
        Share(0, 1),
        channel=channel,
        target=target,
        content_type=content_type,
        csv_weights=csv_weights,
        feature_dtype=feature_dtype,
        guard=guard,
    )
    assert table is not None  # one host has every row, or an error says why there is none
    return table


def read_share(
    channel_dir: Path,
    share: Share,
    *,
    channel: str,
    target: str | None,
    content_type: str | None = None,
    csv_weights: bool = False,
    feature_dtype: str = "float64",
    guard: MemoryGuard | None = None,
) -> ChannelTable | None:
    """This host's share of one channel (see sharding.py), as `read_channel` reads it; None
    when a host of a multi-host job has no rows of it (no files, or files without rows): the
    job's other hosts may have them."""
    spec = formats.FormatSpec.from_content_type(content_type, channel) if content_type else None
    alone = share.size == 1
    if not channel_dir.is_dir():
        if not alone and share.distribution == SHARDED:
            return None
        raise DataError(
            f"the '{channel}' channel is missing: no folder {channel_dir}. Pass it to fit(), "
            f"e.g. estimator.fit({{'{channel}': 's3://bucket/prefix'}})"
        )
    listed = channel_files(channel_dir)
    files = share.files(listed)
    if not files:
        if not alone and (listed or share.distribution == SHARDED):
            return None
        raise DataError(f"the '{channel}' channel holds no data files (looked in {channel_dir})")
    header = csv_header(spec, target, channel)

    read: list[ReadFile] = []
    for path in files:
        before = signature(path)
        fmt = spec.name if spec is not None else formats.detect_format(path)
        table = _read_file(path, fmt, spec, header, target, pa.from_numpy_dtype(feature_dtype), guard)
        check_unchanged(path, before)
        if table is None or table.num_rows == 0:
            log.warning("%s holds no rows; skipped", path)
            continue
        read.append(ReadFile(path, fmt, table))
    if not read:
        if not alone:
            return None
        raise DataError(f"the '{channel}' channel holds no rows (files: {', '.join(map(str, files))})")
    fmt = read[0].format
    for file in read:
        if file.format != fmt:
            raise DataError(
                f"{file.path} holds {short_name(file.format)} data but {read[0].path} holds "
                f"{short_name(fmt)}; a channel holds one format (or give the channel a ContentType)"
            )
    if fmt in POSITIONAL:
        width = max(formats.positional_width(file.table) for file in read)
        weighted = any(formats.WEIGHT in file.table.column_names for file in read)
        columns = formats.libsvm_columns(width, weighted)
        read = [ReadFile(f.path, f.format, formats.pad_columns(f.table, columns)) for f in read]
    roles = ColumnRoles.decide(read[0], target=target, header=header, csv_weights=csv_weights)
    check_files(read, roles)
    table = combine(read, roles, channel=channel)
    if share.splits_rows(len(listed)):
        rows = share.rows(len(table.features))
        table = dataclasses.replace(
            table,
            features=table.features.iloc[rows],
            labels=table.labels.iloc[rows],
            weights=None if table.weights is None else table.weights.iloc[rows],
        )
    log.info(
        "channel '%s'%s: %d rows, %d features from %d file(s) (%s %s, %s)",
        channel,
        share.describe(),
        len(table.features),
        table.features.shape[1],
        len(read),
        short_name(fmt),
        "from the ContentType" if spec is not None else "detected from the files",
        roles.describe(fmt, header),
    )
    return table if len(table.features) or alone else None


def align_widths(train: ChannelTable, validation: ChannelTable) -> tuple[ChannelTable, ChannelTable]:
    """libsvm and RecordIO channels may differ in width (their highest position): both get the
    widest set of columns, the features one never mentions being missing values."""
    if train.format not in POSITIONAL or validation.format not in POSITIONAL:
        return train, validation
    width = max(train.features.shape[1], validation.features.shape[1])
    names = [f"f{i}" for i in range(width)]
    return (
        dataclasses.replace(train, features=train.features.reindex(columns=names)),
        dataclasses.replace(validation, features=validation.features.reindex(columns=names)),
    )
