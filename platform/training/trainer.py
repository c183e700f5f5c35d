"""The training journey: configuration, plugin, hyperparameters, data, fit, save, or a failure file.

`run_training` is what `sagecraft train` calls; it returns the process's exit status.
"""

from __future__ import annotations

import errno
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
from ..environment import SageMakerPaths, read_json_config
from ..errors import (
    ConfigurationError,
    DataError,
    HyperparameterError,
    ModelLoadError,
    OutputWriteError,
    SagecraftError,
    TrainingStoppedError,
    UnservableModelError,
)
from ..manifest import Feature, Manifest, runtime_libraries
from ..memory import MemoryGuard
from ..metrics import print_metrics
from ..model_types import TASKS, Dataset, FitContext
from ..plugins import Algorithm, installed_plugins
from .cross_validation import cross_validate
from .data import ChannelTable, align_libsvm_widths, read_channel
from .labels import LabelEncoding, infer_task
from .report import MetricHistory, ReportStopped, start_loading_matplotlib, write_report

log = logging.getLogger(__name__)

FAILURE_LIMIT = 1024
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
    ),
    hp.Hyperparameter(
        "csv_weights",
        int,
        "1: the column after the label holds each row's weight "
        "(label-first CSV, as SageMaker's built-in XGBoost reads it).",
        default=0,
        choices=(0, 1),
    ),
)
_CORE_NAMES = {h.name for h in CORE_HYPERPARAMETERS}


@dataclass(frozen=True)
class TrainingJob:
    """What the configuration files say, decoded."""

    hyperparameters: hp.DecodedHyperparameters
    channels: dict[str, dict[str, Any]]
    current_host: str
    hosts: list[str]

    @classmethod
    def read(cls, paths: SageMakerPaths) -> TrainingJob:
        """The three files under input/config, checked: ConfigurationError naming the file and
        the field for anything of the wrong shape."""
        raw = _config_object(paths.hyperparameters_file)
        channels = _channels(paths.input_data_config_file)
        hosts, current = _hosts(paths.resource_config_file)
        return cls(hp.decode(raw), channels, current, hosts)

    def content_type(self, channel: str) -> str | None:
        return (self.channels.get(channel) or {}).get("ContentType")

    @property
    def is_leader(self) -> bool:
        return self.current_host == self.hosts[0]


INPUT_MODES = ("File", "FastFile", "Pipe")
DISTRIBUTIONS = ("FullyReplicated", "ShardedByS3Key")


def _config_object(path: Path) -> dict[str, Any]:
    """A config file's JSON object ({} when the optional file is absent)."""
    value = read_json_config(path, required=False)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigurationError(f"{path} must hold a JSON object, not {type(value).__name__}")
    return value


def _channels(path: Path) -> dict[str, dict[str, Any]]:
    channels = _config_object(path)
    for name, channel in channels.items():
        if not isinstance(channel, dict):
            raise ConfigurationError(f"{path}: channel '{name}' must be a JSON object")
        for key in ("ContentType", "RecordWrapperType"):
            if key in channel and not isinstance(channel[key], str):
                raise ConfigurationError(f"{path}: channel '{name}': {key} must be a string")
        mode = channel.get("TrainingInputMode", "File")
        if mode not in INPUT_MODES:
            raise ConfigurationError(
                f"{path}: channel '{name}': TrainingInputMode must be "
                f"{', '.join(INPUT_MODES[:-1])} or {INPUT_MODES[-1]}"
            )
        distribution = channel.get("S3DistributionType", "FullyReplicated")
        if distribution not in DISTRIBUTIONS:
            raise ConfigurationError(
                f"{path}: channel '{name}': S3DistributionType must be {' or '.join(DISTRIBUTIONS)}"
            )
        if mode == "Pipe":
            raise ConfigurationError(
                f"channel '{name}' uses Pipe mode; sagecraft reads File or FastFile channels"
            )
    return channels


