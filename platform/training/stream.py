"""A training channel streamed: each file parsed once, a chunk at a time, into float32 batches in
the job's scratch folder, which the fit then reads as often as it needs (memory-mapped).

This is how a channel larger than the job's memory trains: the peak while reading is a few chunks
(CHUNK_BYTES of text each, one per core being parsed, in parallel) and their batches, whatever the
channel weighs; the batches take 4 bytes a value on the scratch disk. An algorithm whose
`AlgorithmInfo.streaming` says it takes batches (XGBoost: `QuantileDMatrix` or
`ExtMemQuantileDMatrix` from an iterator) gets them as `Dataset.stream`; the trainer decides when
(see `should_stream`).

What streams: numeric features in CSV (plain or gzipped, recognised by content), libsvm,
RecordIO-protobuf and Parquet, from files (File and FastFile mode, each file read once from start
to end) or from a Pipe mode FIFO (epoch 0, parsed as it arrives: nothing is copied); labels
numeric or text; weights (`csv_weights`, libsvm `label:weight`). Text features (categories) and
JSON Lines are read in memory. A CSV cell may not hold a line break inside quotes (chunks are cut
at line ends; numbers never do).

The hosts of a multi-host job each stream their share (sharding.py) and agree the schema from
each host's summary (`agree`): the columns (the widest for libsvm and RecordIO), weights, the kind
of labels and, for classification, the union of the classes, before any batch is encoded.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import gzip
import hashlib
import io
import itertools
import logging
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..cluster import Cluster
from ..errors import ClusterError, DataError, DataTooLargeError
from ..media_types import CSV, LIBSVM, PARQUET, RECORDIO, short_name
from ..memory import MemoryGuard
from ..model_types import CLASSIFICATION, REGRESSION, Batch
from . import formats
from .agreement import job_wide
from .combine import ColumnRoles, ReadFile, is_number
from .data import POSITIONAL, looks_like_header, unexpected_header
from .labels import LabelEncoding

__all__ = ["ChannelStream", "EncodedStream", "EpochStream", "agree", "read_stream"]

log = logging.getLogger(__name__)

# Text parsed per chunk: big enough that Arrow's per-call cost vanishes, small enough that one
# chunk per core (and its float32 batch) is a small part of any instance's memory.
CHUNK_BYTES = 16 << 20
# A line longer than this is not a row of a training table (a file without line ends, say).
MAX_LINE_BYTES = 256 << 20
# Rows a Parquet or RecordIO batch holds.
BATCH_ROWS = 1 << 18
# Left free on the scratch disk while batches are written: the model and checkpoints need room.
DISK_RESERVE_BYTES = 256 << 20
# Distinct labels a classification may have (each is a class the model predicts).
MAX_CLASSES = 65_536
STREAMED_FORMATS = (CSV, LIBSVM, RECORDIO, PARQUET)
NUMERIC = "number"
TEXT = "text"


@dataclass(frozen=True)
class _Part:
    """One batch on the scratch disk."""

    stem: Path  # <stem>.features.npy, .labels.npy, .weights.npy
    rows: int
    width: int
    weighted: bool


@dataclass
class ChannelStream:
    """One channel as this host parsed it: the batches on disk and what was learnt on the way."""

    channel: str
    format: str
    folder: Path
    columns: list[str] = field(default_factory=list)  # the features, as the model names them
    parts: list[_Part] = field(default_factory=list)
    label_kind: str | None = None  # NUMERIC or TEXT, from the first batch
    text_labels: dict[str, int] = field(default_factory=dict)  # text label -> its code on disk
    numeric_labels: set[float] | None = field(default_factory=set)  # None: too many to be classes
    files: int = 0

    @property
    def rows(self) -> int:
        return sum(part.rows for part in self.parts)

    @property
    def width(self) -> int:
        if self.format in POSITIONAL:
            return max((part.width for part in self.parts), default=0)
        return len(self.columns)

    @property
    def weighted(self) -> bool:
        return any(part.weighted for part in self.parts)

    def summary(self) -> dict[str, Any]:
        """What the hosts compare (JSON)."""
        return {
            "rows": self.rows,
            "format": self.format,
            "columns": self.columns if self.format not in POSITIONAL else [],
            "width": self.width,
            "weighted": self.weighted,
            "labels": self.label_kind,
            "classes": sorted(self.text_labels)
            if self.label_kind == TEXT
            else (None if self.numeric_labels is None else sorted(self.numeric_labels)),
        }

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


# Reading: bytes -> chunks of whole lines -> Arrow tables -> float32 batches on disk.


class _Chunks:
    """Whole lines of a byte stream, about CHUNK_BYTES at a time."""

    def __init__(self, stream: IO[bytes], where: str) -> None:
        self.stream = stream
        self.where = where
        self.size = CHUNK_BYTES

    def __iter__(self) -> Iterator[memoryview]:
        # Each chunk is read into a buffer of its own behind the carried-over partial line, and
        # handed on as a view: no copy of the text is made on the way.
        rest = b""
        while True:
            buffer = bytearray(len(rest) + self.size)
            buffer[: len(rest)] = rest
            filled = len(rest) + self._fill(memoryview(buffer)[len(rest) :])
            if filled == len(rest):
                if rest.strip():
                    yield memoryview(rest if rest.endswith(b"\n") else rest + b"\n")
                return
            cut = buffer.rfind(b"\n", 0, filled)
            if cut < 0:
                if filled > MAX_LINE_BYTES:
                    raise DataError(
                        f"{self.where} has a line of more than {MAX_LINE_BYTES >> 20} MiB: "
                        "not a table of rows"
                    )
                rest = bytes(buffer[:filled])
                continue
            rest = bytes(buffer[cut + 1 : filled])
            yield memoryview(buffer)[: cut + 1]

    def _fill(self, view: memoryview) -> int:
        """Read until `view` is full or the stream ends (a FIFO gives what has arrived)."""
        filled = 0
        while filled < len(view):
            try:
                count = self.stream.readinto(view[filled:])  # type: ignore[attr-defined]
            except (OSError, EOFError) as exc:
                raise DataError(f"{self.where} cannot be read: {exc}") from None
            if not count:
                break
            filled += count
        return filled


def open_bytes(path: Path) -> IO[bytes]:
    """A file or FIFO opened for one sequential read, inflated when its first bytes say gzip."""
    buffered = io.BufferedReader(path.open("rb", buffering=0), buffer_size=1 << 20)
    if buffered.peek(2)[:2] == formats.GZIP_MAGIC:
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    return buffered


@dataclass(frozen=True)
class _Layout:
    """How a channel's CSV rows are laid out, from its first file's first lines."""

    names: list[str]  # every column as the files name it (or c0, c1, ... without a header)
    label: str
    weight: str | None
    features: list[str]  # as the files name them
    model_names: list[str]  # as the model names them
    header_line: list[str] | None


@dataclass(frozen=True)
class _Saved:
    """A batch's features (and weights) on disk, its labels still to encode."""

    stem: Path
    rows: int
    width: int
    labels: pa.Array
    weighted: bool
    held: tuple[np.ndarray, np.ndarray | None] | None = None  # the arrays, when not written


