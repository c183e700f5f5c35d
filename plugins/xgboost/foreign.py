"""Models trained elsewhere: the `xgboost-model` file in a `model.tar.gz` of SageMaker's built-in
XGBoost algorithm (UBJSON or JSON, as XGBoost 2 and 3 write them, or XGBoost 1's binary format,
binary_format.py), described so that it serves without a manifest.json. Pickled boosters (older
built-in versions) are refused saying how to convert them: sagecraft never unpickles, and every
file is decoded and checked in Python before XGBoost's parser sees it. Other model files in the
folder make an ensemble with it: ensemble.py.
"""

from __future__ import annotations

from pathlib import Path

import xgboost as xgb
from sagecraft.errors import ModelLoadError
from sagecraft.files import read_model_file
from sagecraft.manifest import Feature, Manifest, runtime_libraries
from sagecraft.model_types import CLASSIFICATION, REGRESSION

from .model_checks import category_names, trees_of
from .persistence import BUILTIN_MODEL_FILE, booster_objective, read_booster

_PICKLE = b"\x80"


def describe(model_dir: Path) -> Manifest | None:
    """The manifest of a built-in algorithm's model folder, or None when `model_dir` holds no
    `xgboost-model`; ModelLoadError for one that cannot be served, saying how to convert it."""
    path = model_dir / BUILTIN_MODEL_FILE
    if not path.exists():
        return None
    data = read_model_file(path)
    if data[:1] == _PICKLE:
        raise ModelLoadError(
            f"{path} is a pickled booster (older SageMaker XGBoost versions wrote them), and sagecraft "
            "never unpickles a model. Where you trust the file, unpickle it once with the xgboost "
            "that wrote it and save the booster as JSON, booster.save_model('xgboost-model.json'), "
            "then ship that file as xgboost-model"
        )
    booster, document = read_booster(path)
    objective, n_classes = booster_objective(booster, path)
    n_features = booster.num_features()
    names = booster.feature_names or [f"f{i}" for i in range(n_features)]
    booster_model = document["learner"]["gradient_booster"]
    model = (
        booster_model["gbtree"]["model"]
        if booster_model["name"] == "dart"
        else booster_model.get("model", {})
    )
    categories = (
        category_names(model, n_features, str(path)) if trees_of(document)[0] else [None] * n_features
    )
    types = booster.feature_types or ["float"] * n_features
    for name, kind, known in zip(names, types, categories, strict=True):
        if kind == "c" and known is None:
            raise ModelLoadError(
                f"{path}: feature '{name}' is categorical, but the model does not list its categories, "
                "so requests cannot be encoded as in training"
            )
    task, classes = (CLASSIFICATION, list(range(n_classes))) if n_classes else (REGRESSION, [])
    features = [
        Feature(str(name), "category" if known is not None else "float32", known)
        for name, known in zip(names, categories, strict=True)
    ]
    return Manifest(
        algorithm="xgboost",
        task=task,
        features=features,
        target=None,
        classes=classes,
        plugin={"name": "xgboost", "trained_by": "another XGBoost (the folder has no manifest.json)"},
        libraries=runtime_libraries({"xgboost": xgb.__version__}),
        hyperparameters={"objective": objective},
    )