def _hosts(path: Path) -> tuple[list[str], str]:
    """The job's hosts, in SageMaker's order, and this one."""
    resources = _config_object(path)
    hosts = resources.get("hosts", ["algo-1"])
    if (
        not isinstance(hosts, list)
        or not hosts
        or not all(isinstance(h, str) and h for h in hosts)
        or len(set(hosts)) != len(hosts)
    ):
        raise ConfigurationError(f"{path}: hosts must be a list of host names, each once")
    current = resources.get("current_host", hosts[0])
    if not isinstance(current, str) or current not in hosts:
        raise ConfigurationError(
            f"{path}: current_host {str(current)[:100]!r} is not among the hosts ({', '.join(hosts[:10])})"
        )
    return hosts, current


def _split_hyperparameters(
    job: TrainingJob,
) -> tuple[hp.ValidatedHyperparameters, dict[str, Any]]:
    given = job.hyperparameters.values
    if "algorithm" not in given:
        installed = ", ".join(sorted(installed_plugins().algorithms)) or "none"
        raise HyperparameterError(
            f"hyperparameter 'algorithm' is required; installed algorithms: {installed}"
        )
    core = hp.validate(
        {k: v for k, v in given.items() if k in _CORE_NAMES}, CORE_HYPERPARAMETERS, owner="sagecraft"
    )
    return core, {k: v for k, v in given.items() if k not in _CORE_NAMES}


def _read_channels(
    paths: SageMakerPaths,
    job: TrainingJob,
    target: str | None,
    csv_weights: bool,
    feature_dtype: str,
) -> tuple[ChannelTable, ChannelTable | None]:
    guard = MemoryGuard.for_training()  # both channels together
    train = read_channel(
        paths.channel_dir(TRAIN_CHANNEL),
        channel=TRAIN_CHANNEL,
        target=target,
        content_type=job.content_type(TRAIN_CHANNEL),
        csv_weights=csv_weights,
        feature_dtype=feature_dtype,
        guard=guard,
    )
    validation_dir = paths.channel_dir(VALIDATION_CHANNEL)
    if not validation_dir.exists() and VALIDATION_CHANNEL not in job.channels:
        return train, None
    validation = read_channel(
        validation_dir,
        channel=VALIDATION_CHANNEL,
        target=target,
        content_type=job.content_type(VALIDATION_CHANNEL),
        csv_weights=csv_weights,
        feature_dtype=feature_dtype,
        guard=guard,
    )
    train, validation = align_libsvm_widths(train, validation)
    if list(validation.features.columns) != list(train.features.columns):
        raise DataError(
            f"the validation channel's features ({', '.join(validation.features.columns)}) differ "
            f"from the train channel's ({', '.join(train.features.columns)})"
        )
    return train, validation


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


def _checkpoint_dir(paths: SageMakerPaths) -> Path | None:
    """The checkpoint folder when the job has one: checkpointconfig.json's LocalPath (SageMaker
    writes the file when the job has a CheckpointConfig), or an existing checkpoints/ folder."""
    config = read_json_config(paths.checkpoint_config_file, required=False)
    if config is not None and not isinstance(config, dict):
        raise ConfigurationError(
            f"{paths.checkpoint_config_file} must hold a JSON object, not {type(config).__name__}"
        )
    if isinstance(config, dict) and "LocalPath" in config and not isinstance(config["LocalPath"], str):
        raise ConfigurationError(f"{paths.checkpoint_config_file}: LocalPath must be a string")
    if isinstance(config, dict) and config.get("LocalPath"):
        folder = Path(config["LocalPath"])
    elif config is not None or paths.default_checkpoint_dir.is_dir():
        folder = paths.default_checkpoint_dir
    else:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _weights(table: ChannelTable) -> np.ndarray | None:
    return None if table.weights is None else table.weights.to_numpy(dtype=np.float32)


def _task(
    core: dict[str, Any], algorithm: Algorithm, hyperparameters: dict[str, Any], train: ChannelTable
) -> str:
    return core.get("task") or algorithm.infer_task(hyperparameters) or infer_task(train.labels)