class _Writer:
    """Writes this host's batches of one channel to its scratch folder. `save` runs on the
    parsing threads (the features are most of the bytes); `add`, in order on the reading thread,
    encodes the labels and records the batch."""

    def __init__(self, stream: ChannelStream, sink: Callable[[Batch], None] | None = None) -> None:
        self.stream = stream
        self.sink = sink  # with a sink, batches go to it instead of the disk (a pass over a pipe)
        self._numbers = itertools.count()
        if sink is None:
            stream.folder.mkdir(parents=True, exist_ok=True)

    def save(self, features: np.ndarray, labels: pa.Array, weights: np.ndarray | None, where: str) -> _Saved:
        if weights is not None and (np.isnan(weights).any() or (weights < 0).any()):
            raise DataError(f"{where} has missing or negative weights")
        if self.sink is not None:
            return _Saved(
                Path(), len(features), features.shape[1], labels, weights is not None, (features, weights)
            )
        self._check_room(features.nbytes)
        stem = self.stream.folder / f"{next(self._numbers):06d}"
        if len(features):
            np.save(f"{stem}.features.npy", features.astype(np.float32, copy=False), allow_pickle=False)
            if weights is not None:
                np.save(f"{stem}.weights.npy", weights.astype(np.float32, copy=False), allow_pickle=False)
        return _Saved(stem, len(features), features.shape[1], labels, weights is not None)

    def add(self, saved: _Saved, where: str) -> None:
        if saved.rows == 0:
            return
        codes = self._labels(saved.labels, where)
        if self.sink is not None and saved.held is not None:
            self.sink(Batch(saved.held[0], codes, saved.held[1]))
            self.stream.parts.append(_Part(saved.stem, saved.rows, saved.width, saved.weighted))
            return
        np.save(f"{saved.stem}.labels.npy", codes, allow_pickle=False)
        self.stream.parts.append(_Part(saved.stem, saved.rows, saved.width, saved.weighted))

    def write(self, features: np.ndarray, labels: pa.Array, weights: np.ndarray | None, where: str) -> None:
        self.add(self.save(features, labels, weights, where), where)

    def _labels(self, labels: pa.Array, where: str) -> np.ndarray:
        """Numeric labels as float64; text ones as codes into the channel's dictionary of labels."""
        if labels.null_count:
            row = int(np.flatnonzero(labels.is_null().to_numpy(zero_copy_only=False))[0]) + 1
            raise DataError(f"{where} has a row with no label (row {row} of its batch)")
        numbers: pa.Array | None
        if pa.types.is_integer(labels.type) or pa.types.is_floating(labels.type):
            numbers = labels.cast(pa.float64())
        else:
            try:
                numbers = pc.cast(labels, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                numbers = None
        kind = NUMERIC if numbers is not None else TEXT
        if self.stream.label_kind is None:
            self.stream.label_kind = kind
        if self.stream.label_kind == NUMERIC:
            if numbers is None:
                example = next(v for v in labels.to_pylist() if not is_number(str(v)))
                raise DataError(
                    f"{where} has the label {example!r} where the channel's first rows have numeric "
                    "labels; a label column holds numbers or text, not both"
                )
            values = numbers.to_numpy(zero_copy_only=False)
            seen = self.stream.numeric_labels
            if seen is not None:
                seen.update(np.unique(values).tolist())
                if len(seen) > MAX_CLASSES:
                    self.stream.numeric_labels = None  # a regression's labels, not classes
            return values
        text = labels.cast(pa.string()).to_numpy(zero_copy_only=False)
        distinct, positions = np.unique(text, return_inverse=True)
        dictionary = self.stream.text_labels
        for value in distinct.tolist():
            if value not in dictionary:
                dictionary[value] = len(dictionary)
                if len(dictionary) > MAX_CLASSES:
                    raise DataError(
                        f"{where}: the label column holds more than {MAX_CLASSES:,} distinct texts; "
                        "classification predicts one of its classes, so labels must repeat"
                    )
        return np.array([dictionary[v] for v in distinct.tolist()], dtype=np.int32)[positions]

    def _check_room(self, size: int) -> None:
        free = shutil.disk_usage(self.stream.folder).free
        if free - size < DISK_RESERVE_BYTES:
            raise DataTooLargeError(
                f"the '{self.stream.channel}' channel does not fit the scratch disk as batches: "
                f"{self.stream.rows:,} rows written, {free / 2**20:,.0f} MiB free on {self.stream.folder} "
                "(4 bytes a value). Raise the job's VolumeSizeInGB, or use more instances"
            )


def _parallel(
    chunks: Iterable[memoryview], parse: Callable[[memoryview, int], Any], workers: int
) -> Iterator[Any]:
    """`parse(chunk, index)` of each chunk on `workers` threads (Arrow's parsers let go of the
    GIL), in order, with at most `workers + 1` chunks held at once beside the one being read."""
    if workers <= 1:
        for index, chunk in enumerate(chunks):
            yield parse(chunk, index)
        return
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="sagecraft-read") as pool:
        pending: collections.deque[concurrent.futures.Future[Any]] = collections.deque()
        try:
            for index, chunk in enumerate(chunks):
                pending.append(pool.submit(parse, chunk, index))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _workers() -> int:
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 16))
    except AttributeError:  # not Linux
        return max(1, min(os.cpu_count() or 1, 16))


