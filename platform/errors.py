"""The errors a user can cause, each with the HTTP status it maps to and one JSON shape."""

from __future__ import annotations

__all__ = [
    "BadRequestError",
    "ClusterError",
    "ConfigurationError",
    "DataError",
    "DataTooLargeError",
    "DecodedTooLargeError",
    "ForwardedError",
    "HyperparameterError",
    "InsufficientMemoryError",
    "ModelAlreadyLoadedError",
    "ModelCrashedError",
    "ModelLoadError",
    "ModelLoadTimeoutError",
    "ModelNotFoundError",
    "NotAcceptableError",
    "NotReadyError",
    "OutputWriteError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PluginConflictError",
    "PluginError",
    "PredictionTimeoutError",
    "RequestError",
    "RequestTimeoutError",
    "SagecraftError",
    "TooManyRowsError",
    "TrainingError",
    "TrainingStoppedError",
    "UnknownAlgorithmError",
    "UnservableModelError",
    "UnsupportedMediaTypeError",
    "UnsupportedOutputError",
]


class SagecraftError(Exception):
    """Base of every error sagecraft raises on purpose.

    `status` is the HTTP status the server answers with; the training job writes the message to
    `output/failure`. Messages say what went wrong, where, and what to do, without a traceback.
    """

    status = 500
    # Extra response headers (a 503 says when to come back).
    headers: dict[str, str] = {}
    # On a multi-host training job, the host that raised it ("host algo-2 of 3"), which the
    # failure message names first.
    where: str | None = None

    @property
    def kind(self) -> str:
        return type(self).__name__


# --- plugins -------------------------------------------------------------------------------


class PluginError(SagecraftError):
    """A plugin is missing, broken, or claims a name another plugin already claims."""


class UnknownAlgorithmError(PluginError):
    """The `algorithm` hyperparameter (or a model's manifest) names no installed plugin."""

    status = 400


class PluginConflictError(PluginError):
    """Two installed distributions register the same algorithm name."""


# --- training ------------------------------------------------------------------------------


class TrainingError(SagecraftError):
    """A training job cannot run with the configuration or data it was given."""

    status = 400


class ConfigurationError(TrainingError):
    """A file under input/config is missing or malformed."""


class HyperparameterError(TrainingError):
    """A hyperparameter is unknown, missing, or has an invalid value."""


class DataError(TrainingError):
    """A channel is missing, empty, or holds data that cannot be read."""


class ClusterError(TrainingError):
    """The hosts of a multi-host job cannot train together: a host's name does not resolve, a
    host does not join, the hosts disagree (versions, hyperparameters, columns), or a host failed
    or stopped answering. Every host writes the same message, naming the host at fault."""


class UnservableModelError(TrainingError):
    """The fitted model does not load back as a server would load it (the trainer checks before it
    says the job succeeded), usually because of a hyperparameter the library accepted."""


class TrainingStoppedError(TrainingError):
    """SIGTERM came before there was a model to save (during cross-validation): the job ends
    without one rather than passing off a model fitted for a round or two as its result."""


class DataTooLargeError(DataError):
    """A channel would take more memory than the job may give its data (a libsvm index in the
    millions, a gzip of millions of tiny rows): refused while it is read, before the kernel
    would kill the job without an output/failure."""


class OutputWriteError(TrainingError):
    """The model or an output file cannot be written (full disk, read-only folder)."""

    status = 500


# --- serving -------------------------------------------------------------------------------


class ModelLoadError(SagecraftError):
    """The model folder cannot be loaded (missing, corrupt, or written by an unknown plugin)."""


class RequestError(SagecraftError):
    """The request cannot be answered as sent."""

    status = 400


class BadRequestError(RequestError):
    """The payload cannot be parsed into rows the model accepts."""

    status = 400


class UnsupportedOutputError(BadRequestError):
    """The model cannot produce the requested kind of prediction."""


class NotAcceptableError(RequestError):
    """No content type in `Accept` can be produced."""

    status = 406


class PayloadTooLargeError(RequestError):
    """The body exceeds the configured limit."""

    status = 413


class TooManyRowsError(PayloadTooLargeError):
    """The body holds more rows than SAGECRAFT_MAX_ROWS allows."""


class DecodedTooLargeError(PayloadTooLargeError):
    """The body would decode to more than SAGECRAFT_MAX_DECODED_MB of features, however little it
    weighs (a compressed Parquet file, a libsvm body of labels only)."""


class RequestTimeoutError(RequestError):
    """The body did not arrive within the request timeout."""

    status = 408


class PredictionTimeoutError(SagecraftError):
    """The prediction did not finish within the request timeout."""

    status = 504


class UnsupportedMediaTypeError(RequestError):
    """The request's `Content-Type` cannot be decoded."""

    status = 415


class ModelNotFoundError(RequestError):
    """A multi-model endpoint has no model of that name, or its folder does not exist."""

    status = 404


class ModelAlreadyLoadedError(RequestError):
    """A model of that name is loaded (or loading) already."""

    status = 409


class InsufficientMemoryError(SagecraftError):
    """Loading another model would exceed the memory budget; SageMaker then unloads idle models."""

    status = 507


class ModelCrashedError(ModelLoadError):
    """A model's process died (a signal, an exit, the out-of-memory killer) while it loaded or
    answered, or the model was marked failed after dying again and again."""

    status = 500


class ForwardedError(SagecraftError):
    """An error another process of the endpoint answered (a model host's, or the parent's), passed
    on with its status, type and message as they were."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self._kind = kind
        self.headers = headers or {}

    @property
    def kind(self) -> str:
        return self._kind


class ModelLoadTimeoutError(ModelLoadError):
    """Loading a model took longer than SAGECRAFT_MODEL_LOAD_TIMEOUT."""

    status = 504


class NotReadyError(SagecraftError):
    """The model is not loaded yet."""

    status = 503
    headers = {"Retry-After": "1"}


class OverloadedError(SagecraftError):
    """The worker holds as many requests as it may; the caller should retry shortly."""

    status = 503
    headers = {"Retry-After": "1"}