def train(paths: SageMakerPaths) -> None:
    """Run one training job end to end; raises SagecraftError for anything the user must fix."""
    job = TrainingJob.read(paths)
    core, plugin_given = _split_hyperparameters(job)
    algorithm_name = core.values["algorithm"]
    plugins = installed_plugins()
    algorithm = plugins.algorithm(algorithm_name)
    validated = hp.validate(
        plugin_given,
        algorithm.info.hyperparameters,
        accept_extra=algorithm.info.accepts_extra_hyperparameters,
        owner=f"algorithm '{algorithm_name}'",
        also_known=sorted(_CORE_NAMES),
    )
    hyperparameters = {**validated.values, **validated.extra}
    log.info(
        "algorithm '%s' (%s), hyperparameters %s",
        algorithm_name,
        algorithm.source.describe(),
        hyperparameters,
    )
    paths.output_data_dir.mkdir(parents=True, exist_ok=True)
    plugins.manager.hook.training_started(
        algorithm=algorithm_name, hyperparameters=hyperparameters, output_data_dir=paths.output_data_dir
    )

    target = core.values.get("target")
    train_table, validation_table = _read_channels(
        paths, job, target, bool(core.values.get("csv_weights")), algorithm.info.feature_dtype
    )
    task = _task(core.values, algorithm, hyperparameters, train_table)
    encoding = LabelEncoding.fit(task, train_table.labels)
    levels = categories.levels(train_table.features)
    if levels:
        log.info(
            "categorical features: %s",
            ", ".join(f"{name} ({len(values)} categories)" for name, values in levels.items()),
        )
    train_set = Dataset(
        categories.encode(train_table.features, levels),
        encoding.encode(train_table.labels, TRAIN_CHANNEL),
        _weights(train_table),
    )
    validation_set = None
    if validation_table is not None:
        validation_set = Dataset(
            categories.encode(validation_table.features, levels),
            encoding.encode(validation_table.labels, VALIDATION_CHANNEL),
            _weights(validation_table),
        )
    stop = _stop_on_sigterm()
    history = MetricHistory()
    start_loading_matplotlib()

    def log_metrics(iteration: int, metrics: Mapping[str, float]) -> None:
        print_metrics(iteration, metrics)
        history.record(iteration, metrics)

    context = FitContext(
        task=task,
        classes=encoding.classes,
        feature_names=list(train_table.features.columns),
        tuning_objective_metric=job.hyperparameters.tuning_objective_metric,
        log_metrics=log_metrics,
        logger=logging.getLogger(f"sagecraft.algorithm.{algorithm_name}"),
        checkpoint_dir=_checkpoint_dir(paths),
        stop_requested=stop.is_set,
    )
    if folds := core.values.get("kfold"):
        log.info("%d-fold cross-validation of %s", folds, algorithm_name)
        cross_validate(
            algorithm, train_set, validation_set, hyperparameters, context, folds, paths.output_data_dir
        )
        if stop.is_set():
            raise TrainingStoppedError(
                "stopped by SIGTERM during cross-validation, before the final model was fitted: "
                "no model was written"
            )
    log.info("fitting %s (%s, %d rows)", algorithm_name, task, train_set.n_rows)
    model = algorithm.fit(train_set, validation_set, hyperparameters, context)
    if stop.is_set():
        log.warning("stopped by SIGTERM: saving the model trained so far")

    if not job.is_leader:
        log.warning(
            "host %s is not the first host (%s): it does not write the model", job.current_host, job.hosts[0]
        )
        return
    manifest = Manifest(
        algorithm=algorithm_name,
        task=task,
        features=[
            Feature(str(name), "category" if str(name) in levels else str(dtype), levels.get(str(name)))
            for name, dtype in train_table.features.dtypes.items()
        ],
        target=target,
        classes=encoding.classes,
        plugin={
            "name": algorithm_name,
            "distribution": algorithm.source.distribution,
            "version": algorithm.source.version,
        },
        libraries=runtime_libraries(dict(algorithm.info.libraries)),
        hyperparameters=hyperparameters,
    )
    try:
        paths.model_dir.mkdir(parents=True, exist_ok=True)
        algorithm.save_model(model, paths.model_dir)
        manifest.write(paths.model_dir)
    except OSError as exc:
        raise OutputWriteError(_write_failure_message(paths.model_dir, exc)) from exc
    loaded = _load_back(paths.model_dir, algorithm, manifest)
    log.info("model written to %s", paths.model_dir)
    evaluation, evaluation_name = (
        (validation_set, "validation") if validation_set is not None else (train_set, "training")
    )
    try:
        report = write_report(
            paths.output_data_dir / "report",
            algorithm=algorithm,
            model=loaded,
            task=task,
            classes=encoding.classes,
            history=history,
            evaluation=evaluation,
            evaluation_name=evaluation_name,
            stop_requested=stop.is_set,
        )
        log.info("training report: %s", report)
    except ReportStopped:
        log.warning("the training report was stopped by SIGTERM; the model is saved")
    except Exception:  # the report is an extra: the saved model must not be lost to its failure
        log.exception("the training report could not be written; the model is saved")
    plugins.manager.hook.training_finished(
        algorithm=algorithm_name,
        model_dir=paths.model_dir,
        output_data_dir=paths.output_data_dir,
        manifest=manifest.to_json(),
    )


