"""The random forest algorithm (scikit-learn), registered as `random_forest`.

Classification when the labels are non-numeric, regression when numeric, or as the `task`
hyperparameter says. scikit-learn's parameter names work, and so do R randomForest's (`ntree`,
`mtry`, `nodesize`, `maxnodes`) for users of the original R container.
"""

from __future__ import annotations

from .algorithm import algorithm_info, fit, load_model, predict, save_model

__all__ = ["algorithm_info", "fit", "load_model", "predict", "save_model"]
