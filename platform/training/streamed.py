"""The trainer's streamed path: when a job's channels are streamed (`decide`) rather than read in
memory, and preparing them (`prepare`) as the trainer's in-memory path does, batch by batch.

The `streaming` hyperparameter chooses: `true` streams (the algorithm must take batches,
`AlgorithmInfo.streaming`), `false` reads in memory, and `auto` (the default) streams for such an
algorithm when the job's channels would not fit the memory its data may use read in memory, or
arrive through Pipe mode, which exists for channels too large to copy; else in memory, where
every feature of the in-memory path (text categories, JSON Lines, k-fold) is available.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import hyperparameters as hp
from ..cluster import Cluster
from ..environment import SageMakerPaths
from ..errors import DataError, HyperparameterError
from ..media_types import RECORDIO, media_type
from ..memory import MemoryGuard
from ..model_types import REGRESSION, AlgorithmInfo, Batch, BatchStream, Dataset
from .agreement import together
from .channel_files import channel_files
from .data import POSITIONAL, csv_header
from .formats import GZIP_MAGIC, FormatSpec, detect_format
from .job import TrainingJob
from .labels import LabelEncoding
from .sharding import SHARDED, Share
from .stream import (
    STREAMED_FORMATS,
    ChannelStream,
    EpochStream,
    Source,
    StreamSchema,
    agree,
    encoded,
    label_encoding,
    read_stream,
)

log = logging.getLogger(__name__)

AUTO, ON, OFF = "auto", "true", "false"
STREAMING = hp.Hyperparameter(
    "streaming",
    str,
    "true: parse the channels once into float32 batches on the scratch disk and train from "
    "them, for channels larger than memory (algorithms that take batches: xgboost); false: "
    "read them in memory; auto: stream when the channels would not fit the job's memory for "
    "data in memory, or come through Pipe mode.",
    default=AUTO,
    choices=(AUTO, ON, OFF),
)
PIPE_EPOCHS = hp.Hyperparameter(
    "pipe_epochs",
    bool,
    "Pipe mode channels, streamed: true reads one epoch a pass over the data (XGBoost makes a "
    "few), each checked to equal the first, with nothing on the scratch disk (for channels "
    "larger than the instance's disk; ShuffleConfig must be off); false parses the first epoch "
    "once into batches on the scratch disk.",
    default=False,
)
# What reading a channel in memory and building the algorithm's matrices took, per byte of CSV
# text (bench/TRAINING_DATA.md): the auto choice compares the channels' bytes times this with the
# memory the job's data may use.
IN_MEMORY_BYTES_PER_TEXT_BYTE = 2.0
# Rows of a streamed channel the training report is drawn from.
REPORT_ROWS = 100_000


def text_bytes(path: Path) -> int:
    """A file's size as text: a gzip's inflated size from its trailer (modulo 4 GiB, so never
    less than the compressed size)."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            if handle.read(2) != GZIP_MAGIC or size < 18:
                return size
            handle.seek(-4, 2)
            return max(size, struct.unpack("<I", handle.read(4))[0])
    except OSError:
        return size


def decide(
    setting: str, info: AlgorithmInfo, algorithm: str, job: TrainingJob, paths: SageMakerPaths
) -> bool:
    """Whether this job's channels are streamed; HyperparameterError for streaming=true with an
    algorithm that does not take batches."""
    if setting == OFF:
        return False
    if not info.streaming:
        if setting == ON:
            raise HyperparameterError(
                f"streaming=true, but algorithm '{algorithm}' trains on data in memory only "
                "(its AlgorithmInfo does not say streaming); remove streaming or use xgboost"
            )
        return False
    if setting == ON:
        return True
    channels = ("train", "validation")
    if any(job.is_pipe(channel) for channel in channels if channel in job.channels):
        log.info("streaming: the channels come through Pipe mode")
        return True
    total = 0
    for channel in channels:
        folder = paths.channel_dir(channel)
        if not folder.is_dir():
            continue
        files = channel_files(folder)
        content_type = job.content_type(channel)
        try:
            fmt = FormatSpec.from_content_type(content_type, channel).name if content_type else None
            fmt = fmt or (detect_format(files[0]) if files else None)
        except DataError:
            return False  # the in-memory reader names the problem
        if fmt is not None and fmt not in STREAMED_FORMATS:
            return False  # JSON Lines: read in memory
        total += sum(text_bytes(path) for path in files)
    guard = MemoryGuard.for_training()
    needed = total * IN_MEMORY_BYTES_PER_TEXT_BYTE
    if needed > guard.limit:
        log.info(
            f"streaming: the channels ({total / 2**20:,.1f} MiB as text) would take about "
            f"{needed / 2**20:,.1f} MiB in memory, over the {guard.limit / 2**20:,.1f} MiB this "
            f"job's data may use ({guard.source}); streaming=false reads them in memory"
        )
        return True
    return False