def _csv_layout(
    first_line: list[str], header: bool, target: str | None, csv_weights: bool, where: str
) -> _Layout:
    """The layout from the first line, decided as the in-memory combiner decides it."""
    names = first_line if header else [f"f{i}" for i in range(len(first_line))]
    empty = pa.Table.from_arrays([pa.array([], pa.string()) for _ in names], names=names)
    roles = ColumnRoles.decide(
        ReadFile(Path(where), CSV, empty), target=target, header=header, csv_weights=csv_weights
    )
    return _Layout(
        roles.columns, roles.label, roles.weight, roles.features, roles.names, first_line if header else None
    )


def _first_lines(chunk: memoryview, encoding: str, where: str) -> list[list[str]]:
    try:
        text = bytes(chunk[: 1 << 20]).decode(
            encoding, errors="strict" if len(chunk) <= 1 << 20 else "ignore"
        )
        return [row for row in csv.reader(io.StringIO(text)) if row][:2]
    except (UnicodeDecodeError, LookupError, csv.Error) as exc:
        raise DataError(f"{where} cannot be read as {encoding} CSV text: {exc}") from None


def _stream_csv(
    source: IO[bytes],
    where: str,
    writer: _Writer,
    *,
    header: bool,
    target: str | None,
    csv_weights: bool,
    encoding: str,
    layout: _Layout | None,
) -> _Layout | None:
    """One CSV file or pipe into batches; returns the layout (the first file's, which later files
    must match), or None for a file without rows."""
    chunks = iter(_Chunks(source, where))
    first = next(chunks, None)
    if first is None:
        return layout
    head = _first_lines(first, encoding, where)
    if not head:
        return layout
    if not header and looks_like_header(head):
        raise unexpected_header(where, head[0])
    mine = _csv_layout(head[0], header, target, csv_weights, where)
    if layout is not None and mine.names != layout.names:
        raise DataError(
            f"{where} has columns ({', '.join(head[0])}) that differ from the channel's first file "
            f"({', '.join(layout.header_line or layout.names)}); every file of a channel needs the "
            "same columns"
        )
    layout = layout or mine
    types = {name: pa.float32() for name in layout.features}
    types[layout.label] = pa.string()
    if layout.weight is not None:
        types[layout.weight] = pa.float32()
    convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)

    def parse(chunk: memoryview, index: int) -> _Saved:
        options = pacsv.ReadOptions(
            column_names=layout.names,
            skip_rows=1 if (header and index == 0) else 0,
            use_threads=False,
            encoding=encoding,
            block_size=1 << 22,
        )
        try:
            table = pacsv.read_csv(pa.py_buffer(chunk), read_options=options, convert_options=convert)
        except pa.ArrowInvalid as exc:
            raise _csv_error(exc, layout, where) from None
        features = _matrix(table, layout.features)
        weights = None
        if layout.weight is not None:
            weights = table.column(layout.weight).to_numpy()
        return writer.save(features, table.column(layout.label).combine_chunks(), weights, where)

    def everything() -> Iterator[memoryview]:
        yield first
        yield from chunks

    for saved in _parallel(everything(), parse, _workers()):
        writer.add(saved, where)
    return layout


