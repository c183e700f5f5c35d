"""The objects that hooks hand to algorithm plugins and get back from them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from .cluster import Cluster
from .hyperparameters import Hyperparameter

__all__ = [
    "CLASSIFICATION",
    "CONTRIBUTIONS",
    "LABEL",
    "LEAVES",
    "PROBABILITIES",
    "RAW_MARGIN",
    "REGRESSION",
    "TASKS",
    "AlgorithmInfo",
    "Batch",
    "BatchStream",
    "Dataset",
    "FitContext",
    "MetricsSink",
    "ReportSection",
]

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)

# What `predict` is asked for (the hook's docstring says what each returns). LABEL: for
# classification the class *codes* (0..k-1, the core maps them back to the original labels), for
# regression the predicted values. PROBABILITIES: an (n_rows, n_classes) array, classification only.
# RAW_MARGIN: the untransformed score, (n_rows,) or (n_rows, n_classes). CONTRIBUTIONS: per-feature
# contributions then the bias, (n_rows, n_features + 1) (times n_classes for multi-class), summing
# to the raw margin. LEAVES: the leaf each row reaches in each tree, (n_rows, n_trees).
LABEL = "label"
PROBABILITIES = "probabilities"
RAW_MARGIN = "raw_margin"
CONTRIBUTIONS = "contributions"
LEAVES = "leaves"


@dataclass(frozen=True)
class AlgorithmInfo:
    """What an algorithm plugin says about itself (returned by the `algorithm_info` hook).

    `hyperparameters` are validated by the core before `fit` sees them. With
    `accepts_extra_hyperparameters` the core passes names it does not declare through to `fit`
    unchanged instead of rejecting them; the plugin then owns their validation.
    `libraries` maps library names to versions for the model manifest. `api_version` is the
    `sagecraft.hooks.HOOK_API_VERSION` the plugin was written for; a newer one than the installed
    sagecraft provides makes the plugin unavailable, with a message saying so. `feature_dtype` is
    the type numeric training features are read as: "float32" halves the memory of a large
    channel and loses nothing for tree libraries, which compare float32 thresholds anyway.
    `predict_in_thread=True` sends every request's `predict` to the prediction pool, small ones
    included (by default a request of a few rows is predicted on the event loop: see the
    `predict` hook); set it when `predict` may block or take long for a few rows.
    `several_hosts=True` says the plugin trains one model on several hosts together (a job with
    `instance_count > 1`): its `fit` then runs on every host with that host's share of the rows
    and `FitContext.cluster`, and the model the leader's `fit` returns is saved. A plugin that
    says nothing trains on the first host only, with every row, when the data is
    FullyReplicated; with ShardedByS3Key data the job fails, as the other shards would be lost.
    `metrics` names every metric the plugin can print (through `FitContext.log_metrics`, as
    `<channel>-<metric>`) and `metric_channels` the channels it prints them for: `sagecraft
    metrics ALGORITHM` turns them into the `MetricDefinitions` a tuning job needs.
    `checkpoints=True` says `fit` writes checkpoints to `FitContext.checkpoint_dir` and resumes
    from the newest one (the conformance suite then checks both).
    `streaming=True` says `fit` can train from batches (`Dataset.stream`): a channel larger than
    the job's memory is then parsed once into float32 batches on the scratch disk and handed over
    as a `BatchStream` instead of a DataFrame (the `streaming` hyperparameter decides when).
    """

    description: str
    hyperparameters: Sequence[Hyperparameter] = ()
    accepts_extra_hyperparameters: bool = False
    libraries: Mapping[str, str] = field(default_factory=dict)
    api_version: int = 1
    feature_dtype: str = "float64"
    predict_in_thread: bool = False
    several_hosts: bool = False
    metrics: Sequence[str] = ()
    metric_channels: Sequence[str] = ("train", "validation")
    checkpoints: bool = False
    streaming: bool = False


@dataclass(frozen=True)
class ReportSection:
    """A plugin's section of the training report: a title, paragraphs of plain text (blank lines
    between them) and a PNG figure file, any of them optional but the title."""

    title: str
    text: str = ""
    figure: Path | None = None


@dataclass(frozen=True)
class Batch:
    """A block of a streamed channel's rows: `features` a float32 (rows, n_features) array
    (missing values NaN; memory-mapped, so read-only), `labels` as `Dataset.labels`, `weights`
    float32 or None."""

    features: np.ndarray
    labels: np.ndarray
    weights: np.ndarray | None = None


@runtime_checkable
class BatchStream(Protocol):
    """A streamed channel (see `Dataset.stream`): `batches()` starts again from the first row
    each time it is called, so a fit may read the channel as often as it needs."""

    @property
    def n_rows(self) -> int: ...

    @property
    def feature_names(self) -> Sequence[str]: ...

    def batches(self) -> Iterator[Batch]: ...


@dataclass(frozen=True)
class Dataset:
    """One channel's rows, ready to fit: numeric features, encoded labels, optional weights.

    `labels` holds class codes 0..k-1 (int) for classification, floats for regression.
    `stream` is set only for an algorithm whose AlgorithmInfo says `streaming`, when the job's
    channels are streamed: the rows are then in `stream.batches()`, and `features` has the
    columns (all float32) but no rows, `labels` and `weights` nothing.
    """

    features: pd.DataFrame
    labels: np.ndarray
    weights: np.ndarray | None = None
    stream: BatchStream | None = None

    @property
    def n_rows(self) -> int:
        return self.stream.n_rows if self.stream is not None else len(self.features)


MetricsSink = Callable[[int, Mapping[str, float]], None]


@dataclass(frozen=True)
class FitContext:
    """What a plugin may want to know while fitting, beyond the data and hyperparameters.

    `classes` are the original labels in code order (empty for regression).
    `tuning_objective_metric` is the metric a SageMaker tuning job optimises, e.g.
    "validation:rmse", or None. Call `log_metrics(iteration, {"train-rmse": 0.4, ...})` once per
    evaluation: the core prints the line in XGBoost's format, which SageMaker's metric regexes read.
    `checkpoint_dir` is the folder SageMaker syncs with S3 (None when the job has no checkpoint
    configuration): write checkpoints there and resume from the newest one. `stop_requested()`
    turns True when SageMaker asks the job to stop (SIGTERM, 120 s before SIGKILL): an iterative
    fit should end at its next iteration and return the model so far, which the core then saves.
    `cluster` is the job's hosts (`sagecraft.cluster.Cluster`: rank, leader, allreduce, byte
    exchange, the agreed stop); a one-host job's has size 1. Only a plugin whose AlgorithmInfo
    says `several_hosts` ever sees more than one host.
    `artefacts_dir` is a folder of the plugin's own under `output/data/` (uploaded with the
    job's output.tar.gz, not with the model) for anything a person may want to look at later: a
    feature map, a log of its own; it exists on the leader and is None on the other hosts.
    `add_report_section(title, text, figure)` adds a section to the training report (the text
    as paragraphs, the figure a PNG file the plugin wrote, in `artefacts_dir` say).
    `scratch_dir` is a folder for the fit's temporary files on the instance's disk (a page
    cache, say), outside model/ and output/ and removed after the job; `data_memory_bytes` is
    what the job's data may take in memory (SAGECRAFT_TRAINING_MEMORY_MB, else half the
    container's memory): compare a matrix's size with it before building one in memory.
    """

    task: str
    classes: Sequence[Any]
    feature_names: Sequence[str]
    tuning_objective_metric: str | None
    log_metrics: MetricsSink
    logger: logging.Logger
    checkpoint_dir: Path | None = None
    stop_requested: Callable[[], bool] = field(default=lambda: False)
    cluster: Cluster = field(default_factory=Cluster.single)
    artefacts_dir: Path | None = None
    report_sections: list[ReportSection] = field(default_factory=list)
    scratch_dir: Path | None = None
    data_memory_bytes: int = 1 << 62

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def add_report_section(self, title: str, text: str = "", figure: Path | None = None) -> None:
        """Add a section to the training report, after the core's figures (on the leader)."""
        self.report_sections.append(ReportSection(title=title, text=text, figure=figure))