@dataclass(frozen=True)
class StreamedChannels:
    """The channels, streamed and ready to fit (the trainer's `Prepared`, from batches)."""

    task: str
    train: Dataset
    validation: Dataset | None
    encoding: LabelEncoding
    dtypes: dict[str, Any]
    streams: list[ChannelStream]

    def remove(self) -> None:
        for stream in self.streams:
            stream.remove()


@dataclass(frozen=True)
class _Read:
    """One channel as this host streamed it, and the schema every host agreed."""

    stream: ChannelStream
    schema: StreamSchema
    rows: slice | None  # this host's block of rows, when the hosts divide them
    epochs: tuple[Callable[[int, Callable[[Batch], None], Any], ChannelStream], str] | None = None

    def encoded(self, encoding: LabelEncoding, names: list[str]) -> BatchStream:
        stream = encoded(self.stream, self.schema, encoding, self.rows, names)
        if self.epochs is None:
            return stream
        return EpochStream(stream, *self.epochs)


def _read(
    paths: SageMakerPaths, job: TrainingJob, core: dict[str, Any], cluster: Cluster, channel: str
) -> _Read:
    content_type = job.content_type(channel)
    spec = FormatSpec.from_content_type(content_type, channel) if content_type else None
    target = core.get("target")
    header = csv_header(spec, target, channel)
    share = Share(
        cluster.rank,
        cluster.size,
        str((job.channels.get(channel) or {}).get("S3DistributionType", "FullyReplicated")),
    )
    listed = 1
    by_epoch = bool(job.is_pipe(channel) and core.get("pipe_epochs"))
    wrapped = job.record_wrapped(channel) and media_type(content_type) != RECORDIO
    if job.is_pipe(channel):
        source = Source([], pipe=paths.pipe(channel, 0), record_wrapped=wrapped)
    else:
        folder = paths.channel_dir(channel)
        if not folder.is_dir():
            if cluster.size == 1 or share.distribution != SHARDED:
                raise DataError(
                    f"the '{channel}' channel is missing: no folder {folder}. Pass it to fit(), "
                    f"e.g. estimator.fit({{'{channel}': 's3://bucket/prefix'}})"
                )
            files: list[Path] = []
        else:
            every = channel_files(folder)
            listed = len(every)
            if not every and cluster.size == 1:
                raise DataError(f"the '{channel}' channel holds no data files (looked in {folder})")
            files = share.files(every)
        source = Source(files)
    folder = paths.scratch_dir / f"stream-{channel}"

    def read(
        source: Source,
        sink: Callable[[Batch], None] | None = None,
        digest: Any = None,
        again: ChannelStream | None = None,
    ) -> ChannelStream:
        return read_stream(
            source,
            folder,
            channel=channel,
            fmt=spec.name if spec is not None else None,
            header=header,
            target=target,
            csv_weights=bool(core.get("csv_weights")),
            encoding=spec.encoding if spec is not None else "utf-8",
            memory_limit=MemoryGuard.for_training().limit,
            sink=sink,
            digest=digest,
            stream=again,
        )

    first_digest = hashlib.blake2b()
    stream = together(
        cluster,
        f"while reading the '{channel}' channel",
        lambda: read(source, (lambda batch: None), first_digest) if by_epoch else read(source),
    )
    if cluster.size == 1 and stream.rows == 0:
        raise DataError(f"the '{channel}' channel holds no rows")
    schema = agree(cluster, stream)
    rows = share.rows(stream.rows) if share.splits_rows(listed) else None
    if not by_epoch:
        return _Read(stream, schema, rows)

    def read_epoch(epoch: int, sink: Callable[[Batch], None], digest: Any) -> ChannelStream:
        again = ChannelStream(
            channel,
            stream.format,
            folder,
            columns=list(stream.columns),
            label_kind=stream.label_kind,
            text_labels=dict(stream.text_labels),
            numeric_labels=None,
        )
        return read(Source([], pipe=paths.pipe(channel, epoch), record_wrapped=wrapped), sink, digest, again)

    log.info("channel '%s': epoch 0 read (the schema pass); each pass reads the next epoch", channel)
    return _Read(stream, schema, rows, (read_epoch, first_digest.hexdigest()))


