"""Save and load a booster in XGBoost's own UBJSON format (no pickle, no code in the file)."""

from __future__ import annotations

import json
from pathlib import Path

import xgboost as xgb
from sagecraft.errors import ModelLoadError

from .messages import xgboost_message

MODEL_FILE = "xgboost-model.ubj"


def save_booster(booster: xgb.Booster, model_dir: Path) -> None:
    # Written from Python so that a full or read-only disk raises OSError, which the trainer reports.
    (model_dir / MODEL_FILE).write_bytes(booster.save_raw("ubj"))


def load_booster(model_dir: Path) -> tuple[xgb.Booster, str, int]:
    """The booster, its objective, and its number of classes (2 for binary, 0 for regression)."""
    path = model_dir / MODEL_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing")
    booster = xgb.Booster()
    try:
        booster.load_model(str(path))
        learner = json.loads(booster.save_config())["learner"]
    except (xgb.core.XGBoostError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{path} is not an XGBoost model: {xgboost_message(exc)}") from None
    objective = learner["objective"]["name"]
    if objective.startswith("binary:"):
        n_classes = 2
    elif objective.startswith("multi:"):
        n_classes = int(learner["learner_model_param"]["num_class"])
    else:
        n_classes = 0
    return booster, objective, n_classes
