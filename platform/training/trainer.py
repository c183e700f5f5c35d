"""The training job, step by step: `train` reads top to bottom as what a job does.

1. configuration and plugin (`_choose`): the job's files, the algorithm, its hyperparameters;
2. a host that is not the leader stops here, before it reads any data;
3. data (`_prepare`): the channels read, the task settled, labels and categories encoded;
4. cross-validation when asked, then the fit, with SIGTERM turned into a stop request;
5. the model saved with its manifest and loaded back as the server would (`_save`);
6. the training report and the `training_finished` hooks.

`run_training` is what `sagecraft train` calls; it returns the process's exit status.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import categories
from .. import hyperparameters as hp
from ..cluster import Cluster
from ..environment import (
    DEFAULT_ALGORITHM_SETTING,
    TRAINING_REPORT_SETTING,
    SageMakerPaths,
    default_algorithm,
    training_report,
)
from ..errors import (
    ClusterError,
    DataError,
    HyperparameterError,
    ModelLoadError,
    OutputWriteError,
    PluginError,
    SagecraftError,
    TrainingStoppedError,
    UnservableModelError,
)
from ..manifest import Manifest, runtime_libraries
from ..media_types import RECORDIO, media_type
from ..memory import MemoryGuard
from ..metrics import print_metrics
from ..model_types import TASKS, Dataset, FitContext, ReportSection
from ..plugins import Algorithm, PluginSet, installed_plugins
from . import joining, pipe, streamed
from .agreement import agree, digest, job_wide, together
from .cross_validation import cross_validate
from .data import ChannelTable, align_widths, read_share
from .failure import write_failure, write_failure_message
from .job import TrainingJob, checkpoint_dir
from .labels import LabelEncoding
from .report import MetricHistory, ReportStopped, start_loading_matplotlib, write_report
from .schema import ChannelSchema, agree_channel, agree_labels, agree_levels, agree_task, conform
from .sharding import SHARDED, Share

log = logging.getLogger(__name__)

TRAIN_CHANNEL = "train"
VALIDATION_CHANNEL = "validation"

# Hyperparameters the core reads itself, whichever algorithm is chosen.
CORE_HYPERPARAMETERS = (
    hp.Hyperparameter("algorithm", str, "Which installed algorithm plugin trains the model.", required=True),
    hp.Hyperparameter(
        "target",
        str,
        "Name of the label column in files with a header row. "
        "Absent: files have no header and the label is the first column.",
    ),
    hp.Hyperparameter("task", str, "classification or regression; inferred when absent.", choices=TASKS),
    hp.Hyperparameter(
        "kfold",
        int,
        "k-fold cross-validation before the final fit: metrics per "
        "fold and their mean, out-of-fold predictions in output/data/.",
        minimum=2,
        aliases=("_kfold",),
    ),
    hp.Hyperparameter(
        "num_cv_round",
        int,
        "With kfold: repeat the k-fold split this many times, each with its own shuffle.",
        default=1,
        minimum=1,
        aliases=("_num_cv_round",),
    ),
    hp.Hyperparameter(
        "csv_weights",
        int,
        "1: the column after the label holds each row's weight "
        "(label-first CSV, as SageMaker's built-in XGBoost reads it).",
        default=0,
        choices=(0, 1),
    ),
    hp.Hyperparameter(
        "cluster_port",
        int,
        "With several instances: the port of the tracker the first host runs (XGBoost's collective); "
        "the hosts' watch on each other uses the next one.",
        default=joining.DEFAULT_PORT,
        minimum=1,
        maximum=65534,
    ),
    hp.Hyperparameter(
        "bootstrap_timeout",
        float,
        "With several instances: seconds every host has to resolve the others' names and join.",
        default=float(joining.DEFAULT_BOOTSTRAP_TIMEOUT_S),
        minimum=1.0,
    ),
    hp.Hyperparameter(
        "collective_timeout",
        float,
        "With several instances: seconds a host waits for the others at each collective step "
        "before it fails the job (a host that stopped answering).",
        default=float(joining.DEFAULT_COLLECTIVE_TIMEOUT_S),
        minimum=1.0,
    ),
    streamed.STREAMING,
    streamed.PIPE_EPOCHS,
)
_CORE_NAMES = {name for h in CORE_HYPERPARAMETERS for name in (h.name, *h.aliases)}


@dataclass(frozen=True)
class Choice:
    """What the configuration decides before any data is read."""

    job: TrainingJob
    plugins: PluginSet
    algorithm: Algorithm
    core: dict[str, Any]  # the core's own hyperparameters (CORE_HYPERPARAMETERS), validated
    hyperparameters: dict[str, Any]  # the algorithm's, validated (and its extra names, if it takes them)


@dataclass(frozen=True)
class Prepared:
    """The channels, ready to fit: encoded datasets and what was learnt reading them."""

    task: str
    train: Dataset
    validation: Dataset | None
    encoding: LabelEncoding
    levels: dict[str, list[str]]  # categorical features and their training categories
    dtypes: Mapping[Any, Any]  # the training table's columns and their types, in order


def train(paths: SageMakerPaths, end: joining.Ending | None = None) -> None:
    """Run one training job end to end; raises SagecraftError for anything the user must fix.

    On a multi-host job this runs on every host: the hosts join one cluster, each reads its
    share of the rows, and only the leader (the first host) writes the model and the outputs."""
    choice = _choose(TrainingJob.read(paths))
    job = choice.job
    hosts = job.hosts
    if len(hosts) > 1 and not choice.algorithm.info.several_hosts:
        _check_one_host_algorithm(choice)
        if not job.is_leader:
            log.warning(
                "host %s is not the first host (%s): algorithm '%s' trains on one host, so this "
                "host reads no data and writes no model",
                job.current_host,
                hosts[0],
                choice.algorithm.name,
            )
            return
        hosts = [job.current_host]  # the first host trains alone, on every row
    settings = joining.JoinSettings(
        port=choice.core["cluster_port"],
        bootstrap_timeout=choice.core["bootstrap_timeout"],
        collective_timeout=choice.core["collective_timeout"],
    )
    with joining.joined(hosts, job.current_host, settings, end or _ending(paths)) as cluster:
        try:
            _train_on(paths, choice, cluster)
        except SagecraftError as exc:
            if cluster.size > 1 and exc.where is None and not isinstance(exc, ClusterError):
                exc.where = cluster.describe()
            raise
        except Exception as exc:
            lost = cluster.lost(exc)
            if lost is not None:
                raise lost from None
            raise


def _train_on(paths: SageMakerPaths, choice: Choice, cluster: Cluster) -> None:
    """The job on a cluster of one or more hosts, every host alike up to the fit."""
    if cluster.size > 1:
        _agree_on_the_job(cluster, choice)
    if cluster.is_leader:
        paths.output_data_dir.mkdir(parents=True, exist_ok=True)
        choice.plugins.training_started(
            algorithm=choice.algorithm.name,
            hyperparameters=choice.hyperparameters,
            output_data_dir=paths.output_data_dir,
        )
    try:
        _prepared_and_fitted(paths, choice, cluster)
    finally:
        streamed.remove_scratch(paths)


def _prepared_and_fitted(paths: SageMakerPaths, choice: Choice, cluster: Cluster) -> None:
    data = _prepare(paths, choice, cluster)
    stop = _stop_on_sigterm()
    history = MetricHistory()
    report = training_report()
    if cluster.is_leader and report:
        start_loading_matplotlib()
    context = _fit_context(paths, choice, data, history, stop, cluster)
    cluster.stage = "while fitting"
    model = _fit(paths, choice, data, context, stop)
    joining.fit_returned(cluster)
    if context.artefacts_dir is not None and not any(context.artefacts_dir.iterdir()):
        context.artefacts_dir.rmdir()  # no empty folder in every job's output.tar.gz
    if not cluster.is_leader:
        log.info("%s trained its share; the leader, %s, writes the model", cluster.describe(), cluster.leader)
        return
    manifest = Manifest.of_trained_model(
        algorithm=choice.algorithm.name,
        plugin={
            "name": choice.algorithm.name,
            "distribution": choice.algorithm.source.distribution,
            "version": choice.algorithm.source.version,
        },
        plugin_libraries=choice.algorithm.info.libraries,
        task=data.task,
        dtypes=data.dtypes,
        levels=data.levels,
        target=choice.core.get("target"),
        classes=data.encoding.classes,
        hyperparameters=choice.hyperparameters,
    )
    loaded = _save(paths.model_dir, choice.algorithm, model, manifest)
    if report:
        _report(paths, choice.algorithm, loaded, data, history, stop, cluster, context.report_sections)
    else:
        log.info("no training report: %s is false", TRAINING_REPORT_SETTING)
    choice.plugins.training_finished(
        algorithm=choice.algorithm.name,
        model_dir=paths.model_dir,
        output_data_dir=paths.output_data_dir,
        manifest=manifest.to_json(),
    )


def _check_one_host_algorithm(choice: Choice) -> None:
    """A multi-host job with an algorithm that trains on one host: fine with FullyReplicated data
    (the first host has every row); with a ShardedByS3Key channel the other hosts' rows would be
    lost, so every host fails."""
    sharded = sorted(
        name for name, channel in choice.job.channels.items() if _distribution(channel) == SHARDED
    )
    if sharded:
        raise HyperparameterError(
            f"algorithm '{choice.algorithm.name}' trains on one host, but channel "
            f"{', '.join(repr(c) for c in sharded)} is ShardedByS3Key across the job's "
            f"{len(choice.job.hosts)} instances: every host but the first would have its shard "
            "lost. Use S3DistributionType FullyReplicated, or one instance"
        )


def _distribution(channel: Mapping[str, Any]) -> str:
    return str(channel.get("S3DistributionType", "FullyReplicated"))


def _agree_on_the_job(cluster: Cluster, choice: Choice) -> None:
    """The first round of a multi-host job: the hosts run the same software on the same
    hyperparameters, or every host fails naming the ones that differ."""
    cluster.stage = "while comparing the hosts' versions and hyperparameters"
    agree(
        cluster,
        "the software they run",
        {
            "plugin": f"{choice.algorithm.source.distribution} {choice.algorithm.source.version}",
            **runtime_libraries(dict(choice.algorithm.info.libraries)),
        },
    )
    agree(cluster, "the hyperparameters (their digest)", digest(choice.job.hyperparameters.values))


def _choose(job: TrainingJob) -> Choice:
    """The algorithm and both sets of hyperparameters, validated: HyperparameterError naming the
    value at fault, UnknownAlgorithmError naming the installed algorithms."""
    given = dict(job.hyperparameters.values)
    plugins = installed_plugins()
    if "algorithm" not in given:
        given["algorithm"] = _default_algorithm(given, plugins)
    core = hp.validate(
        {k: v for k, v in given.items() if k in _CORE_NAMES}, CORE_HYPERPARAMETERS, owner="sagecraft"
    )
    algorithm = plugins.algorithm(core.values["algorithm"])
    validated = hp.validate(
        {k: v for k, v in given.items() if k not in _CORE_NAMES},
        algorithm.info.hyperparameters,
        accept_extra=algorithm.info.accepts_extra_hyperparameters,
        owner=f"algorithm '{algorithm.name}'",
        also_known=sorted(_CORE_NAMES),
    )
    hyperparameters = {**validated.values, **validated.extra}
    log.info(
        "algorithm '%s' (%s), hyperparameters %s",
        algorithm.name,
        algorithm.source.describe(),
        hyperparameters,
    )
    if len(job.hosts) > 1 and core.values.get("kfold") and algorithm.info.several_hosts:
        raise HyperparameterError(
            f"kfold cross-validates on one host, but this job has {len(job.hosts)} instances, "
            "each holding part of the rows: run the cross-validation with one instance"
        )
    return Choice(job, plugins, algorithm, dict(core.values), hyperparameters)


def _default_algorithm(given: Mapping[str, Any], plugins: PluginSet) -> str:
    """The image's default algorithm for a job that names none (SageMaker's built-in XGBoost
    jobs name none); HyperparameterError when there is no default, or when the job is plainly
    the R blog's random forest (`mtry`, `ntree`)."""
    installed = ", ".join(sorted(plugins.algorithms)) or "none"
    forest = sorted({"mtry", "ntree"} & set(given))
    if forest:
        names = " and ".join(forest)
        raise HyperparameterError(
            f"{names} {'is a' if len(forest) == 1 else 'are'} random forest hyperparameter"
            f"{'' if len(forest) == 1 else 's'}, but the job names no algorithm: add "
            f"algorithm=random_forest (installed algorithms: {installed})"
        )
    default = default_algorithm()
    if default is None:
        raise HyperparameterError(
            f"hyperparameter 'algorithm' is required; installed algorithms: {installed}"
        )
    log.info(
        "no 'algorithm' hyperparameter: training the image's default, %s (%s)",
        default,
        DEFAULT_ALGORITHM_SETTING,
    )
    return default


