"""Where everything is: the SageMaker directory tree under SAGEMAKER_BASE_DIR, and serving settings.

Every environment variable sagecraft reads is read in this module (the README's table lists them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

DEFAULT_BASE_DIR = "/opt/ml"
DEFAULT_PORT = 8080
DEFAULT_MAX_PAYLOAD_MB = 6.0
# SageMaker sends SIGKILL 30 s after SIGTERM; draining must end well before that.
DEFAULT_SHUTDOWN_TIMEOUT_S = 20.0
# SageMaker gives up on an invocation after 60 s; an asynchronous endpoint waits up to an hour.
DEFAULT_REQUEST_TIMEOUT_S = 60.0
# Requests one worker process holds at once (reading, waiting or predicting); more get a 503.
DEFAULT_MAX_CONCURRENT_REQUESTS = 128
# Idle keep-alive connections (and connections that have not sent a whole request head) close
# after this; aiohttp's own default is an hour, which lets held connections exhaust descriptors.
DEFAULT_KEEPALIVE_TIMEOUT_S = 60.0
# A single-model endpoint must be healthy within about 4 minutes of start.
DEFAULT_MODEL_LOAD_TIMEOUT_S = 240.0
# What one request may decode to, at least (a float64 cell is 8 bytes); SAGECRAFT_MAX_DECODED_MB.
MIN_DEFAULT_DECODED_MB = 256.0
# The largest file a model folder may hold (the biggest forests we train are a few hundred MB).
DEFAULT_MAX_MODEL_FILE_MB = 4096.0
MAX_MODEL_FILE_SETTING = "SAGECRAFT_MAX_MODEL_FILE_MB"


@dataclass(frozen=True)
class SageMakerPaths:
    """The container's directory tree, rooted at SAGEMAKER_BASE_DIR (default /opt/ml)."""

    base: Path

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> SageMakerPaths:
        return cls(Path(environ.get("SAGEMAKER_BASE_DIR") or DEFAULT_BASE_DIR))

    @property
    def config_dir(self) -> Path:
        return self.base / "input" / "config"

    @property
    def hyperparameters_file(self) -> Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def input_data_config_file(self) -> Path:
        return self.config_dir / "inputdataconfig.json"

    @property
    def resource_config_file(self) -> Path:
        return self.config_dir / "resourceconfig.json"

    @property
    def data_dir(self) -> Path:
        return self.base / "input" / "data"

    def channel_dir(self, channel: str) -> Path:
        return self.data_dir / channel

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoint_config_file(self) -> Path:
        return self.config_dir / "checkpointconfig.json"

    @property
    def default_checkpoint_dir(self) -> Path:
        return self.base / "checkpoints"

    @property
    def scratch_dir(self) -> Path:
        """Where training keeps data it must read again (a Pipe mode channel's epoch): on the
        job's volume, outside model/ and output/, which SageMaker uploads."""
        return self.base / "scratch"

    def pipe(self, channel: str, epoch: int) -> Path:
        """The FIFO SageMaker creates for a Pipe mode channel's epoch: input/data/<channel>_<epoch>."""
        return self.data_dir / f"{channel}_{epoch}"

    @property
    def models_dir(self) -> Path:
        """Where SageMaker unpacks the models of a multi-model endpoint."""
        return self.base / "models"


# SageMaker's config files are a few KB (hyperparameters.json: at most 100 keys of 2,500 chars).
MAX_CONFIG_FILE_BYTES = 16 * 1024 * 1024


def read_json_config(path: Path, *, required: bool) -> Any:
    """Parse one of the JSON files under input/config; None when it is absent and optional.
    Read as a regular file of bounded size: a FIFO there would block the job forever."""
    from .files import read_regular  # (files.py reads this module's settings at import)

    try:
        text = read_regular(
            path, MAX_CONFIG_FILE_BYTES, ConfigurationError, "a config file's fixed limit"
        ).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    except FileNotFoundError:
        if required:
            raise ConfigurationError(
                f"{path} is missing: SageMaker writes it for every training job"
            ) from None
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid JSON ({exc})") from None


