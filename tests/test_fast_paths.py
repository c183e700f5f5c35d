"""Fast paths must answer exactly what the general paths answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import requests
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from sagecraft.codecs import decode_csv
from sagecraft.model_types import LABEL, PROBABILITIES
from sagecraft_random_forest.algorithm import ServingForest, predict
from sagecraft_random_forest.flat_forest import FLAT_MAX_ROWS, FlatForest
from sagemaker_tree import Server, TrainingTree

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


@pytest.mark.parametrize("batching", ["true", "false"])
def test_concurrent_requests_get_their_own_answers_with_and_without_batching(
    iris_xgboost: TrainingTree, batching: str
) -> None:
    """Merged predictions are split back to the right requests, exactly as predicted alone."""
    from concurrent.futures import ThreadPoolExecutor

    from sagecraft.loaded_model import LoadedModel

    rows = np.round(RNG.uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], size=(400, 4)), 2)
    model = LoadedModel.load(iris_xgboost.model_dir)
    expected = model.predict(pd.DataFrame(rows, columns=model.feature_names)).tolist()
    server = Server(iris_xgboost.base, SAGECRAFT_REQUEST_BATCHING=batching).wait_ready()
    try:
        def ask(index: int) -> tuple[int, str]:
            with requests.Session() as session:
                body = ",".join(map(str, rows[index])) if index % 3 else "\n".join(
                    ",".join(map(str, row)) for row in rows[index:index + 3])
                answer = session.post(server.url + "/invocations", data=body,
                                      headers={"Content-Type": "text/csv"}, timeout=60)
                return index, answer.text

        with ThreadPoolExecutor(32) as pool:
            answers = dict(pool.map(ask, range(len(rows) - 3)))
        for index, text in answers.items():
            wanted = expected[index:index + (1 if index % 3 else 3)]
            assert text.splitlines() == wanted, index
        bad = server.invoke("1,2")
        assert bad.status_code == 400 and server.invoke("5,3.4,1.5,0.2").text == "setosa\n"
    finally:
        server.stop()