def _csv_error(exc: pa.ArrowInvalid, layout: _Layout, where: str) -> DataError:
    text = str(exc)
    conversion = formats.CONVERSION_ERROR.search(text)
    if conversion is not None:
        position = int(conversion.group(1))
        name = layout.names[position] if position < len(layout.names) else "?"
        if name in layout.features:
            name = layout.model_names[layout.features.index(name)]
        return DataError(
            f"feature column '{name}' in {where} is not numeric: it holds {conversion.group(2)}. "
            "Streamed channels hold numbers only (empty cells are missing values); a channel "
            "with text categories is read in memory (streaming=false)"
        )
    if "Expected" in text and "columns" in text:
        return DataError(
            f"{where} is not valid CSV: its rows do not all have {len(layout.names)} values ({text})"
        )
    return DataError(f"{where} is not valid CSV: {text}")


def _matrix(table: pa.Table, columns: list[str]) -> np.ndarray:
    """The columns as one float32 matrix, missing values NaN: column-major, so that each column
    is one contiguous copy (a third of the time of filling rows; XGBoost reads either order)."""
    out = np.empty((len(columns), table.num_rows), dtype=np.float32)
    for index, name in enumerate(columns):
        out[index] = table.column(name).to_numpy()
    return out.T


def _positional(table: pa.Table) -> tuple[np.ndarray, pa.Array, np.ndarray | None]:
    """A libsvm or RecordIO table (label, [weight,] f0, f1, ...) as a batch."""
    names = [n for n in table.column_names if n not in ("label", formats.WEIGHT)]
    features = _matrix(table, names)
    weights = (
        table.column(formats.WEIGHT).to_numpy().astype(np.float32)
        if formats.WEIGHT in table.column_names
        else None
    )
    return features, table.column("label").combine_chunks(), weights


def _stream_libsvm(source: IO[bytes], where: str, writer: _Writer, memory_limit: int) -> None:
    # Each chunk's dense matrix is bounded before it is made: one line `1 3000000000:1` would
    # make three billion columns. The chunks in flight share the job's memory for data.
    share = memory_limit // (_workers() + 2)

    def parse(chunk: memoryview, index: int) -> _Saved:
        guard = MemoryGuard(
            share,
            "a share of the job's memory for data, per chunk being parsed",
            advice="Check the file for an index far beyond the others, or give the job more "
            "memory (SAGECRAFT_TRAINING_MEMORY_MB)",
        )
        table = formats.libsvm_table(bytes(chunk), f"{where} (chunk {index + 1})", pa.float32(), guard)
        return writer.save(*_positional(table), where)

    for saved in _parallel(_Chunks(source, where), parse, _workers()):
        writer.add(saved, where)


