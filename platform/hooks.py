"""Hook specifications: the public API that algorithm plugins implement.

A plugin is a module (or object) registered through an entry point of the group `sagecraft`; the
entry point's name is the algorithm's name, the value of the `algorithm` hyperparameter:

    [project.entry-points.sagecraft]
    my_algo = "sagecraft_my_algo"

Mark implementations with `@hookimpl`. Hooks are always called with keyword arguments, and an
implementation may accept fewer arguments than its specification lists: that is how a hook gains
arguments without breaking plugins written earlier.

The core calls each algorithm hook on the selected algorithm's plugin only (pluggy's subset hook
callers), so an implementation never has to ask "is this call for me?". Hook wrappers from other
plugins (timing, logging) still run around it.

Plugins that implement no algorithm hook extend sagecraft instead: they add content types
(`register_content_types`), watch training (`training_started`, `training_finished`), or wrap
another plugin's hook with `@hookimpl(wrapper=True)`, e.g. to time every `predict` call.

The hooks below appear in the order they fire: describing, training, then serving.
HOOK_API_VERSION counts additions to this API; a plugin written for an older version keeps working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pluggy

from .content_registry import ContentTypeRegistry
from .hyperparameters import Hyperparameter
from .manifest import Manifest
from .model_types import (
    CLASSIFICATION,
    CONTRIBUTIONS,
    LABEL,
    LEAVES,
    PROBABILITIES,
    RAW_MARGIN,
    REGRESSION,
    AlgorithmInfo,
    Batch,
    BatchStream,
    Dataset,
    FitContext,
    ReportSection,
)

PROJECT_NAME = "sagecraft"
HOOK_API_VERSION = 7

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = [
    "CLASSIFICATION",
    "CONTRIBUTIONS",
    "HOOK_API_VERSION",
    "LABEL",
    "LEAVES",
    "PROBABILITIES",
    "RAW_MARGIN",
    "REGRESSION",
    "AlgorithmInfo",
    "Batch",
    "BatchStream",
    "ContentTypeRegistry",
    "Dataset",
    "FitContext",
    "Hyperparameter",
    "ReportSection",
    "hookimpl",
    "hookspec",
]


# --- describing an algorithm ----------------------------------------------------------------


@hookspec(firstresult=True)
def algorithm_info() -> AlgorithmInfo:
    """Describe the algorithm: its hyperparameters, the libraries it uses, a one-line summary.

    Called once when the plugin manager is built, before training and before serving. The core
    validates users' hyperparameters against the declarations returned here. Stops at the first
    non-None result.
    """


@hookspec
def register_content_types(registry: ContentTypeRegistry) -> None:
    """Add request decoders and response encoders with `registry.add_decoder(media_type, fn)` and
    `registry.add_encoder(media_type, fn)`.

    Called once when the plugins are loaded, for every plugin that implements it; sagecraft's own
    CSV, JSON, JSON Lines and NPY codecs are added through this hook first. A decoder is called as
    `fn(body: bytes, feature_names: Sequence[str]) -> pandas.DataFrame` (the model's columns, in
    order; raise `sagecraft.errors.BadRequestError` naming the row at fault); an encoder as
    `fn(predictions: numpy.ndarray) -> bytes`, one entry (or row) per request row. A plugin may
    replace a built-in type; two plugins adding the same type is reported as a conflict.
    """


# --- training -------------------------------------------------------------------------------


@hookspec
def training_started(algorithm: str, hyperparameters: dict[str, Any], output_data_dir: Path) -> None:
    """Called once per training job, after the hyperparameters are validated and before the data is
    read, for every plugin that implements it. `output_data_dir` is where extra artefacts go
    (SageMaker uploads it as output.tar.gz). Return value ignored.
    """


@hookspec(firstresult=True)
def infer_task(hyperparameters: dict[str, Any]) -> str | None:
    """Say whether these hyperparameters imply "classification" or "regression".

    Called before the data is encoded, when the user did not set the `task` hyperparameter. Return
    None to let the core decide from the labels (non-numeric labels mean classification). XGBoost,
    for example, answers from its `objective`. Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def fit(
    train: Dataset,
    validation: Dataset | None,
    hyperparameters: dict[str, Any],
    context: FitContext,
) -> Any:
    """Fit a model and return it (any object `save_model` understands).

    Called once per training job. `hyperparameters` holds the declared ones under their canonical
    names (aliases resolved, types converted, defaults filled), plus, for plugins that accept
    extra hyperparameters, the undeclared ones as the user gave them. Raise
    `sagecraft.errors.HyperparameterError` or `DataError` for problems the user must fix; report
    evaluation metrics through `context.log_metrics`. Stops at the first non-None result.

    On a multi-host job (hook API 5), a plugin whose `AlgorithmInfo` says `several_hosts` is
    called on every host at once, each with its share of the rows (possibly none, with the
    agreed columns and classes) and `context.cluster`; every host must make the same collective
    calls in the same order. Return the whole model on the leader (`context.cluster.is_leader`):
    only the leader's is saved. Others may return anything, None included.
    """