def _frame(names: list[str]) -> pd.DataFrame:
    """The features' columns, without rows: a streamed dataset's schema."""
    return pd.DataFrame({name: pd.Series([], dtype=np.float32) for name in names})


def prepare(
    paths: SageMakerPaths, job: TrainingJob, core: dict[str, Any], cluster: Cluster, given_task: str | None
) -> StreamedChannels:
    """Stream this host's share of the channels, agree their schema with the other hosts and
    encode the labels as the in-memory path does."""
    if core.get("kfold"):
        raise HyperparameterError(
            "kfold cross-validates on data in memory, and this job's channels are streamed: "
            "set streaming=false (the data must then fit in memory), or remove kfold"
        )
    streams: list[ChannelStream] = []
    try:
        train_read = _read(paths, job, core, cluster, "train")
        train, train_schema = train_read.stream, train_read.schema
        streams.append(train)
        task = given_task or (REGRESSION if train_schema.numeric_labels else "classification")
        encoding = label_encoding(task, train_schema)
        names = train_schema.columns
        validation = None
        has_validation = paths.channel_dir("validation").exists() or "validation" in job.channels
        if cluster.any(has_validation):
            validation_read = _read(paths, job, core, cluster, "validation")
            streams.append(validation_read.stream)
            if train_schema.format in POSITIONAL and validation_read.schema.format in POSITIONAL:
                names = [f"f{i}" for i in range(max(len(names), len(validation_read.schema.columns)))]
            validation = Dataset(_frame(names), np.empty(0), stream=validation_read.encoded(encoding, names))
        stream = train_read.encoded(encoding, names)
    except BaseException:
        for held in streams:
            held.remove()
        raise
    training = Dataset(_frame(names), np.empty(0), stream=stream)
    if cluster.size > 1:
        log.info("%s trains on %d of the job's %d rows", cluster.describe(), stream.n_rows, train_schema.rows)
    return StreamedChannels(
        task=task,
        train=training,
        validation=validation,
        encoding=encoding,
        dtypes={name: np.dtype(np.float32) for name in names},
        streams=streams,
    )


def report_sample(data: Dataset) -> Dataset:
    """A streamed dataset's first REPORT_ROWS rows, in memory, for the training report."""
    stream = data.stream
    assert stream is not None
    features, labels, weights = _head(stream, REPORT_ROWS)
    return Dataset(pd.DataFrame(features, columns=list(stream.feature_names)), labels, weights)


def _head(stream: BatchStream, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The first `count` rows of a stream as arrays."""
    features, labels, weights = [], [], []
    held = 0
    for batch in stream.batches():
        take = min(count - held, len(batch.features))
        features.append(np.asarray(batch.features[:take]))
        labels.append(batch.labels[:take])
        if batch.weights is not None:
            weights.append(batch.weights[:take])
        held += take
        if held >= count:
            break
    return (
        np.concatenate(features) if features else np.empty((0, len(stream.feature_names)), np.float32),
        np.concatenate(labels) if labels else np.empty(0),
        np.concatenate(weights) if weights else None,
    )


def remove_scratch(paths: SageMakerPaths) -> None:
    """What the streamed path left on the scratch disk: the batches, and the fit's scratch
    folder (XGBoost's page cache)."""
    for folder in paths.scratch_dir.glob("stream-*"):
        shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(fit_scratch_dir(paths), ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty (a Pipe copy being read), or not there
        paths.scratch_dir.rmdir()


def fit_scratch_dir(paths: SageMakerPaths) -> Path:
    """The folder `FitContext.scratch_dir` names: the fit's own temporary files."""
    return paths.scratch_dir / "fit"