def _load_back(model_dir: Path, algorithm: Algorithm, manifest: Manifest) -> Any:
    """The saved model as the server loads it (the plugin's object): a model that trains must
    serve. One that does not is removed, so that no endpoint is ever deployed with it."""
    try:
        return algorithm.load_model(model_dir, manifest)
    except ModelLoadError as exc:
        for path in model_dir.iterdir():
            if path.is_file():
                path.unlink()
        raise UnservableModelError(
            f"the trained model does not load back, so it could not be served ({exc}); check the "
            "hyperparameters that shape the saved model (base_score, for one)"
        ) from None


_WRITE_HINTS = {
    errno.ENOSPC: "the disk is full: raise the training job's VolumeSizeInGB",
    errno.EDQUOT: "the disk quota is exhausted: raise the training job's VolumeSizeInGB",
    errno.EROFS: "the folder is on a read-only file system",
    errno.EACCES: "the process may not write there",
    errno.EFBIG: "a file grew over the size limit set for the process",
}


def _write_failure_message(folder: Path, exc: OSError) -> str:
    hint = _WRITE_HINTS.get(exc.errno or 0, "check the folder and the space left on its disk")
    reason = exc.strerror or str(exc)
    if exc.filename and Path(exc.filename) != folder:
        reason += f" ({exc.filename})"
    return f"could not write the model to {folder}: {reason}; {hint}"


def failure_text(exc: BaseException) -> str:
    """The failure file: the message first (SageMaker shows 1024 characters), then the type."""
    message = str(exc) if isinstance(exc, SagecraftError) else f"internal error: {exc}"
    suffix = f"\n\nError type: {type(exc).__name__}"
    room = FAILURE_LIMIT - len(suffix)
    if len(message) > room:
        message = message[: room - 3] + "..."
    return message + suffix


def write_failure(paths: SageMakerPaths, exc: BaseException) -> Path | None:
    try:
        paths.failure_file.parent.mkdir(parents=True, exist_ok=True)
        paths.failure_file.write_text(failure_text(exc), encoding="utf-8")
    except OSError:
        log.exception("could not write %s", paths.failure_file)
        return None
    return paths.failure_file


def run_training(paths: SageMakerPaths) -> int:
    """`sagecraft train`: 0 when the model is written, 1 after writing output/failure."""
    try:
        train(paths)
    except SagecraftError as exc:
        log.error("training failed: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        write_failure(paths, exc)
        return 1
    except Exception as exc:
        log.exception("training failed with an internal error")
        write_failure(paths, exc)
        return 1
    log.info("training complete")
    return 0
