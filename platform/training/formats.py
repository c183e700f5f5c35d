"""Training file formats: which one a channel holds, and reading one file into an Arrow table.

The format comes from the channel's `ContentType` when SageMaker passes one (with parameters such
as `label_size=1`, `header=present` or `charset=latin-1`), otherwise from the file's first bytes.
Every reader is a compiled one (pyarrow's CSV, JSON and Parquet readers, scikit-learn's svmlight
parser); none loops over rows in Python. CSV and libsvm features are read as the type the
algorithm declares (`AlgorithmInfo.feature_dtype`). Tables come back with the label as a named column:
- CSV: with a header row, its names; without, `f0, f1, ...` with the label in `f0`;
- libsvm: `label, f0, f1, ...` where `fN` is the feature written `N:value` (see LIBSVM_INDEX_NOTE);
- Parquet and JSON Lines: the file's own column names.
"""

from __future__ import annotations

import gzip
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from .. import media_types
from ..errors import DataError
from ..media_types import CSV, JSONLINES, LIBSVM, PARQUET, RECORDIO
from ..memory import MemoryGuard
from ..recordio import RecordIOError, decode_rows, is_recordio

# The media types a training channel may hold (sagecraft.media_types resolves their aliases).
CHANNEL_TYPES = (CSV, LIBSVM, PARQUET, JSONLINES, RECORDIO)
# A libsvm row's weight, from its `label:weight` first token.
WEIGHT = "weight"
LIBSVM_INDEX_NOTE = (
    "libsvm indices are column numbers as written, the way XGBoost's own reader takes them: "
    "`3:0.5` is feature f3, and a file whose indices start at 1 leaves f0 empty (missing)"
)
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
# Arrow reads CSV in blocks of this size and we convert each block to float32 as it arrives, so
# the peak is the float32 table plus a few blocks, not a float64 copy of the whole file.
CSV_BLOCK_BYTES = 16 << 20
FLOAT64 = pa.float64()


@dataclass(frozen=True)
class FormatSpec:
    """A channel's format (a media type) and the options its ContentType gives."""

    name: str
    header: bool | None = None  # CSV: True/False when `header=present|absent` says so
    encoding: str = "utf-8"

    @classmethod
    def from_content_type(cls, content_type: str, channel: str) -> FormatSpec:
        """Parse e.g. `text/csv;label_size=1;header=present;charset=utf-8`."""
        parsed = media_types.parse(content_type)
        if parsed.name not in CHANNEL_TYPES:
            known = sorted(
                {*CHANNEL_TYPES, *(a for a, name in media_types.ALIASES.items() if name in CHANNEL_TYPES)}
            )
            raise DataError(
                f"channel '{channel}' has ContentType '{content_type}'; sagecraft reads {', '.join(known)}"
            )
        options = {key: value.lower() for key, value in parsed.parameters.items()}
        label_size = options.get("label_size", "1")
        if label_size != "1":
            raise DataError(
                f"channel '{channel}' has ContentType '{content_type}': training needs exactly one "
                "label column (label_size=1)"
            )
        header = {"present": True, "absent": False}.get(options.get("header", ""))
        if "header" in options and header is None:
            raise DataError(f"channel '{channel}': header must be 'present' or 'absent'")
        return cls(parsed.name, header, options.get("charset", "utf-8"))


def is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def _head(path: Path, size: int = 4096) -> bytes:
    opener = gzip.open if is_gzip(path) else open
    try:
        with opener(path, "rb") as handle:
            return handle.read(size)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} cannot be read: {exc}") from None


def detect_format(path: Path) -> str:
    """The format of a file with no ContentType to go by, from its first bytes."""
    return format_of_head(_head(path))


def format_of_head(head: bytes) -> str:
    """The format of data whose first (inflated) bytes are `head`."""
    if head.startswith(PARQUET_MAGIC):
        return PARQUET
    if is_recordio(head):
        return RECORDIO
    text = head.lstrip()
    if text.startswith(b"{"):
        return JSONLINES
    first_line = text.split(b"\n", 1)[0].strip()
    tokens = first_line.split()
    if len(tokens) >= 2 and b"," not in first_line and all(b":" in t for t in tokens[1:]):
        return LIBSVM
    return CSV