def _prepare(paths: SageMakerPaths, choice: Choice, cluster: Cluster) -> Prepared:
    """Read this host's share of the channels, agree their schema with the other hosts (a
    one-host job's is its own), and encode them as the algorithm receives them: in memory, or
    streamed into batches on the scratch disk (streamed.py says when)."""
    info = choice.algorithm.info
    if cluster.any(streamed.decide(choice.core["streaming"], info, choice.algorithm.name, choice.job, paths)):
        given = choice.core.get("task") or choice.algorithm.infer_task(choice.hyperparameters)
        channels = streamed.prepare(paths, choice.job, choice.core, cluster, given)
        return Prepared(
            task=channels.task,
            train=channels.train,
            validation=channels.validation,
            encoding=channels.encoding,
            levels={},
            dtypes=channels.dtypes,
        )
    train_table, validation_table = _read_channels(paths, choice, cluster)
    task = agree_task(
        choice.core.get("task") or choice.algorithm.infer_task(choice.hyperparameters),
        train_table.schema,
    )
    encoding = agree_labels(cluster, task, train_table.table.labels)
    levels = agree_levels(cluster, train_table.table.features)
    if levels and cluster.is_leader:
        log.info(
            "categorical features: %s",
            ", ".join(f"{name} ({len(values)} categories)" for name, values in levels.items()),
        )

    def dataset(table: ChannelTable, channel: str) -> Dataset:
        weights = None if table.weights is None else table.weights.to_numpy(dtype=np.float32)
        return Dataset(
            categories.encode(table.features, levels), encoding.encode(table.labels, channel), weights
        )

    train = together(
        cluster, "while encoding the 'train' channel", lambda: dataset(train_table.table, TRAIN_CHANNEL)
    )
    validation = None
    if validation_table is not None:
        validation = together(
            cluster,
            "while encoding the 'validation' channel",
            lambda: dataset(validation_table, VALIDATION_CHANNEL),
        )
    if cluster.size > 1:
        log.info(
            "%s trains on %d of the job's %d rows",
            cluster.describe(),
            train.n_rows,
            train_table.schema.rows,
        )
    return Prepared(
        task=task,
        train=train,
        validation=validation,
        encoding=encoding,
        levels=levels,
        dtypes=train_table.table.features.dtypes.to_dict(),
    )