def _number(environ: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"environment variable {name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigurationError(f"environment variable {name}={raw!r} must be at least {minimum}")
    return value


TRAINING_MEMORY_SETTING = "SAGECRAFT_TRAINING_MEMORY_MB"
# The data's share of the container's memory: the channels are held as Arrow tables, then as
# pandas frames and the library's own matrix, so the fit needs about as much again.
TRAINING_MEMORY_SHARE = 0.5


def training_memory_bytes(environ: Mapping[str, str] = os.environ) -> int | None:
    """The memory a training job's channels may take as read (SAGECRAFT_TRAINING_MEMORY_MB), or
    None for the default share of the container's memory."""
    megabytes = _number(environ, TRAINING_MEMORY_SETTING, 0, 0)
    return int(megabytes * 1024 * 1024) if megabytes else None


TRAINING_REPORT_SETTING = "SAGECRAFT_TRAINING_REPORT"


def training_report(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a training job writes its report (SAGECRAFT_TRAINING_REPORT: true, the default,
    or false: about a second of CPU saved per job, for tuning jobs of many trials say);
    ConfigurationError for anything else."""
    raw = environ.get(TRAINING_REPORT_SETTING, "true").strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"environment variable {TRAINING_REPORT_SETTING}={raw!r} must be true or false")


DEFAULT_ALGORITHM_SETTING = "SAGECRAFT_DEFAULT_ALGORITHM"


def default_algorithm(environ: Mapping[str, str] = os.environ) -> str | None:
    """The algorithm a job without the `algorithm` hyperparameter trains (SAGECRAFT_DEFAULT_ALGORITHM,
    "xgboost" when unset, as SageMaker's built-in XGBoost trains); None when set empty, which
    makes the hyperparameter required."""
    return environ.get(DEFAULT_ALGORITHM_SETTING, "xgboost").strip() or None


def max_model_file_bytes(environ: Mapping[str, str] = os.environ) -> int:
    """The size bound of any one file read from a model folder (SAGECRAFT_MAX_MODEL_FILE_MB)."""
    return int(_number(environ, MAX_MODEL_FILE_SETTING, DEFAULT_MAX_MODEL_FILE_MB, 0.001) * 1024 * 1024)


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


# What a prediction can return (see outputs.py); the first is the default.
OUTPUT_KINDS = (
    "predicted_label",
    "probabilities",
    "probability",
    "raw_margin",
    "contributions",
    "leaves",
    # The keys of SageMaker's built-in algorithms (answered with their meanings: serving/outputs.py)
    "labels",
    "raw_score",
    "raw_scores",
    "predicted_score",
)


def _default_output(environ: Mapping[str, str]) -> str | None:
    """SAGEMAKER_INFERENCE_OUTPUT, as AWS's containers read it: one kind, or several separated by
    commas (`predicted_label,probability`), each record then answering all of them."""
    raw = (environ.get("SAGEMAKER_INFERENCE_OUTPUT") or "").strip().lower()
    if not raw:
        return None
    kinds = [k.strip() for k in raw.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in OUTPUT_KINDS]
    if not kinds or unknown or len(set(kinds)) != len(kinds):
        raise ConfigurationError(
            f"SAGEMAKER_INFERENCE_OUTPUT={raw!r}: give one or more of {', '.join(OUTPUT_KINDS)}, "
            "separated by commas, each once"
        )
    return ",".join(kinds)


@dataclass(frozen=True)
class ServingSettings:
    """How `sagecraft serve` listens and what it accepts, read once at start."""

    host: str
    port: int
    max_payload_bytes: int
    shutdown_timeout_s: float
    default_accept: str | None
    multi_model: bool
    log_requests: bool
    workers: int
    memory_budget_bytes: int | None
    evict_idle_models: bool
    record_errors: bool
    batch_strategy: str | None
    batching: bool
    default_output: str | None
    batch_transform: bool = False  # SAGEMAKER_BATCH: a batch transform job's container
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    max_rows: int | None = None
    max_decoded_bytes: int = int(MIN_DEFAULT_DECODED_MB * 1024 * 1024)
    model_load_timeout_s: float = DEFAULT_MODEL_LOAD_TIMEOUT_S
    keepalive_timeout_s: float = DEFAULT_KEEPALIVE_TIMEOUT_S
    # A multi-model endpoint's processes per model (0: one per worker), sharing the model's memory.
    model_processes: int = 0
    models_dir: Path = Path(DEFAULT_BASE_DIR) / "models"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> ServingSettings:
        # A batch transform job passes its MaxPayloadInMB as SAGEMAKER_MAX_PAYLOAD_IN_MB.
        max_mb = _number(environ, "SAGEMAKER_MAX_PAYLOAD_IN_MB", DEFAULT_MAX_PAYLOAD_MB, 0.001)
        max_mb = _number(environ, "SAGECRAFT_MAX_PAYLOAD_MB", max_mb, 0.001)
        port = int(_number(environ, "SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT, 1))
        return cls(
            host=environ.get("SAGECRAFT_BIND_HOST") or "0.0.0.0",
            port=port,
            max_payload_bytes=int(max_mb * 1024 * 1024),
            shutdown_timeout_s=_number(environ, "SAGECRAFT_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT_S, 0),
            default_accept=environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or None,
            multi_model=_flag(environ, "SAGEMAKER_MULTI_MODEL"),
            log_requests=_flag(environ, "SAGECRAFT_ACCESS_LOG"),
            workers=int(_number(environ, "SAGEMAKER_MODEL_SERVER_WORKERS", os.cpu_count() or 1, 1)),
            memory_budget_bytes=(
                int(budget * 1024 * 1024)
                if (budget := _number(environ, "SAGECRAFT_MEMORY_BUDGET_MB", 0, 0))
                else None
            ),
            evict_idle_models=_flag(environ, "SAGECRAFT_EVICT_IDLE_MODELS"),
            record_errors=_flag(environ, "SAGECRAFT_RECORD_ERRORS"),
            batching=environ.get("SAGECRAFT_REQUEST_BATCHING", "true").strip().lower()
            not in {"0", "false", "no", "off"},
            default_output=_default_output(environ),
            batch_transform=_flag(environ, "SAGEMAKER_BATCH"),
            batch_strategy=(environ.get("SAGEMAKER_BATCH_STRATEGY") or "").upper() or None,
            request_timeout_s=_number(environ, "SAGECRAFT_REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT_S, 0.001),
            max_concurrent_requests=int(
                _number(environ, "SAGECRAFT_MAX_CONCURRENT_REQUESTS", DEFAULT_MAX_CONCURRENT_REQUESTS, 1)
            ),
            max_rows=int(rows) if (rows := _number(environ, "SAGECRAFT_MAX_ROWS", 0, 0)) else None,
            # By default four times the payload limit: a body of numbers decodes to about as
            # many bytes of float64 as it weighs in text.
            max_decoded_bytes=int(
                _number(environ, "SAGECRAFT_MAX_DECODED_MB", max(MIN_DEFAULT_DECODED_MB, 4 * max_mb), 0.001)
                * 1024
                * 1024
            ),
            model_load_timeout_s=_number(
                environ, "SAGECRAFT_MODEL_LOAD_TIMEOUT", DEFAULT_MODEL_LOAD_TIMEOUT_S, 0.001
            ),
            model_processes=int(_number(environ, "SAGECRAFT_MODEL_PROCESSES", 0, 0)),
            keepalive_timeout_s=_number(
                environ, "SAGECRAFT_KEEPALIVE_TIMEOUT", DEFAULT_KEEPALIVE_TIMEOUT_S, 0.001
            ),
            models_dir=SageMakerPaths.from_environment(environ).models_dir,
        )


@dataclass(frozen=True)
class PluginSettings:
    """Which plugins to load, and whether to trace hook calls (read once, when plugins load)."""

    only: frozenset[str] | None
    trace_hooks: bool

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> PluginSettings:
        names = environ.get("SAGECRAFT_PLUGINS", "").strip()
        only = frozenset(n.strip() for n in names.split(",") if n.strip()) if names else None
        return cls(only=only, trace_hooks=_flag(environ, "SAGECRAFT_TRACE_HOOKS"))