class _Bounded(io.RawIOBase):
    """A file's bytes (inflated when it is gzipped) that stop with DataTooLargeError past
    `limit`: what a reader which holds its input whole may take, whatever the file weighs."""

    def __init__(self, path: Path, guard: MemoryGuard) -> None:
        self.path = path
        self.guard = guard
        self.limit = guard.remaining()
        self.read_so_far = 0
        self.source = gzip.open(path, "rb") if is_gzip(path) else path.open("rb")  # noqa: SIM115

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self.source.readinto(buffer)
        self.read_so_far += count
        if self.read_so_far > self.limit:
            self.guard.charge(self.read_so_far, f"{self.path} (inflated)")
        return count

    def close(self) -> None:
        self.source.close()
        super().close()


def _bounded(path: Path, guard: MemoryGuard | None) -> IO[bytes]:
    """`path` opened for a reader that holds it whole: bounded by `guard` when there is one."""
    if guard is None:
        return cast(IO[bytes], gzip.open(path, "rb")) if is_gzip(path) else path.open("rb")
    return io.BufferedReader(_Bounded(path, guard), buffer_size=1 << 20)


def read_csv(
    path: Path,
    *,
    header: bool,
    first_row: list[str],
    encoding: str = "utf-8",
    label: str | None = None,
    feature_type: pa.DataType = FLOAT64,
    guard: MemoryGuard | None = None,
) -> pa.Table:
    """A CSV file, read a block at a time with feature columns parsed straight to `feature_type`
    (float32 for the tree plugins): the peak is about the final table, never a wider copy, and
    each block is charged to `guard` as it arrives (a gzip of millions of tiny rows stops there).
    The label column (`label`, else the first) keeps its type, so labels serve back as given.
    `first_row` is the file's first row (its header, when `header`)."""
    names = first_row if header else [f"f{i}" for i in range(len(first_row))]
    label_name = label if label is not None else names[0]
    stream = pa.input_stream(str(path), compression="gzip" if is_gzip(path) else None)
    # Smaller blocks when the budget is small, so that the blocks read ahead stay within it.
    block = CSV_BLOCK_BYTES if guard is None else max(1 << 20, min(CSV_BLOCK_BYTES, guard.remaining() // 16))
    read_options = pacsv.ReadOptions(
        autogenerate_column_names=not header, encoding=encoding, block_size=block
    )
    text = _text_columns(path, read_options)
    convert_options = pacsv.ConvertOptions(
        column_types={
            name: pa.string() if name in text else feature_type for name in names if name != label_name
        }
    )
    batches = []
    try:
        with pacsv.open_csv(stream, read_options=read_options, convert_options=convert_options) as reader:
            for batch in reader:
                if guard is not None:
                    guard.charge(batch.nbytes, str(path))
                batches.append(batch)
    except pa.ArrowInvalid as exc:
        conversion = CONVERSION_ERROR.search(str(exc))
        if conversion is None:
            raise
        column = names[int(conversion.group(1))] if int(conversion.group(1)) < len(names) else "?"
        raise DataError(
            f"feature column '{column}' in {path} is not numeric: it holds {conversion.group(2)}. "
            "Features must be numbers (empty cells are missing values)"
        ) from None
    if not batches:
        return pa.table({})
    return pa.Table.from_batches(batches)


def is_text(data_type: pa.DataType) -> bool:
    """A text column: a categorical feature when it is one (see categories.py)."""
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type)


def _text_columns(path: Path, read_options: pacsv.ReadOptions) -> set[str]:
    """Columns whose first block holds text: categorical features (see categories.py)."""
    stream = pa.input_stream(str(path), compression="gzip" if is_gzip(path) else None)
    with pacsv.open_csv(stream, read_options=read_options) as reader:
        schema = reader.schema
    return {f.name for f in schema if is_text(f.type)}


CONVERSION_ERROR = re.compile(
    r"In CSV column #(\d+): .*CSV conversion error to float: invalid value (.*)$", re.DOTALL
)


def read_libsvm(
    path: Path, feature_type: pa.DataType = FLOAT64, guard: MemoryGuard | None = None
) -> pa.Table:
    """`label idx:value ...` lines; absent features are missing values, as XGBoost reads them.
    The dense table is width x rows, the width set by the highest index: one line `1 3000000:1`
    makes three million features, so the size is charged to `guard` before it is made."""
    from sklearn.datasets import load_svmlight_file

    try:
        with _bounded(path, guard) as handle:
            matrix, labels = load_svmlight_file(handle, zero_based=True, dtype=feature_type.to_pandas_dtype())
    except (ValueError, OverflowError):  # (an index past int32: scikit-learn's overflow)
        # scikit-learn's parser takes neither `label:weight` nor `index:` with no value, which
        # SageMaker's built-in XGBoost reads (its own test data has both): read those in Python.
        with _bounded(path, guard) as handle:
            return _libsvm_lines(handle, str(path), feature_type, guard)
    except (EOFError, OSError) as exc:
        raise DataError(f"{path} is not valid libsvm text: {exc}") from None
    return _dense_table(matrix, labels, feature_type, str(path), guard)


def libsvm_table(data: bytes, where: str, feature_type: pa.DataType, guard: MemoryGuard) -> pa.Table:
    """libsvm lines held in memory (a chunk of a streamed channel) as `read_libsvm` reads a file,
    the dense rows x width charged to `guard` before the matrix is made."""
    from sklearn.datasets import load_svmlight_file

    try:
        matrix, labels = load_svmlight_file(
            io.BytesIO(data), zero_based=True, dtype=feature_type.to_pandas_dtype()
        )
    except (ValueError, OverflowError):
        return _libsvm_lines(io.BytesIO(data), where, feature_type, guard)
    return _dense_table(matrix, labels, feature_type, where, guard)


def _dense_table(
    matrix: Any, labels: np.ndarray, feature_type: pa.DataType, path: str, guard: MemoryGuard | None
) -> pa.Table:
    if guard is not None:
        rows, width = matrix.shape
        guard.charge(
            rows * width * feature_type.byte_width,
            f"{path}: {rows:,} rows of {width:,} features (its highest index is {width - 1:,})",
        )
    # Written entries (explicit zeros included) keep their value; absent ones are missing.
    dense = np.full(matrix.shape, np.nan, dtype=feature_type.to_pandas_dtype())
    written = matrix.tocoo()
    dense[written.row, written.col] = written.data
    arrays = [pa.array(labels), *(pa.array(dense[:, i]) for i in range(matrix.shape[1]))]
    return pa.Table.from_arrays(arrays, names=libsvm_columns(matrix.shape[1]))


def _libsvm_lines(
    handle: IO[bytes], path: str, feature_type: pa.DataType, guard: MemoryGuard | None
) -> pa.Table:
    """libsvm lines with `label:weight` first tokens (a `weight` column follows the label) and
    `index:` pairs without a value (missing values); DataError naming the line of anything else."""
    labels: list[float] = []
    weights: list[float] = []
    rows: list[int] = []
    columns: list[int] = []
    values: list[float] = []
    text = io.TextIOWrapper(handle, encoding="utf-8", errors="strict")
    try:
        for number, raw in enumerate(text, 1):
            line = raw.split("#", 1)[0].split()
            if not line:
                continue
            label, _, weight = line[0].partition(":")
            try:
                labels.append(float(label))
                weights.append(float(weight) if weight else 1.0)
            except ValueError:
                raise DataError(
                    f"{path} is not valid libsvm text: line {number}: {line[0][:40]!r} is not a label "
                    "(or label:weight)"
                ) from None
            for pair in line[1:]:
                index, colon, value = pair.partition(":")
                try:
                    column = int(index)
                    cell = float(value) if value else float("nan")
                except ValueError:
                    column = -1
                if not colon or column < 0:
                    raise DataError(
                        f"{path} is not valid libsvm text: line {number}: {pair[:40]!r} is not index:value"
                    ) from None
                rows.append(len(labels) - 1)
                columns.append(column)
                values.append(cell)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid libsvm text: {exc}") from None
    width = max(columns) + 1 if columns else 0
    if guard is not None:
        guard.charge(
            len(labels) * width * feature_type.byte_width,
            f"{path}: {len(labels):,} rows of {width:,} features (its highest index is {width - 1:,})",
        )
    dense = np.full((len(labels), width), np.nan, dtype=feature_type.to_pandas_dtype())
    dense[rows, columns] = values
    arrays = [pa.array(labels, pa.float64())]
    names = ["label"]
    if any(w != 1.0 for w in weights):
        arrays.append(pa.array(weights, pa.float64()))
        names.append(WEIGHT)
    arrays += [pa.array(dense[:, i]) for i in range(width)]
    return pa.Table.from_arrays(arrays, names=names + libsvm_columns(width)[1:])


def read_recordio(
    path: Path, feature_type: pa.DataType = FLOAT64, guard: MemoryGuard | None = None
) -> pa.Table:
    """RecordIO-protobuf records (dense or sparse tensors of float32, float64 or int32), each with
    its label: `label, f0, f1, ...` as libsvm gives them, sparse positions a record does not
    mention being missing values. Rows x width is bounded by `guard` before the matrix is made."""
    with _bounded(path, guard) as handle:
        data = handle.read()
    return recordio_table(data, str(path), feature_type, guard)


def recordio_table(
    data: bytes, path: str, feature_type: pa.DataType, guard: MemoryGuard | int | None
) -> pa.Table:
    """RecordIO-protobuf records held in memory as `read_recordio` reads a file; `guard` bounds
    rows x width (a MemoryGuard, or the bytes they may take)."""
    cell = feature_type.byte_width
    budget = guard.remaining() if isinstance(guard, MemoryGuard) else guard
    try:
        rows = decode_rows(data, None if budget is None else budget // max(cell, 8) + 1)
    except RecordIOError as exc:
        raise DataError(f"{path} is not valid RecordIO-protobuf: {exc}") from None
    if rows.labels is None:
        raise DataError(f"{path}: its RecordIO-protobuf records have no label; training needs one per record")
    count, width = rows.features.shape
    if isinstance(guard, MemoryGuard):
        guard.charge(count * width * cell, f"{path}: {count:,} records of {width:,} features")
    features = rows.features.astype(feature_type.to_pandas_dtype(), copy=False)
    arrays = [pa.array(rows.labels), *(pa.array(features[:, i]) for i in range(width))]
    return pa.Table.from_arrays(arrays, names=libsvm_columns(width))


def read_parquet(path: Path, guard: MemoryGuard | None = None) -> pa.Table:
    """A Parquet file (or a gzipped one, inflated within `guard`), charged to `guard` by the rows
    and columns its footer declares before any column is decoded."""
    try:
        if is_gzip(path):  # a gzipped file as a whole: Parquet's own compression is inside
            with _bounded(path, guard) as handle:
                source = pa.BufferReader(handle.read())
        else:
            source = pa.memory_map(str(path))
        parquet = pq.ParquetFile(source)
        if guard is not None:
            metadata = parquet.metadata
            guard.charge(
                metadata.num_rows * metadata.num_columns * 8,
                f"{path}: {metadata.num_rows:,} rows of {metadata.num_columns} columns",
            )
        return parquet.read()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file: {exc}") from None


def read_jsonlines(path: Path, guard: MemoryGuard | None = None) -> pa.Table:
    """One JSON object per line, keyed by column name. Arrow reads it whole: a gzipped file is
    inflated first, within `guard`, and a plain one must fit in what `guard` has left. (Arrow's
    reader over a Python stream that raises can hang in its thread pool: it gets bytes only.)"""
    try:
        if is_gzip(path):
            with _bounded(path, guard) as handle:
                source: Any = pa.BufferReader(handle.read())
        else:
            if guard is not None and path.stat().st_size > guard.remaining():
                guard.charge(path.stat().st_size, str(path))
            source = str(path)
        return pajson.read_json(source)
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path} is not JSON Lines of objects keyed by column name: {exc}") from None


def pad_columns(table: pa.Table, names: list[str]) -> pa.Table:
    """Add the libsvm feature columns a file never mentions, as missing values (and a weight of
    1 to each row of a file without weights when another file has them)."""
    feature_type = next((table.column(n).type for n in table.column_names if n.startswith("f")), pa.float64())
    for name in names:
        if name not in table.column_names:
            filler = (
                pa.array(np.ones(table.num_rows))
                if name == WEIGHT
                else pa.nulls(table.num_rows, feature_type)
            )
            table = table.append_column(name, filler)
    return table.select(names)


def positional_width(table: pa.Table) -> int:
    """The number of feature columns (`f0, f1, ...`) of a libsvm or RecordIO table."""
    return sum(1 for name in table.column_names if name not in ("label", WEIGHT))


def libsvm_columns(width: int, weighted: bool = False) -> list[str]:
    """The columns of a libsvm or RecordIO table: the label, the weight if any, the features."""
    return ["label", *([WEIGHT] if weighted else []), *(f"f{i}" for i in range(width))]
