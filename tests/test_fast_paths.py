"""Fast paths must answer exactly what the general paths answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from sagecraft.codecs import decode_csv
from sagecraft.model_types import LABEL, PROBABILITIES
from sagecraft_random_forest.algorithm import ServingForest, predict
from sagecraft_random_forest.flat_forest import FLAT_MAX_ROWS, FlatForest

RNG = np.random.default_rng(0)


def _data(rows: int, nan_share: float) -> np.ndarray:
    matrix = RNG.normal(size=(rows, 12)).astype(np.float32)
    matrix[RNG.random(matrix.shape) < nan_share] = np.nan
    return matrix


@pytest.fixture(scope="module")
def classifier() -> RandomForestClassifier:
    x = _data(4000, 0.03)
    y = (np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) ** 2 > 1).astype(int) + (x[:, 2] > 1)
    return RandomForestClassifier(n_estimators=60, random_state=0, n_jobs=1).fit(x, y)


@pytest.fixture(scope="module")
def regressor() -> RandomForestRegressor:
    x = _data(4000, 0.03)
    return RandomForestRegressor(n_estimators=40, max_depth=14, random_state=0, n_jobs=1).fit(
        x, np.nan_to_num(x[:, 3]) * 2 + np.nan_to_num(x[:, 4]))


def test_flat_forest_matches_scikit_learn_probabilities_on_thousands_of_rows(
    classifier: RandomForestClassifier,
) -> None:
    rows = _data(5000, 0.05)
    flat = FlatForest.from_forest(classifier).predict_values(rows)
    reference = classifier.predict_proba(rows)
    assert np.allclose(flat, reference, rtol=0, atol=1e-12)
    assert (flat.argmax(axis=1) == classifier.predict(rows)).all()


def test_flat_forest_matches_scikit_learn_regression(regressor: RandomForestRegressor) -> None:
    rows = _data(5000, 0.05)
    flat = FlatForest.from_forest(regressor).predict_values(rows)[:, 0]
    assert np.allclose(flat, regressor.predict(rows), rtol=0, atol=1e-12)


@pytest.mark.parametrize("rows", [1, 7, FLAT_MAX_ROWS, FLAT_MAX_ROWS + 1, 3000])
def test_plugin_predict_is_the_same_on_both_sides_of_the_switch(
    classifier: RandomForestClassifier, rows: int
) -> None:
    serving = ServingForest(classifier, FlatForest.from_forest(classifier))
    frame = pd.DataFrame(_data(rows, 0.05))
    labels = predict(model=serving, features=frame, output=LABEL)
    assert (labels == classifier.predict(frame.to_numpy(np.float32))).all()
    probabilities = predict(model=serving, features=frame, output=PROBABILITIES)
    assert np.allclose(probabilities, classifier.predict_proba(frame.to_numpy(np.float32)),
                       rtol=0, atol=1e-12)


def test_large_csv_parser_equals_the_small_one() -> None:
    names = [f"f{i}" for i in range(5)]
    matrix = np.round(RNG.normal(size=(30_000, 5)), 4)
    body = "\n".join(",".join(f"{v:g}" for v in row) for row in matrix).encode()
    assert len(body) > 256 * 1024
    large = decode_csv(body, names)
    small = pd.concat([decode_csv(b"\n".join(body.split(b"\n")[i:i + 1000]), names)
                       for i in range(0, 30_000, 1000)], ignore_index=True)
    assert large.equals(small)
    assert np.array_equal(large.to_numpy(), matrix)