@dataclass(frozen=True)
class _Agreed:
    """A host's share of the train channel, shaped to the schema every host agreed."""

    table: ChannelTable
    schema: ChannelSchema


def _read_channels(
    paths: SageMakerPaths, choice: Choice, cluster: Cluster
) -> tuple[_Agreed, ChannelTable | None]:
    """This host's share of the train channel, and of the validation channel when the job has
    one, with the same features; both count against one MemoryGuard."""
    guard = MemoryGuard.for_training()
    job = choice.job
    dtype = choice.algorithm.info.feature_dtype

    def read(channel: str) -> tuple[ChannelTable, ChannelSchema]:
        share = Share(cluster.rank, cluster.size, _distribution(job.channels.get(channel) or {}))
        table = together(
            cluster, f"while reading the '{channel}' channel", lambda: _read_share(channel, share)
        )
        schema = agree_channel(cluster, channel, table)
        return conform(table, schema, dtype, cluster), schema

    def _read_share(channel: str, share: Share) -> ChannelTable | None:
        content_type = job.content_type(channel)
        folder = paths.channel_dir(channel)
        if job.is_pipe(channel):
            unwrap = job.record_wrapped(channel) and media_type(content_type) != RECORDIO
            folder = pipe.copy_first_epoch(paths, channel, record_wrapped=unwrap)
        try:
            return read_share(
                folder,
                share,
                channel=channel,
                target=choice.core.get("target"),
                content_type=content_type,
                csv_weights=bool(choice.core.get("csv_weights")),
                feature_dtype=dtype,
                guard=guard,
            )
        finally:
            if job.is_pipe(channel):
                pipe.remove_copy(folder)

    train, train_schema = read(TRAIN_CHANNEL)
    has_validation = paths.channel_dir(VALIDATION_CHANNEL).exists() or VALIDATION_CHANNEL in job.channels
    if not cluster.any(has_validation):
        return _Agreed(train, train_schema), None
    validation, _ = read(VALIDATION_CHANNEL)
    train, validation = align_widths(train, validation)
    if list(validation.features.columns) != list(train.features.columns):
        raise job_wide(
            DataError(
                f"the validation channel's features ({', '.join(validation.features.columns)}) "
                f"differ from the train channel's ({', '.join(train.features.columns)})"
            )
        )
    return _Agreed(train, train_schema), validation