def _stream_recordio(source: IO[bytes], where: str, writer: _Writer, limit: int) -> None:
    """RecordIO-protobuf records are parsed in Python a record at a time: read whole (within the
    job's memory for data), then written in batches."""
    data = source.read(limit + 1)
    if len(data) > limit:
        raise DataTooLargeError(
            f"{where}: a RecordIO-protobuf file is read whole, and this one passes the "
            f"{limit / 2**20:,.0f} MiB this job's data may use; split it into smaller files"
        )
    table = formats.recordio_table(data, where, pa.float32(), limit)
    for start in range(0, table.num_rows, BATCH_ROWS):
        features, labels, weights = _positional(table.slice(start, BATCH_ROWS))
        writer.write(features, labels, weights, where)


def _stream_parquet(path: Path, where: str, writer: _Writer, target: str | None) -> list[str]:
    try:
        parquet = pq.ParquetFile(str(path))
        names = parquet.schema_arrow.names
        label = target if target is not None else names[0]
        if label not in names:
            raise DataError(f"target column '{label}' is not in {where}; its columns are: {', '.join(names)}")
        features = [n for n in names if n != label]
        for field_ in parquet.schema_arrow:
            kind = field_.type
            if field_.name != label and not (
                pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
            ):
                raise DataError(
                    f"feature column '{field_.name}' in {where} is {kind}: streamed channels hold numbers "
                    "only; a channel with text categories is read in memory (streaming=false)"
                )
        # Rows a batch of this width holds within about a chunk's bytes (a file may be wide).
        rows = max(1, min(BATCH_ROWS, 2 * CHUNK_BYTES // (8 * max(1, len(names)))))
        for batch in parquet.iter_batches(batch_size=rows):
            table = pa.Table.from_batches([batch])
            writer.write(_matrix(table, features), table.column(label).combine_chunks(), None, where)
        return features
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{where} is not a readable Parquet file: {exc}") from None


@dataclass(frozen=True)
class Source:
    """Where a channel's bytes come from: its files, or one Pipe mode FIFO."""

    files: list[Path]
    pipe: Path | None = None
    record_wrapped: bool = False


def read_stream(
    source: Source,
    folder: Path,
    *,
    channel: str,
    fmt: str | None,
    header: bool,
    target: str | None,
    csv_weights: bool,
    encoding: str,
    memory_limit: int,
    sink: Callable[[Batch], None] | None = None,
    digest: Any = None,
    stream: ChannelStream | None = None,
) -> ChannelStream:
    """Parse this host's files of one channel (or its FIFO) into batches under `folder`.
    `fmt` is the channel's ContentType format, None to recognise each file by its first bytes.
    Raises DataError naming the file at fault, DataTooLargeError when the disk would fill.
    With `sink`, each batch goes to it instead of the disk (`stream` then carries the label
    dictionary of an earlier pass); `digest`, a hashlib object, is fed every byte read."""
    if sink is None:
        shutil.rmtree(folder, ignore_errors=True)
    stream = stream or ChannelStream(channel, fmt or CSV, folder)
    writer = _Writer(stream, sink)
    layout: _Layout | None = None
    parquet_columns: list[str] | None = None
    inputs: list[tuple[str, Callable[[], IO[bytes]], Path | None]]
    if source.pipe is not None:
        pipe = source.pipe
        inputs = [(f"{pipe} (Pipe mode)", lambda: _open_pipe(pipe, source.record_wrapped, channel), None)]
    else:
        inputs = [(str(path), lambda path=path: open_bytes(path), path) for path in source.files]  # type: ignore[misc]
    formats_seen: set[str] = set()
    for where, opener, path in inputs:
        with opener() as opened:
            handle: IO[bytes] = opened if digest is None else _Hashed(opened, digest)  # type: ignore[assignment]
            kind = fmt or _detect(handle, path)
            if kind not in STREAMED_FORMATS:
                raise DataError(
                    f"{where} holds {short_name(kind)}, which is read in memory, not streamed: set "
                    "streaming=false (or auto)"
                )
            formats_seen.add(kind)
            if len(formats_seen) > 1:
                raise DataError(
                    f"{where} holds {short_name(kind)} data but the channel's first file holds "
                    f"{short_name(stream.format)}; a channel holds one format (or give the channel "
                    "a ContentType)"
                )
            stream.format = kind
            before = stream.rows
            if kind == CSV:
                layout = _stream_csv(
                    handle,
                    where,
                    writer,
                    header=header,
                    target=target,
                    csv_weights=csv_weights,
                    encoding=encoding,
                    layout=layout,
                )
            elif kind == LIBSVM:
                _stream_libsvm(handle, where, writer, memory_limit)
            elif kind == RECORDIO:
                _stream_recordio(handle, where, writer, memory_limit)
            else:
                if path is None:
                    raise DataError(f"{where}: Parquet is not read from a pipe; use File or FastFile mode")
                columns = _stream_parquet(path, where, writer, target)
                if parquet_columns is not None and columns != parquet_columns:
                    raise DataError(f"{where} has columns that differ from the channel's first file")
                parquet_columns = columns
            if path is not None:
                stream.files += 1
            if stream.rows == before:
                log.warning("%s holds no rows; skipped", where)
    if layout is not None:
        stream.columns = layout.model_names
    elif parquet_columns is not None:
        stream.columns = parquet_columns
    log.info(
        "channel '%s' streamed: %d rows, %d features, %d batches in %s (%s)",
        channel,
        stream.rows,
        stream.width,
        len(stream.parts),
        folder,
        short_name(stream.format),
    )
    return stream


class _Hashed(io.RawIOBase):
    """A byte stream that feeds what is read from it to a hash (a pass's digest)."""

    def __init__(self, source: IO[bytes], digest: Any) -> None:
        self.source = source
        self.digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self.source.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            self.digest.update(memoryview(buffer)[:count])
        return int(count or 0)

    def peek(self, size: int = 0) -> bytes:
        return self.source.peek(size)  # type: ignore[attr-defined]


def _detect(handle: IO[bytes], path: Path | None) -> str:
    if path is not None:
        return formats.detect_format(path)
    peek = getattr(handle, "peek", None)
    head = peek(4096)[:4096] if peek is not None else b""
    return formats.format_of_head(head)


def _open_pipe(fifo: Path, record_wrapped: bool, channel: str) -> IO[bytes]:
    from .pipe import Unwrapped, check_fifo  # (pipe.py imports the in-memory readers)

    check_fifo(fifo, channel)
    log.info("channel '%s': reading epoch 0 from %s as it arrives", channel, fifo)
    if record_wrapped:
        return io.BufferedReader(Unwrapped(fifo, channel), buffer_size=1 << 20)
    return open_bytes(fifo)


# Agreement and encoding: the schema every host shares, then the batches as the fit reads them.


@dataclass(frozen=True)
class StreamSchema:
    """What every host agreed about a streamed channel."""

    rows: int
    format: str
    columns: list[str]
    weighted: bool
    numeric_labels: bool
    classes: list[Any] | None  # every host's labels (None: too many for classes)


def agree(cluster: Cluster, stream: ChannelStream) -> StreamSchema:
    """The channel's schema, the same on every host (a one-host job's is its own); DataError
    when no host has a row, ClusterError naming the hosts when their formats or columns differ."""
    channel = stream.channel
    cluster.stage = f"while agreeing on the '{channel}' channel's columns"
    held = list(zip(cluster.hosts, cluster.gather_json(stream.summary()), strict=True))
    present = [(host, value) for host, value in held if value["rows"]]
    if not present:
        raise job_wide(
            DataError(f"the '{channel}' channel holds no rows on any of the job's {cluster.size} hosts")
        )
    first = present[0][1]
    if len({value["format"] for _, value in present}) > 1:
        raise ClusterError(
            f"the hosts' '{channel}' channels hold different formats: "
            + "; ".join(f"{host}: {short_name(value['format'])}" for host, value in present)
        )
    if first["format"] in POSITIONAL:
        columns = [f"f{i}" for i in range(max(value["width"] for _, value in present))]
    else:
        columns = first["columns"]
        differing = [host for host, value in present if value["columns"] != columns]
        if differing:
            raise ClusterError(
                f"the hosts' '{channel}' channels have different columns ({', '.join(differing)} differ "
                f"from {present[0][0]}). Every file of a channel must have the same columns"
            )
    kinds = {value["labels"] for _, value in present}
    if len(kinds) > 1:
        raise job_wide(
            DataError(f"the '{channel}' channel has numeric labels on some hosts and text labels on others")
        )
    classes: list[Any] | None = []
    for _, value in present:
        if value["classes"] is None or classes is None:
            classes = None
        else:
            classes.extend(value["classes"])
    return StreamSchema(
        rows=sum(value["rows"] for _, value in present),
        format=first["format"],
        columns=columns,
        weighted=any(value["weighted"] for _, value in present),
        numeric_labels=kinds == {NUMERIC},
        classes=classes,
    )


def label_encoding(task: str, schema: StreamSchema) -> LabelEncoding:
    """The train channel's label encoding, from the agreed schema."""
    if task == REGRESSION:
        if not schema.numeric_labels:
            example = (schema.classes or ["?"])[0]
            raise job_wide(
                DataError(
                    f"task is regression but the label column holds non-numeric values such as "
                    f"{example!r}; set task=classification or fix the labels"
                )
            )
        return LabelEncoding(REGRESSION, [])
    if schema.classes is None:
        raise job_wide(
            DataError(
                f"classification needs labels that repeat, but the label column holds more than "
                f"{MAX_CLASSES:,} distinct values; for numeric targets set task=regression"
            )
        )
    try:
        return LabelEncoding.of_classes(CLASSIFICATION, [_plain(v) for v in schema.classes])
    except DataError as exc:
        raise job_wide(exc) from None


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


@dataclass(frozen=True)
class EncodedStream:
    """A streamed channel as the fit reads it (`sagecraft.hooks.BatchStream`): batches of the
    agreed width with class codes, this host's rows only. Read as often as the fit needs."""

    stream: ChannelStream
    feature_names: list[str]
    encoding: LabelEncoding
    weighted: bool
    rows: slice | None = None  # this host's block of rows (FullyReplicated, fewer files than hosts)

    @property
    def n_rows(self) -> int:
        if self.rows is None:
            return self.stream.rows
        start, stop, _ = self.rows.indices(self.stream.rows)
        return max(stop - start, 0)

    def batches(self) -> Iterator[Batch]:
        width = len(self.feature_names)
        lookup = self.lookup()
        offset = 0
        start, stop = (0, self.stream.rows) if self.rows is None else self.rows.indices(self.stream.rows)[:2]
        for part in self.stream.parts:
            first, last = offset, offset + part.rows
            offset = last
            if last <= start or first >= stop:
                continue
            keep = slice(max(start - first, 0), min(stop, last) - first)
            features = np.load(f"{part.stem}.features.npy", allow_pickle=False)[keep]
            raw = np.load(f"{part.stem}.labels.npy", allow_pickle=False)[keep]
            weights = np.load(f"{part.stem}.weights.npy", allow_pickle=False)[keep] if part.weighted else None
            yield self.encode(Batch(features, raw, weights), lookup, first + keep.start)
        if not self.n_rows:  # a host without rows still builds its (empty) matrix
            yield Batch(np.empty((0, width), np.float32), np.empty(0), None)

    def encode(self, batch: Batch, lookup: np.ndarray | None, first_row: int) -> Batch:
        """A batch as read (raw labels, its own width) at the agreed width, with class codes."""
        width = len(self.feature_names)
        features = batch.features
        if features.shape[1] < width:
            padded = np.full((len(features), width), np.nan, dtype=np.float32)
            padded[:, : features.shape[1]] = features
            features = padded
        weights = batch.weights
        if weights is None and self.weighted:
            weights = np.ones(len(features), dtype=np.float32)
        return Batch(features, self._encode(batch.labels, lookup, first_row), weights)

    def lookup(self) -> np.ndarray | None:
        if self.encoding.task == REGRESSION:
            return None
        index = {value: code for code, value in enumerate(self.encoding.classes)}
        if self.stream.label_kind == TEXT:
            lookup = np.full(len(self.stream.text_labels), -1, dtype=np.int32)
            for value, code in self.stream.text_labels.items():
                lookup[code] = index.get(value, -1)
            return lookup
        return np.array([float(c) for c in self.encoding.classes], dtype=np.float64)

    def _text_of(self, code: int) -> str:
        return next((value for value, c in self.stream.text_labels.items() if c == code), "?")

    def _encode(self, raw: np.ndarray, lookup: np.ndarray | None, first_row: int) -> np.ndarray:
        if lookup is None:
            return raw
        if self.stream.label_kind == TEXT:
            codes = np.where(raw < len(lookup), lookup[np.minimum(raw, len(lookup) - 1)], -1)
        else:
            codes = np.searchsorted(lookup, raw).astype(np.int32)
            codes[(codes >= len(lookup)) | (lookup[np.minimum(codes, len(lookup) - 1)] != raw)] = -1
        unknown = np.flatnonzero(codes < 0)
        if unknown.size:
            row = int(unknown[0])
            value = raw[row] if self.stream.label_kind != TEXT else self._text_of(int(raw[row]))
            raise DataError(
                f"the '{self.stream.channel}' channel has label {_plain(value)!r} (row "
                f"{first_row + row + 1}), which the 'train' channel never has; known classes: "
                f"{self.encoding.classes}"
            )
        return codes


def encoded(
    stream: ChannelStream,
    schema: StreamSchema,
    encoding: LabelEncoding,
    rows: slice | None,
    columns: list[str] | None = None,
) -> EncodedStream:
    """The stream as the fit reads it; `columns` the train channel's, for the validation one."""
    names = columns if columns is not None else schema.columns
    if stream.format not in POSITIONAL and stream.rows and stream.columns != names:
        raise job_wide(
            DataError(
                f"the {stream.channel} channel's features ({', '.join(stream.columns)}) differ "
                f"from the train channel's ({', '.join(names)})"
            )
        )
    if stream.rows and stream.width > len(names):
        raise job_wide(
            DataError(
                f"the {stream.channel} channel has {stream.width} features, more than the train "
                f"channel's {len(names)}"
            )
        )
    # Narrow batches are widened to the widest position as they are read: bound the widest
    # batch, as a libsvm row mentioning feature 10,000,000 would make every batch that wide.
    guard = MemoryGuard.for_training()
    largest = max((part.rows for part in stream.parts if part.width < len(names)), default=0)
    if largest * len(names) * 4 > guard.limit // 4:
        raise job_wide(
            DataError(
                f"the {stream.channel} channel's batches would be {largest:,} rows x {len(names):,} "
                f"features ({largest * len(names) * 4 / 2**20:,.0f} MiB each) once widened to the "
                f"highest position any row mentions, more than a quarter of the "
                f"{guard.limit / 2**20:,.0f} MiB this job's data may use ({guard.source}): check "
                "the files for an index far beyond the others"
            )
        )
    return EncodedStream(stream, list(names), encoding, schema.weighted, rows)


@dataclass
class EpochStream:
    """A Pipe mode channel read one epoch a pass (`pipe_epochs=true`): nothing on the scratch
    disk. Epoch 0 was the schema pass; each call of `batches()` reads the next epoch's FIFO as it
    arrives (parsed on a thread, at most two batches ahead) and, at its end, compares it with
    epoch 0: the same bytes in the same order, or DataError (an epoch shuffled by ShuffleConfig,
    or changed). Labels are encoded with epoch 0's classes."""

    encoded: EncodedStream
    read: Callable[[int, Callable[[Batch], None], Any], ChannelStream]  # (epoch, sink, digest)
    digest: str
    epoch: int = 1

    @property
    def n_rows(self) -> int:
        return self.encoded.n_rows

    @property
    def feature_names(self) -> list[str]:
        return self.encoded.feature_names

    def batches(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        held: queue.Queue[Any] = queue.Queue(maxsize=2)
        digest = hashlib.blake2b()
        done = object()

        def produce() -> None:
            try:
                held.put(self.read(epoch, held.put, digest))
                held.put(done)
            except BaseException as exc:  # handed to the reading thread
                held.put(exc)

        threading.Thread(target=produce, name=f"sagecraft-epoch-{epoch}", daemon=True).start()
        lookup = self.encoded.lookup()
        stream = self.encoded.stream
        rows = -1
        start, stop = (
            (0, stream.rows) if self.encoded.rows is None else self.encoded.rows.indices(stream.rows)[:2]
        )
        offset = 0
        while True:
            item = held.get()
            if isinstance(item, BaseException):
                raise item
            if item is done:
                break
            if isinstance(item, ChannelStream):
                rows = item.rows
                continue
            first, offset = offset, offset + len(item.features)
            keep = slice(max(start - first, 0), max(min(stop, offset) - first, 0))
            if keep.stop > keep.start:
                part = Batch(
                    item.features[keep],
                    item.labels[keep],
                    None if item.weights is None else item.weights[keep],
                )
                yield self.encoded.encode(part, lookup, first + keep.start)
        if digest.hexdigest() != self.digest or rows != stream.rows:
            raise DataError(
                f"epoch {epoch} of the '{stream.channel}' channel (Pipe mode) differs from epoch 0 "
                f"({rows:,} rows against {stream.rows:,}{', the same count' if rows == stream.rows else ''}"
                f"{' but other bytes or another order' if rows == stream.rows else ''}): with "
                "pipe_epochs=true every epoch must be the same data in the same order. Turn the "
                "channel's ShuffleConfig off, or set pipe_epochs=false (epoch 0 is then parsed once "
                "into batches on the scratch disk)"
            )
