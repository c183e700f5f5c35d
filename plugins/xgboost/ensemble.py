"""Several model files in a built-in algorithm's model folder, served as one ensemble.

SageMaker's built-in XGBoost loads every file of its model folder and, with
`SAGEMAKER_INFERENCE_ENSEMBLE` (true by default), answers the mean of their predictions. So does
this plugin, for a folder without manifest.json that holds an `xgboost-model`: every other
regular, non-hidden file there is a member too, read and checked as any model file, and must
agree with `xgboost-model` on the objective, the classes and the features (a member that does
not is refused, named). Probabilities and values are averaged; the classes of `multi:softmax`
and `binary:hinge`, which have no probabilities, are voted (a tie goes to the lower class); the
margin is the members' mean margin. Per-tree outputs (`contributions`, `leaves`) belong to one
booster and are refused for an ensemble.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sagecraft.errors import ModelLoadError
from sagecraft.files import MAX_MODEL_FILE_SETTING, max_model_file_bytes

from .persistence import BUILTIN_MODEL_FILE

ENSEMBLE_SETTING = "SAGEMAKER_INFERENCE_ENSEMBLE"
VOTED_OBJECTIVES = ("multi:softmax", "binary:hinge")


def ensemble_enabled() -> bool:
    """SAGEMAKER_INFERENCE_ENSEMBLE, true unless set to false (as the built-in algorithm reads it)."""
    return os.environ.get(ENSEMBLE_SETTING, "true").strip().lower() not in ("false", "0", "no", "off")


def member_files(model_dir: Path) -> list[Path]:
    """The other model files of a built-in algorithm's folder, in name order: every regular,
    non-hidden file beside `xgboost-model` (none when ensembles are switched off). The folder is
    as hostile as any model file: all of the ensemble's files together are held to the one model
    file limit (SAGECRAFT_MAX_MODEL_FILE_MB), before any is read; ModelLoadError beyond."""
    if not ensemble_enabled():
        return []
    members = sorted(
        path
        for path in model_dir.iterdir()
        if path.name != BUILTIN_MODEL_FILE and not path.name.startswith(".") and path.is_file()
    )
    limit = max_model_file_bytes()
    total = sum(path.stat().st_size for path in [model_dir / BUILTIN_MODEL_FILE, *members])
    if total > limit:
        raise ModelLoadError(
            f"{model_dir} holds {len(members) + 1} model files of {total} bytes together, over the "
            f"{limit} bytes one model may take ({MAX_MODEL_FILE_SETTING}); set "
            f"{ENSEMBLE_SETTING}=false to serve xgboost-model alone"
        )
    return members


def check_member(
    path: Path,
    objective: str,
    n_classes: int,
    features: tuple[Sequence[str] | None, Sequence[str] | None, int],
    first: tuple[str, int, tuple[Sequence[str] | None, Sequence[str] | None, int]],
) -> None:
    """ModelLoadError unless a member agrees with `xgboost-model` (`first`) on what its answers mean."""
    if (objective, n_classes) != first[:2]:
        raise ModelLoadError(
            f"{path}: its objective is {objective} ({n_classes} classes), xgboost-model's "
            f"{first[0]} ({first[1]} classes): the files of an ensemble must answer alike "
            f"(set {ENSEMBLE_SETTING}=false to serve xgboost-model alone)"
        )
    if features != first[2]:
        raise ModelLoadError(
            f"{path}: its features ({features[2]}) differ from xgboost-model's ({first[2][2]}); the "
            f"files of an ensemble must read the same columns (set {ENSEMBLE_SETTING}=false to serve "
            "xgboost-model alone)"
        )


def vote(labels: Sequence[np.ndarray], n_classes: int) -> np.ndarray:
    """Each row's most frequent class among the members' (a tie: the lower class)."""
    stacked = np.stack([np.asarray(a, dtype=np.int64) for a in labels], axis=1)
    counts = np.stack([(stacked == c).sum(axis=1) for c in range(max(n_classes, 2))], axis=1)
    return counts.argmax(axis=1)


def mean(answers: Sequence[np.ndarray]) -> np.ndarray:
    return np.mean(np.stack([np.asarray(a, dtype=np.float64) for a in answers]), axis=0)
