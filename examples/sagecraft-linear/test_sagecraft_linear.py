"""The example plugin's own tests, through sagecraft's real trainer and loader (sagecraft.testing)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from sagecraft.errors import HyperparameterError
from sagecraft.testing import load, train

IRIS = load_iris(as_frame=True)
FRAME = IRIS.frame.assign(species=IRIS.target_names[IRIS.target]).drop(columns="target")


def test_classifies_iris_with_labels_and_sklearn_probabilities(tmp_path) -> None:
    model_dir = train(
        tmp_path, {"algorithm": "linear", "target": "species", "C": 10}, FRAME.to_csv(index=False)
    )
    model = load(model_dir)
    features = FRAME.drop(columns="species")
    features.columns = model.feature_names
    labels = model.predict(features)
    assert (labels == FRAME["species"]).mean() > 0.95
    reference = LogisticRegression(C=10, max_iter=1000).fit(features.to_numpy(), IRIS.target)
    assert np.allclose(
        model.predict(features, "probabilities"), reference.predict_proba(features.to_numpy()), atol=1e-4
    )


def test_regression_and_missing_values(tmp_path) -> None:
    rows = "".join(f"{2 * x + 1},{x}\n" for x in range(50))  # header-less, label first
    model = load(train(tmp_path, {"algorithm": "linear", "alpha": 0.001}, rows))
    assert model.predict(pd.DataFrame({"f0": [10.0]}))[0] == pytest.approx(21, abs=0.1)
    assert np.isfinite(model.predict(pd.DataFrame({"f0": [np.nan]}))[0])


def test_invalid_hyperparameter_is_named(tmp_path) -> None:
    with pytest.raises(HyperparameterError, match="'C' = -1"):
        train(tmp_path, {"algorithm": "linear", "target": "species", "C": -1}, FRAME.to_csv(index=False))