@hookspec
def save_model(model: Any, model_dir: Path) -> None:
    """Write the fitted model into `model_dir` in a format that loads without running code.

    Called once after `fit`. The folder exists and is empty but for `manifest.json`, which the core
    writes and the plugin must not touch. Never use pickle or joblib: SageMaker users load models
    from buckets other people can write to.
    """


@hookspec(firstresult=True)
def load_model(model_dir: Path, manifest: Manifest | None) -> Any:
    """Read back what `save_model` wrote and return the model object `predict` expects.

    Called once per model when the server loads it, off the request path, and once by the trainer
    after saving (a model that trains must load). Raise `sagecraft.errors.ModelLoadError` with a
    clear message for a corrupt, foreign or crafted file. Every byte of a model folder is
    untrusted: read files with `sagecraft.files.read_model_file` (regular files of bounded size),
    and check what a native library will index (tree nodes: `sagecraft.flat_trees.TreeNodes.check`)
    before it predicts. `manifest` (hook API 2; accept the argument to receive it) is the folder's
    manifest.json, or None for a model the core has just fitted and saved to a scratch folder
    (cross-validation folds): refuse a model whose feature count differs from the manifest's with
    `manifest.require_features(count, where)`, since requests are decoded to the manifest's
    columns. Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def describe_model(model_dir: Path) -> Manifest | None:
    """Describe a model folder that has no manifest.json, if it is one of this algorithm's.

    Called (hook API 4) when a server is given a folder without `manifest.json`, a model trained
    elsewhere: SageMaker's built-in algorithm's `model.tar.gz`, say. Return the `Manifest` to serve
    it with (`algorithm` your plugin's name; the features in the order the model reads them; the
    task and classes), and `load_model` then receives that manifest; return None when the folder
    is not yours, so that the next plugin is asked. Raise `sagecraft.errors.ModelLoadError` for a
    folder that is yours but cannot be served (a pickled model, say), saying what to do. Read it as
    `load_model` does: every byte is untrusted. Stops at the first non-None result.
    """


@hookspec
def training_finished(
    algorithm: str, model_dir: Path, output_data_dir: Path, manifest: dict[str, Any]
) -> None:
    """Called once after the model and its manifest are written, for every plugin that implements
    it: the place to add artefacts to `output_data_dir` or to record the model elsewhere.
    `manifest` is manifest.json's content. Not called when training fails. Return value ignored.
    """


# --- serving --------------------------------------------------------------------------------


@hookspec(firstresult=True)
def predict(model: Any, features: pd.DataFrame, output: str) -> Any:
    """Predict for the rows of `features` and return a numpy array with one entry per row.

    Called for every request. A request of a few rows (a body of at most 16 KiB, at most 64 rows)
    is predicted on the server's event loop, often with other requests' rows (a thread hop costs
    more than the work): a `predict` that blocks (on a lock, the network, a long computation)
    then stalls every request of that process, /ping included. Larger requests are predicted in
    a worker thread, possibly several at once. A plugin whose `predict` must always run in a
    thread sets `AlgorithmInfo(predict_in_thread=True)`. `features` has the training columns in their
    training order. `output` is one of `sagecraft.hooks.LABEL` (class codes 0..k-1 for
    classification, which the core maps back to the original labels; values for regression),
    `PROBABILITIES` (n_rows x n_classes), `RAW_MARGIN` (the untransformed score), `CONTRIBUTIONS`
    (per-feature contributions then the bias, summing to the raw margin; n_rows x (n_features + 1),
    times n_classes for multi-class) or `LEAVES` (n_rows x n_trees leaf indices). Answer LABEL
    always; for any other output the model cannot answer, raise
    `sagecraft.errors.UnsupportedOutputError` with a message saying why (the caller gets a 400).
    Stops at the first non-None result.

    Other plugins may wrap it, for timing, logging or auditing, with
    `@hookimpl(wrapper=True) def predict(model, features, output): result = yield; return result`.
    """


@hookspec(firstresult=True)
def builtin_default_output(model: Any, manifest: Manifest) -> str | None:
    """For a plugin that stands in for one of SageMaker's built-in algorithms: the output kind that
    algorithm answers by default for this model, or None for sagecraft's own answers.

    Called once per model, after `load_model` (hook API 6, optional). A kind (one of the
    output kinds a request may ask for, such as "probability") makes the model answer as the
    built-in algorithm does: that kind when neither the request nor SAGEMAKER_INFERENCE_OUTPUT
    chooses one, and JSON and JSON Lines one object a row, `{"score": x}` for the default and
    `{"<kind>": x}` for a chosen kind. The XGBoost plugin answers P(class 1) for a model whose
    objective the user chose as `binary:logistic`, and None when sagecraft chose it (text labels,
    no objective), whose answers stay the labels.
    """
