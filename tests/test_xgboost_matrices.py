"""XGBoost trains from a QuantileDMatrix (values binned once, a byte each) when its tree method
works on histograms: the same model, to the bit, as from a DMatrix of the same rows; exact,
approx and gblinear, which need the raw values, keep the DMatrix."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from sagecraft.testing import train
from sagemaker_tree import regression_rows


def _booster(model_dir: Path) -> xgb.Booster:
    return xgb.Booster(model_file=str(model_dir / "xgboost-model.ubj"))


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"tree_method": "hist", "max_bin": 32},
        {"tree_method": "exact"},
        {"tree_method": "approx"},
        {"booster": "gblinear", "nthread": 1},  # (its shotgun updater is not deterministic in parallel)
    ],
)
def test_the_model_is_the_one_a_dmatrix_gives(tmp_path: Path, extra: dict[str, object]) -> None:
    rows, validation = regression_rows(0, 600), regression_rows(1, 200)
    hyperparameters = {"algorithm": "xgboost", "num_round": 12, "objective": "reg:squarederror", **extra}
    model_dir = train(tmp_path, hyperparameters, rows, validation)
    table = pd.read_csv(io.StringIO(rows), header=None).astype(np.float32)
    features = table.iloc[:, 1:].set_axis([f"f{i}" for i in range(5)], axis=1)
    params = {"objective": "reg:squarederror", **{k: v for k, v in extra.items()}}
    reference = xgb.train(params, xgb.DMatrix(features, label=table[0].astype(np.float64)), 12)
    check = xgb.DMatrix(features)
    assert np.array_equal(_booster(model_dir).predict(check), reference.predict(check))