def _stop_on_sigterm() -> threading.Event:
    """SageMaker stops a job with SIGTERM and kills it 120 s later: turn the signal into a request
    that the fit ends early, so that the model so far is saved (and a checkpoint written)."""
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        log.warning("SIGTERM: asking the algorithm to stop at its next iteration")
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
    return stop


def _fit_context(
    paths: SageMakerPaths,
    choice: Choice,
    data: Prepared,
    history: MetricHistory,
    stop: threading.Event,
    cluster: Cluster,
) -> FitContext:
    def log_metrics(iteration: int, metrics: Mapping[str, float]) -> None:
        cluster.stage = f"after round {iteration}"
        if cluster.is_leader:  # every host has the same values: the whole job's
            print_metrics(iteration, metrics)
            history.record(iteration, metrics)

    return FitContext(
        task=data.task,
        classes=data.encoding.classes,
        feature_names=[str(name) for name in data.dtypes],
        tuning_objective_metric=choice.job.hyperparameters.tuning_objective_metric,
        log_metrics=log_metrics,
        logger=logging.getLogger(f"sagecraft.algorithm.{choice.algorithm.name}"),
        checkpoint_dir=checkpoint_dir(paths),
        stop_requested=lambda: stop.is_set() or cluster.stop_agreed,
        cluster=cluster,
        artefacts_dir=_artefacts_dir(paths, choice) if cluster.is_leader else None,
        scratch_dir=streamed.fit_scratch_dir(paths),
        data_memory_bytes=MemoryGuard.for_training().limit,
    )


