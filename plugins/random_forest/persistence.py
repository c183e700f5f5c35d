"""Save and load a fitted forest with skops, which never executes code from the file.

skops treats `sklearn.tree._tree.Tree` as untrusted because scikit-learn indexes its node arrays
without bounds checks: a crafted file could crash the process at predict time. We trust that one
type and then check every tree's node arrays ourselves before the model is used.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.tree._tree import Tree

from sagecraft.errors import ModelLoadError
from sagecraft.files import MAX_MODEL_FILE_SETTING, max_model_file_bytes, read_model_file
from sagecraft.flat_trees import check_values

from .flat_forest import Forest, tree_nodes

MODEL_FILE = "model.skops"
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]


def _skops_io() -> ModuleType:
    # Imported when a forest is saved or loaded: skops imports all of scikit-learn and scipy.stats
    # (about 0.4 s), which an XGBoost job or endpoint, where this plugin is merely installed, skips.
    import skops.io

    return skops.io


def save_forest(model: Forest, model_dir: Path) -> None:
    _skops_io().dump(model, model_dir / MODEL_FILE)


def forest_bytes(model: Forest) -> bytes:
    """The forest as the bytes of its model file (sent to the leader of a multi-host job)."""
    return bytes(_skops_io().dumps(model))


def _check_tree(tree: Any, n_features: int, where: str) -> None:
    if not (tree.node_count == len(tree.children_left) == tree.value.shape[0]):
        raise ModelLoadError(f"{where}: node arrays disagree in length")
    tree_nodes(tree).check(n_features, where)
    check_values(tree.value, where)


def _check_archive(data: bytes, path: Path | str) -> None:
    """A skops file is a zip archive: refuse one whose members would expand past the model file
    limit before skops inflates them."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            expanded = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError) as exc:
        raise ModelLoadError(f"{path} is not a skops archive: {exc}") from None
    if expanded > max_model_file_bytes():
        raise ModelLoadError(
            f"{path} expands to {expanded:,} bytes, over the limit of "
            f"{max_model_file_bytes():,} ({MAX_MODEL_FILE_SETTING})"
        )


def _rebuilt_forest(model: object, path: Path | str) -> Forest:
    """A new forest of scikit-learn's defaults holding only the loaded one's checked trees, feature
    count and classes. Any other attribute of the file (a parameter, a fitted attribute that
    predict reads, one missing) cannot reach a prediction: the file only supplies data."""
    if not isinstance(model, (RandomForestClassifier, RandomForestRegressor)):
        raise ModelLoadError(f"{path} holds a {type(model).__name__}, not a random forest")
    classifier = isinstance(model, RandomForestClassifier)
    n_features = getattr(model, "n_features_in_", None)
    estimators = getattr(model, "estimators_", None)
    classes = np.asarray(getattr(model, "classes_", ())) if classifier else None
    if not (
        isinstance(n_features, int) and n_features >= 1 and isinstance(estimators, list) and estimators
    ) or (classes is not None and (classes.ndim != 1 or not len(classes))):
        raise ModelLoadError(
            f"{path} is not a fitted random forest (no trees, no feature count or no classes)"
        )
    n_classes = 1 if classes is None else len(classes)
    # One request's rows are few: joblib's thread start costs more than the trees (9 ms vs 30 ms).
    fresh = (RandomForestClassifier if classifier else RandomForestRegressor)(n_jobs=1)
    fresh.n_features_in_, fresh.n_outputs_ = n_features, 1
    fresh.estimators_ = []
    for index, estimator in enumerate(estimators):
        where = f"{path}, tree {index}"
        tree = getattr(estimator, "tree_", None)
        if not isinstance(tree, Tree):
            raise ModelLoadError(f"{where} is not a fitted decision tree")
        try:  # a Tree's arrays are views sized by its own counts, which the file also gives
            if (
                tree.n_features != n_features
                or tree.n_outputs != 1
                or tree.value.ndim != 3
                or tree.value.shape[1:] != (1, n_classes)
            ):
                raise ModelLoadError(f"{where}: its features, outputs or classes are not the forest's")
            _check_tree(tree, n_features, where)
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            raise ModelLoadError(f"{where} is not a well-formed tree: {exc}") from None
        clean = DecisionTreeClassifier() if classifier else DecisionTreeRegressor()
        clean.tree_, clean.n_features_in_, clean.n_outputs_ = tree, n_features, 1
        if classes is not None:
            clean.classes_, clean.n_classes_ = classes, n_classes
        fresh.estimators_.append(clean)
    if classes is not None:
        fresh.classes_, fresh.n_classes_ = classes, n_classes
    return fresh


def load_forest(model_dir: Path) -> Forest:
    path = model_dir / MODEL_FILE
    return forest_from_bytes(read_model_file(path), path)


def forest_from_bytes(data: bytes, where: Path | str) -> Forest:
    """The checked forest in a model file's bytes; `where` names them in errors."""
    _check_archive(data, where)
    skops_io = _skops_io()
    try:
        untrusted = set(skops_io.get_untrusted_types(data=data)) - set(TRUSTED_TYPES)
        if untrusted:
            raise ModelLoadError(
                f"{where} holds types that are not part of a random forest: {sorted(untrusted)}"
            )
        model = skops_io.load(io.BytesIO(data), trusted=TRUSTED_TYPES)
    except ModelLoadError:
        raise
    except Exception as exc:  # skops raises many types for a corrupt archive
        raise ModelLoadError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from None
    return _rebuilt_forest(model, where)
