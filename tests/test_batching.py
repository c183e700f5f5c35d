"""Units: the request batcher (sagecraft.serving.batching) around a real model trained and loaded
in-process, without a server: concurrent requests share one predict call and each gets its own
rows' answers, whatever form its rows came in."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sagecraft.loaded_model import LoadedModel
from sagecraft.serving.batching import PredictionBatcher
from sagecraft.serving.tables import feature_table
from sagecraft.testing import load, train
from sagemaker_tree import REPO


class CountingModel:
    """The real loaded model, counting its predict calls and the rows of each."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.feature_names = model.feature_names
        self.calls: list[int] = []

    def predict(self, features: pd.DataFrame, output: str = "label") -> np.ndarray:
        self.calls.append(len(features))
        return self.model.predict(features, output)


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    base: Path = tmp_path_factory.mktemp("batching")
    csv = (REPO / "demo" / "iris.csv").read_text()
    return load(train(base, {"algorithm": "random_forest", "target": "Species", "ntree": 10}, csv))


ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def _batcher(model: LoadedModel, max_rows: int = 256) -> tuple[PredictionBatcher, CountingModel]:
    counting = CountingModel(model)
    return PredictionBatcher(counting, max_rows=max_rows), counting  # type: ignore[arg-type]


def test_concurrent_requests_share_one_predict_and_get_their_own_rows(iris_model: LoadedModel) -> None:
    batcher, counting = _batcher(iris_model)
    matrix = np.array(ROWS, dtype=np.float64)
    parts: list[Any] = [
        [ROWS[0]],  # lists of floats, as a fast reader gives them
        matrix[1:],  # a float64 matrix
        feature_table(matrix[:1].copy(), iris_model.feature_names),  # a decoded table
    ]

    async def run() -> list[np.ndarray]:
        return await asyncio.gather(*(batcher.predict(part) for part in parts))

    answers = asyncio.run(run())
    assert counting.calls == [4]
    expected = iris_model.predict(feature_table(matrix, iris_model.feature_names))
    assert answers[0].tolist() == expected[:1].tolist()
    assert answers[1].tolist() == expected[1:].tolist()
    assert answers[2].tolist() == expected[:1].tolist()


def test_a_full_batch_is_predicted_at_once_and_the_rest_follows(iris_model: LoadedModel) -> None:
    batcher, counting = _batcher(iris_model, max_rows=2)

    async def run() -> list[np.ndarray]:
        return await asyncio.gather(*(batcher.predict([row]) for row in ROWS))

    answers = asyncio.run(run())
    assert counting.calls == [2, 1]
    assert [a.tolist() for a in answers] == [
        iris_model.predict(feature_table(np.array([row]), iris_model.feature_names)).tolist() for row in ROWS
    ]


def test_an_error_reaches_every_request_of_its_batch(iris_model: LoadedModel) -> None:
    batcher, _ = _batcher(iris_model)

    async def run() -> list[Any]:
        good = batcher.predict([ROWS[0]])
        bad = batcher.predict([[1.0, 2.0]])  # a row of the wrong width fails the batch's predict
        return await asyncio.gather(good, bad, return_exceptions=True)

    results = asyncio.run(run())
    assert all(isinstance(result, Exception) for result in results)
    assert asyncio.run(batcher.predict([ROWS[0]])).tolist() == ["setosa"]  # the next batch is fine
