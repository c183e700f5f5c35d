"""A model ready to serve: its manifest, its plugin, and the plugin's loaded object."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .categories import FeatureNames
from .errors import ModelLoadError, SagecraftError
from .manifest import MANIFEST_FILE, Manifest
from .model_types import CLASSIFICATION, LABEL
from .plugins import Algorithm, PluginSet, installed_plugins

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    manifest: Manifest
    algorithm: Algorithm
    model: Any
    classes: np.ndarray  # original labels by class code; empty for regression
    # The default output of the SageMaker built-in algorithm it answers as, or None (sagecraft's).
    builtin_default: str | None = None

    @classmethod
    def load(cls, model_dir: Path, plugins: PluginSet | None = None) -> LoadedModel:
        """Read the manifest, pick its plugin, and load the model. Raises ModelLoadError."""
        if not model_dir.is_dir():
            raise ModelLoadError(f"model folder {model_dir} does not exist")
        plugins = plugins or installed_plugins()
        described = None
        if not os.path.lexists(model_dir / MANIFEST_FILE):
            described = plugins.describe_model(model_dir)  # a model trained elsewhere
        manifest = described or Manifest.read(model_dir)
        if described is not None:
            log.info("%s has no manifest.json: serving it as a %s model", model_dir, manifest.algorithm)
        try:
            algorithm = plugins.algorithm(manifest.algorithm)
        except SagecraftError as exc:
            raise ModelLoadError(f"{model_dir} needs algorithm '{manifest.algorithm}': {exc}") from None
        model = algorithm.load_model(model_dir, manifest)
        classes = np.array(manifest.classes, dtype=object)
        if classes.size and all(isinstance(c, (int, float)) for c in manifest.classes):
            classes = np.array(manifest.classes)
        log.info(
            "loaded %s model from %s (%s, %d features)",
            manifest.algorithm,
            model_dir,
            manifest.task,
            len(manifest.features),
        )
        return cls(manifest, algorithm, model, classes, algorithm.builtin_default_output(model, manifest))

    @functools.cached_property
    def feature_names(self) -> FeatureNames:
        """The feature names decoders receive, with the categories of categorical features."""
        largest = (
            float(np.finfo(self.algorithm.info.feature_dtype).max)
            if np.dtype(self.algorithm.info.feature_dtype).kind == "f"
            else None
        )
        return FeatureNames(self.manifest.feature_names, self.manifest.categories, largest)

    def predict(self, features: pd.DataFrame, output: str = LABEL) -> np.ndarray:
        """Predictions for every row, class codes mapped back to the original labels."""
        result = np.asarray(self.algorithm.predict(self.model, features, output))
        if len(result) != len(features):
            raise SagecraftError(
                f"plugin '{self.manifest.algorithm}' returned {len(result)} predictions for "
                f"{len(features)} rows"
            )
        if output == LABEL and self.manifest.task == CLASSIFICATION:
            return self.classes[result.astype(np.intp)]
        return result
