"""Save and load a fitted forest with skops, which never executes code from the file.

skops treats `sklearn.tree._tree.Tree` as untrusted because scikit-learn indexes its node arrays
without bounds checks: a crafted file could crash the process at predict time. We trust that one
type and then check every tree's node arrays ourselves before the model is used.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from sagecraft.errors import ModelLoadError

MODEL_FILE = "model.skops"
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]


def _skops_io() -> ModuleType:
    # Imported when a forest is saved or loaded: skops imports all of scikit-learn and scipy.stats
    # (about 0.4 s), which an XGBoost job or endpoint, where this plugin is merely installed, skips.
    import skops.io

    return skops.io


def save_forest(model: RandomForestClassifier | RandomForestRegressor, model_dir: Path) -> None:
    _skops_io().dump(model, model_dir / MODEL_FILE)


def _check_tree(tree: object, n_features: int, where: str) -> None:
    nodes = tree.node_count
    left, right, feature = tree.children_left, tree.children_right, tree.feature
    if not (len(left) == len(right) == len(feature) == nodes == tree.value.shape[0]):
        raise ModelLoadError(f"{where}: node arrays disagree in length")
    leaf = left == -1
    children_ok = np.all((right == -1) == leaf) and np.all(
        leaf | ((left > 0) & (left < nodes) & (right > 0) & (right < nodes))
    )
    if not children_ok or not np.all(leaf | ((feature >= 0) & (feature < n_features))):
        raise ModelLoadError(f"{where}: a node points outside the tree or the features")


def load_forest(model_dir: Path) -> RandomForestClassifier | RandomForestRegressor:
    path = model_dir / MODEL_FILE
    skops_io = _skops_io()
    try:
        untrusted = set(skops_io.get_untrusted_types(file=path)) - set(TRUSTED_TYPES)
        if untrusted:
            raise ModelLoadError(
                f"{path} holds types that are not part of a random forest: {sorted(untrusted)}"
            )
        model = skops_io.load(path, trusted=TRUSTED_TYPES)
    except ModelLoadError:
        raise
    except FileNotFoundError:
        raise ModelLoadError(f"{path} is missing") from None
    except Exception as exc:  # skops raises many types for a corrupt archive
        raise ModelLoadError(f"{path} cannot be loaded: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, (RandomForestClassifier, RandomForestRegressor)):
        raise ModelLoadError(f"{path} holds a {type(model).__name__}, not a random forest")
    for index, estimator in enumerate(model.estimators_):
        _check_tree(estimator.tree_, model.n_features_in_, f"{path}, tree {index}")
    return model
