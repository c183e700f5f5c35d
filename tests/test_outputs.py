"""Prediction outputs beyond labels and probabilities: raw margins, per-feature contributions
(XGBoost's SHAP values) and leaf indices, through the real server, checked against the libraries."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import requests
import skops.io
import xgboost as xgb

from sagemaker_tree import IRIS_FEATURES, Server, TrainingTree

ROWS = "5.0,3.4,1.5,0.2\n6.7,3.0,5.2,2.3\n5.9,3.0,4.2,1.5"
MATRIX = np.array([[float(v) for v in line.split(",")] for line in ROWS.splitlines()], dtype=np.float32)


IRIS_MATRIX = xgb.DMatrix(MATRIX, feature_names=IRIS_FEATURES)


def _ask(server: Server, output: str, body: str = ROWS) -> requests.Response:
    return server.session.post(
        f"{server.url}/invocations",
        data=body,
        headers={
            "Content-Type": "text/csv",
            "Accept": "application/json",
            "X-Amzn-SageMaker-Custom-Attributes": f"output={output}",
        },
    )


def _values(server: Server, output: str, body: str = ROWS) -> np.ndarray:
    response = _ask(server, output, body)
    assert response.status_code == 200, response.text
    return np.array(response.json()["predictions"], dtype=float)


def _booster(tree: TrainingTree) -> xgb.Booster:
    booster = xgb.Booster()
    booster.load_model(str(tree.model_dir / "xgboost-model.ubj"))
    return booster


def test_xgboost_contributions_plus_bias_equal_the_margin_for_every_class(
    xgboost_server: Server, iris_xgboost: TrainingTree
) -> None:
    margin = _values(xgboost_server, "raw_margin")
    contributions = _values(xgboost_server, "contributions")
    assert margin.shape == (3, 3)
    assert contributions.shape == (3, 3 * (4 + 1))  # per class: 4 features and the bias
    per_class = contributions.reshape(3, 3, 5)
    np.testing.assert_allclose(per_class.sum(axis=2), margin, rtol=1e-5, atol=1e-5)
    expected = _booster(iris_xgboost).predict(IRIS_MATRIX, output_margin=True)
    np.testing.assert_allclose(margin, expected, rtol=1e-6)
    # The margins' softmax is what output=probabilities answers.
    probabilities = _values(xgboost_server, "probabilities")
    softmax = np.exp(margin) / np.exp(margin).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, softmax, rtol=1e-5)


def test_xgboost_regression_contributions_sum_to_the_prediction(regression_server: Server) -> None:
    body = "1,0,0,0,0\n-1,2,0.5,0,1"
    prediction = _values(regression_server, "predicted_label", body)
    margin = _values(regression_server, "raw_margin", body)
    contributions = _values(regression_server, "contributions", body)
    assert contributions.shape == (2, 6)
    np.testing.assert_allclose(margin, prediction, rtol=1e-6)
    np.testing.assert_allclose(contributions.sum(axis=1), prediction, rtol=1e-4, atol=1e-4)


def test_xgboost_leaves_are_the_boosters_leaf_indices(
    xgboost_server: Server, iris_xgboost: TrainingTree
) -> None:
    leaves = _values(xgboost_server, "leaves")
    expected = _booster(iris_xgboost).predict(IRIS_MATRIX, pred_leaf=True)
    np.testing.assert_array_equal(leaves, expected.reshape(3, -1))
    lines = xgboost_server.session.post(
        f"{xgboost_server.url}/invocations",
        data=ROWS,
        headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Custom-Attributes": "output=leaves"},
    ).text
    assert len(lines.splitlines()) == 3
    assert len(lines.splitlines()[0].split(",")) == expected.reshape(3, -1).shape[1]


def test_forest_leaves_are_scikit_learns_apply(forest_server: Server, iris_forest: TrainingTree) -> None:
    forest = skops.io.load(
        iris_forest.model_dir / "model.skops",
        trusted=skops.io.get_untrusted_types(file=iris_forest.model_dir / "model.skops"),
    )
    leaves = _values(forest_server, "leaves")
    np.testing.assert_array_equal(leaves, forest.apply(MATRIX))


@pytest.mark.parametrize("output", ["raw_margin", "contributions"])
def test_forest_has_no_margin_or_contributions(forest_server: Server, output: str) -> None:
    response = _ask(forest_server, output)
    assert response.status_code == 400
    assert f"a random forest has no '{output}'" in response.json()["message"]
    assert _ask(forest_server, "predicted_label").status_code == 200


def test_container_default_output_can_be_contributions(iris_xgboost: TrainingTree) -> None:
    server = Server(
        iris_xgboost.base, SAGEMAKER_INFERENCE_OUTPUT="contributions", SAGEMAKER_MODEL_SERVER_WORKERS="1"
    ).wait_ready()
    try:
        response = server.session.post(
            f"{server.url}/invocations", data=ROWS, headers={"Content-Type": "text/csv"}
        )
        assert len(response.text.splitlines()[0].split(",")) == 15
    finally:
        server.stop()


def test_several_outputs_per_record_as_aws_containers_give_them(iris_forest: TrainingTree) -> None:
    """SAGEMAKER_INFERENCE_OUTPUT=predicted_label,probabilities: each record answers both."""
    server = Server(
        iris_forest.base,
        SAGEMAKER_INFERENCE_OUTPUT="predicted_label,probabilities",
        SAGEMAKER_MODEL_SERVER_WORKERS="1",
    ).wait_ready()
    try:
        # One cell an output; the list as one quoted cell, as AWS's containers write it.
        cells = list(csv.reader(io.StringIO(server.invoke(ROWS).text)))
        assert [c[0] for c in cells] == ["setosa", "virginica", "versicolor"]
        assert all(len(c) == 2 and abs(sum(json.loads(c[1])) - 1) < 1e-6 for c in cells)
        records = server.invoke(ROWS, accept="application/json").json()["predictions"]
        assert [list(r) for r in records] == [["predicted_label", "probabilities"]] * 3
        assert records[0]["predicted_label"] == "setosa" and len(records[0]["probabilities"]) == 3
        jsonlines = server.invoke(ROWS, accept="application/jsonlines").text.splitlines()
        assert len(jsonlines) == 3 and jsonlines[0].startswith('{"predicted_label":"setosa"')
        npy = server.invoke(ROWS, accept="application/x-npy")
        assert npy.status_code == 406
        assert "several outputs per record" in npy.json()["message"]
        # A request may still ask for one kind.
        single = server.session.post(
            f"{server.url}/invocations",
            data=ROWS,
            headers={
                "Content-Type": "text/csv",
                "X-Amzn-SageMaker-Custom-Attributes": "output=predicted_label",
            },
        )
        assert single.text.splitlines() == ["setosa", "virginica", "versicolor"]
    finally:
        server.stop()