def _artefacts_dir(paths: SageMakerPaths, choice: Choice) -> Path:
    """output/data/<algorithm>/: the plugin's folder for artefacts of its own."""
    folder = paths.output_data_dir / choice.algorithm.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _fit(
    paths: SageMakerPaths, choice: Choice, data: Prepared, context: FitContext, stop: threading.Event
) -> Any:
    """Cross-validate when `kfold` asks, then fit the final model on the whole train channel."""
    algorithm = choice.algorithm
    repeats = choice.core.get("num_cv_round", 1)
    if repeats > 1 and not choice.core.get("kfold"):
        raise HyperparameterError("num_cv_round repeats the k-fold cross-validation: set kfold too")
    if folds := choice.core.get("kfold"):
        log.info(
            "%d-fold cross-validation of %s%s",
            folds,
            algorithm.name,
            f", {repeats} times" if repeats > 1 else "",
        )
        cross_validate(
            algorithm,
            data.train,
            data.validation,
            choice.hyperparameters,
            context,
            folds,
            paths.output_data_dir,
            repeats=repeats,
        )
        if stop.is_set():
            raise TrainingStoppedError(
                "stopped by SIGTERM during cross-validation, before the final model was fitted: "
                "no model was written"
            )
    log.info("fitting %s (%s, %d rows)", algorithm.name, data.task, data.train.n_rows)
    model = algorithm.fit(data.train, data.validation, choice.hyperparameters, context)
    if stop.is_set():
        log.warning("stopped by SIGTERM: saving the model trained so far")
    return model


