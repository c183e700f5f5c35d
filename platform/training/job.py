"""A training job's configuration: the three files under input/config, decoded and checked, and
the checkpoint folder. Read before anything else, on every host alike, so that a misconfigured job
fails the same way everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import hyperparameters as hp
from ..environment import SageMakerPaths, read_json_config
from ..errors import ConfigurationError


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
        """The channel's ContentType, None when inputdataconfig.json gives none."""
        return (self.channels.get(channel) or {}).get("ContentType")

    def is_pipe(self, channel: str) -> bool:
        """Whether SageMaker streams the channel into FIFOs (TrainingInputMode Pipe)."""
        return (self.channels.get(channel) or {}).get("TrainingInputMode") == "Pipe"

    def record_wrapped(self, channel: str) -> bool:
        """Whether the channel's data arrives wrapped in RecordIO records (RecordWrapperType)."""
        return (self.channels.get(channel) or {}).get("RecordWrapperType") == "RecordIO"

    @property
    def is_leader(self) -> bool:
        return self.current_host == self.hosts[0]


INPUT_MODES = ("File", "FastFile", "Pipe")
DISTRIBUTIONS = ("FullyReplicated", "ShardedByS3Key")
RECORD_WRAPPERS = ("None", "RecordIO")


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
        wrapper = channel.get("RecordWrapperType", "None")
        if wrapper not in RECORD_WRAPPERS:
            raise ConfigurationError(
                f"{path}: channel '{name}': RecordWrapperType must be {' or '.join(RECORD_WRAPPERS)}"
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


def checkpoint_dir(paths: SageMakerPaths) -> Path | None:
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
