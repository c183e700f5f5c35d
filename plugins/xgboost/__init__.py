"""The XGBoost algorithm, registered as `xgboost`.

Takes the hyperparameter names of SageMaker's built-in XGBoost algorithm (`num_round`, `eta`,
`objective`, `early_stopping_rounds`, ...) and passes any other native XGBoost parameter (such as
`device`) through to XGBoost, rejecting only names XGBoost itself does not use.
"""

from __future__ import annotations

from .algorithm import algorithm_info, fit, infer_task, load_model, predict, save_model

__all__ = ["algorithm_info", "fit", "infer_task", "load_model", "predict", "save_model"]
