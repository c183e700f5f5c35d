"""The XGBoost algorithm, registered as `xgboost`.

Takes the hyperparameter names of SageMaker's built-in XGBoost algorithm (`num_round`, `eta`,
`objective`, `early_stopping_rounds`, ...) and passes any other native XGBoost parameter (such as
`device`) through to XGBoost, rejecting only names XGBoost itself does not use. Serves the
built-in algorithm's own model folders (a lone `xgboost-model`) too: `describe_model`; and a model
whose objective the user chose answers as the built-in algorithm does: `builtin_default_output`.
"""

from __future__ import annotations

from .algorithm import (
    algorithm_info,
    builtin_default_output,
    describe_model,
    fit,
    infer_task,
    load_model,
    predict,
    save_model,
)

__all__ = [
    "algorithm_info",
    "builtin_default_output",
    "describe_model",
    "fit",
    "infer_task",
    "load_model",
    "predict",
    "save_model",
]
