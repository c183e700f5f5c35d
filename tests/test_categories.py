"""Categorical features: text columns become categories in both plugins, the manifest keeps the
categories, serving applies the same encoding in every format, and a category never seen in
training is a missing value (documented), as a missing cell is."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sagemaker_tree import Server, TrainingTree

COLOURS = ["red", "green", "blue"]


def _rows(seed: int, count: int) -> list[tuple[str, str, float]]:
    """label depends on the colour (red -> yes) and on x; some colours and x are missing."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        colour = COLOURS[rng.integers(3)]
        x = rng.normal()
        label = "yes" if colour == "red" or x > 1.5 else "no"
        rows.append((label, "" if rng.random() < 0.05 else colour, "" if rng.random() < 0.05 else f"{x:.3f}"))
    return rows


def _tree(base: Path, algorithm: str) -> TrainingTree:
    tree = TrainingTree(base)
    lines = ["label,colour,x", *(",".join(r) for r in _rows(0, 600))]
    tree.add_file("train", "train.csv", "\n".join(lines) + "\n")
    validation = ["label,colour,x", *(",".join(r) for r in _rows(1, 100))]
    tree.add_file("validation", "validation.csv", "\n".join(validation) + "\n")
    tree.channels(train="text/csv", validation="text/csv")
    tree.hyperparameters(
        {"algorithm": algorithm, "target": "label", **({"num_round": 30} if algorithm == "xgboost" else {})}
    )
    return tree


@pytest.fixture(scope="module", params=["random_forest", "xgboost"])
def categorical(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    tree = _tree(tmp_path_factory.mktemp(f"categorical-{request.param}"), request.param)
    assert tree.train().returncode == 0, tree.explain()
    server = Server(tree.base, SAGEMAKER_MODEL_SERVER_WORKERS="1").wait_ready()
    yield tree, server
    server.stop()


def test_the_manifest_keeps_the_training_categories(categorical) -> None:
    tree, _ = categorical
    manifest = json.loads((tree.model_dir / "manifest.json").read_text())
    features = {f["name"]: f for f in manifest["features"]}
    assert features["colour"]["categories"] == sorted(COLOURS)
    assert features["x"].get("categories") is None
    assert "validation-" in tree.result.stdout  # the validation channel was encoded the same way


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("text/csv", "red,0\nblue,0\ngreen,2.5", ["yes", "no", "yes"]),
        ("application/json", '{"instances": [["red", 0], ["blue", 0]]}', ["yes", "no"]),
        ("application/json", '[{"colour": "red", "x": 0}, {"colour": "green", "x": 0}]', ["yes", "no"]),
        ("application/jsonlines", '["red", 0]\n{"colour": "blue", "x": 0}', ["yes", "no"]),
    ],
)
def test_serving_applies_the_same_encoding_in_every_format(
    categorical, content_type: str, body: str, expected: list[str]
) -> None:
    _, server = categorical
    response = server.invoke(body, content_type, accept="application/json")
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == expected


def test_parquet_requests_with_categories(categorical) -> None:
    _, server = categorical
    buffer = io.BytesIO()
    pq.write_table(pa.table({"colour": ["red", "blue"], "x": [0.0, 0.0]}), buffer)
    response = server.invoke(buffer.getvalue(), "application/x-parquet", accept="application/json")
    assert response.json()["predictions"] == ["yes", "no"]


def test_an_unseen_category_is_a_missing_value(categorical) -> None:
    _, server = categorical
    unseen = server.invoke("purple,0.1\n,0.1", accept="application/json")
    assert unseen.status_code == 200, unseen.text
    first, missing = unseen.json()["predictions"]
    assert first == missing  # "purple" is answered exactly as an empty (missing) colour
    probabilities = server.session.post(
        f"{server.url}/invocations",
        data="purple,0.1\n,0.1",
        headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Custom-Attributes": "output=probabilities"},
    ).text.splitlines()
    assert probabilities[0] == probabilities[1]


def test_concurrent_small_requests_are_batched_with_their_categories(categorical) -> None:
    import concurrent.futures

    _, server = categorical
    bodies = ["red,0", "blue,0", "green,0", "purple,0"] * 10
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: server.invoke(b).text.strip(), bodies))
    alone = [server.invoke(b).text.strip() for b in bodies[:4]]
    assert answers == alone * 10


def test_a_number_in_a_categorical_column_is_its_text(tmp_path: Path) -> None:
    """A text column whose values include "3": a JSON number 3 is that category."""
    tree = TrainingTree(tmp_path)
    kinds = ["a", "b", "3"] * 40
    rows = ["y,kind,x", *(f"{int(k == '3')},{k},{i % 5}" for i, k in enumerate(kinds))]
    tree.add_file("train", "t.csv", "\n".join(rows) + "\n")
    tree.hyperparameters({"algorithm": "xgboost", "target": "y", "num_round": 10, "task": "classification"})
    assert tree.train().returncode == 0, tree.explain()
    server = Server(tree.base, SAGEMAKER_MODEL_SERVER_WORKERS="1").wait_ready()
    try:
        assert server.invoke("3,1\na,1").text == "1\n0\n"
        assert server.invoke('{"instances": [[3, 1], ["b", 1]]}', "application/json").json() == {
            "predictions": [1, 0]
        }
    finally:
        server.stop()


def test_a_literal_backslash_n_inside_a_quoted_category_is_kept() -> None:
    """A shell's literal `\\n` separates rows, but not inside a quoted cell: the category
    `C:\\new` stays itself (it was split into two rows and read as a missing value)."""
    from sagecraft.categories import FeatureNames
    from sagecraft.serving.csv_bodies import decode_csv

    features = FeatureNames(["path", "x"], {"path": ["C:\\new", "D:\\old"]})
    table = decode_csv(b'"C:\\new",1.5\\n"D:\\old",2', features)
    assert list(table["path"]) == ["C:\\new", "D:\\old"]
    assert list(table["x"]) == [1.5, 2.0]