def _save(model_dir: Path, algorithm: Algorithm, model: Any, manifest: Manifest) -> Any:
    """Write the model and its manifest, then load it back as the server loads it (the plugin's
    object): a model that trains must serve. One that does not is removed, so that no endpoint is
    ever deployed with it."""
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        algorithm.save_model(model, model_dir)
        manifest.write(model_dir)
    except OSError as exc:
        raise OutputWriteError(write_failure_message(model_dir, exc)) from exc
    try:
        loaded = algorithm.load_model(model_dir, manifest)
        algorithm.builtin_default_output(loaded, manifest)  # what serving asks it next
    except (ModelLoadError, PluginError) as exc:
        for path in model_dir.iterdir():
            if path.is_file():
                path.unlink()
        raise UnservableModelError(
            f"the trained model does not load back, so it could not be served ({exc}); check the "
            "hyperparameters that shape the saved model (base_score, for one)"
        ) from None
    log.info("model written to %s", model_dir)
    return loaded


def _report(
    paths: SageMakerPaths,
    algorithm: Algorithm,
    loaded: Any,
    data: Prepared,
    history: MetricHistory,
    stop: threading.Event,
    cluster: Cluster,
    sections: list[ReportSection],
) -> None:
    """The training report, on the validation channel when there is one (on a multi-host job,
    the leader's share of it). An extra: the saved model is never lost to its failure."""
    evaluation, evaluation_name = (
        (data.validation, "validation") if data.validation is not None else (data.train, "training")
    )
    if cluster.size > 1:
        evaluation_name += f" ({cluster.leader}'s share)"
    if evaluation.stream is not None:
        if evaluation.n_rows > streamed.REPORT_ROWS:
            evaluation_name += f", its first {streamed.REPORT_ROWS:,} rows"
        evaluation = streamed.report_sample(evaluation)
    if evaluation.n_rows == 0:
        log.warning("no training report: this host holds no %s rows", evaluation_name)
        return
    try:
        report = write_report(
            paths.output_data_dir / "report",
            algorithm=algorithm,
            model=loaded,
            task=data.task,
            classes=data.encoding.classes,
            history=history,
            evaluation=evaluation,
            evaluation_name=evaluation_name,
            stop_requested=stop.is_set,
            sections=sections,
        )
        log.info("training report: %s", report)
    except ReportStopped:
        log.warning("the training report was stopped by SIGTERM; the model is saved")
    except Exception:
        log.exception("the training report could not be written; the model is saved")


class _FailureOnce:
    """Writes output/failure once: the main thread and the hosts' watch may both try."""

    def __init__(self, paths: SageMakerPaths) -> None:
        self.paths = paths
        self._lock = threading.Lock()
        self._written = False

    def write(self, exc: BaseException) -> None:
        with self._lock:
            if not self._written:
                write_failure(self.paths, exc)
                self._written = True


def _ending(paths: SageMakerPaths, failure: _FailureOnce | None = None) -> joining.Ending:
    """What the hosts' watch calls when this host must end now: the main thread may be waiting
    inside XGBoost's collective for good, so the failure is written here and the process ends."""
    failure = failure or _FailureOnce(paths)

    def end(exc: BaseException) -> None:
        failure.write(exc)
        joining.end_process(exc)

    return end


def run_training(paths: SageMakerPaths) -> int:
    """`sagecraft train`: 0 when the model is written, 1 after writing output/failure."""
    failure = _FailureOnce(paths)
    try:
        train(paths, _ending(paths, failure))
    except SagecraftError as exc:
        log.error("training failed: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        failure.write(exc)
        return 1
    except Exception as exc:
        log.exception("training failed with an internal error")
        failure.write(exc)
        return 1
    finally:
        # The job's outcome is settled: a SIGTERM now (SageMaker stopping a job that is ending)
        # must not turn it into a death by signal, which Python's exit would let it be.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log.info("training complete")
    return 0
