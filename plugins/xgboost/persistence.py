"""Save and load a booster in XGBoost's own UBJSON format (no pickle, no code in the file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

import xgboost as xgb
from sagecraft.errors import ModelLoadError
from sagecraft.files import read_model_file

from .binary_format import MAGIC
from .messages import xgboost_message
from .model_checks import check_document
from .model_file import read_document

MODEL_FILE = "xgboost-model.ubj"
BUILTIN_MODEL_FILE = "xgboost-model"  # SageMaker's built-in algorithm's name for its model


def save_booster(booster: xgb.Booster, model_dir: Path) -> None:
    # Written from Python so that a full or read-only disk raises OSError, which the trainer reports.
    (model_dir / MODEL_FILE).write_bytes(booster.save_raw("ubj"))


def read_booster(path: Path) -> tuple[xgb.Booster, dict[str, Any]]:
    """The booster in an XGBoost model file (a saved model or a checkpoint), and XGBoost's JSON
    of it. The file is decoded and every tree checked before XGBoost's loader sees it (that loader
    trusts the file's numbers), and what XGBoost made of it is checked again, since that is what
    will predict. Raises ModelLoadError naming the file, the tree and the node."""
    return booster_from_bytes(read_model_file(path), str(path))


def booster_from_bytes(data: bytes, where: str) -> tuple[xgb.Booster, dict[str, Any]]:
    """`read_booster` for a model file's bytes (a checkpoint the leader sent, say); `where`
    names them in errors."""
    try:
        document = read_document(data)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{where} is {exc}") from None
    check_document(document, where)
    if data[:4] == MAGIC:  # a format XGBoost no longer reads: it gets the document as JSON
        data = orjson.dumps(document)
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(data))
        document = orjson.loads(bytes(booster.save_raw("json")))
    except (xgb.core.XGBoostError, orjson.JSONDecodeError) as exc:
        raise ModelLoadError(f"{where} is not an XGBoost model: {xgboost_message(exc)}") from None
    check_document(document, where)
    return booster, document


def load_booster(model_dir: Path) -> tuple[xgb.Booster, str, int, dict[str, Any]]:
    """The booster, its objective, its number of classes (2 for binary, 0 for regression), and
    XGBoost's JSON of the model (`read_booster`)."""
    path = model_dir / MODEL_FILE
    if not path.exists() and (model_dir / BUILTIN_MODEL_FILE).exists():
        path = model_dir / BUILTIN_MODEL_FILE  # a model trained elsewhere (see foreign.py)
    booster, document = read_booster(path)
    objective, n_classes = booster_objective(booster, path)
    return booster, objective, n_classes, document


def booster_objective(booster: xgb.Booster, path: Path) -> tuple[str, int]:
    """The booster's objective and number of classes (2 for binary, 0 for regression)."""
    try:
        learner = orjson.loads(booster.save_config())["learner"]
        objective = str(learner["objective"]["name"])
        n_classes = int(learner["learner_model_param"]["num_class"])
    except (xgb.core.XGBoostError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path} is not an XGBoost model: {xgboost_message(exc)}") from None
    if objective.startswith("binary:"):
        return objective, 2
    return objective, n_classes if objective.startswith("multi:") else 0
