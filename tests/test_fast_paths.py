"""Fast paths must answer exactly what the general paths answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import requests
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from sagecraft.errors import BadRequestError
from sagecraft.model_types import LABEL, PROBABILITIES, RAW_MARGIN
from sagecraft.serving import csv_bodies, json_bodies
from sagecraft.serving.csv_bodies import decode_csv
from sagecraft_random_forest.algorithm import ServingForest, predict
from sagecraft_random_forest.flat_forest import FLAT_MAX_ROWS, FlatForest
from sagecraft_xgboost import algorithm as xgboost_plugin
from sagecraft_xgboost.flat_booster import FLAT_MAX_ROWS as XGBOOST_FLAT_MAX_ROWS
from sagecraft_xgboost.flat_booster import flatten
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
        x, np.nan_to_num(x[:, 3]) * 2 + np.nan_to_num(x[:, 4])
    )


def test_flat_forest_matches_scikit_learn_probabilities_on_thousands_of_rows(
    classifier: RandomForestClassifier,
) -> None:
    rows = _data(5000, 0.05)
    forest = FlatForest.from_forest(classifier)
    flat = forest.predict_values(rows)
    assert np.array_equal(flat, classifier.predict_proba(rows))
    assert (flat.argmax(axis=1) == classifier.predict(rows)).all()
    # The leaves themselves, as node numbers within each tree: scikit-learn's apply().
    assert np.array_equal(forest.trees.leaves(rows) - forest.trees.roots, classifier.apply(rows))


def test_flat_forest_matches_scikit_learn_regression(regressor: RandomForestRegressor) -> None:
    rows = _data(5000, 0.05)
    flat = FlatForest.from_forest(regressor).predict_values(rows)[:, 0]
    assert np.array_equal(flat, regressor.predict(rows))


@pytest.mark.parametrize("rows", [1, 7, FLAT_MAX_ROWS, FLAT_MAX_ROWS + 1, 3000])
def test_plugin_predict_is_the_same_on_both_sides_of_the_switch(
    classifier: RandomForestClassifier, rows: int
) -> None:
    serving = ServingForest(classifier, FlatForest.from_forest(classifier))
    frame = pd.DataFrame(_data(rows, 0.05))
    labels = predict(model=serving, features=frame, output=LABEL)
    assert (labels == classifier.predict(frame.to_numpy(np.float32))).all()
    probabilities = predict(model=serving, features=frame, output=PROBABILITIES)
    assert np.array_equal(probabilities, classifier.predict_proba(frame.to_numpy(np.float32)))


# --- XGBoost: the flat margins are XGBoost's own, bit for bit ----------------------------------

XGBOOST_JOBS = {
    "binary:logistic": 2,
    "multi:softprob": 3,
    "reg:squarederror": 0,
    "reg:logistic": 0,
    "count:poisson": 0,
    "reg:absoluteerror": 0,
}


def _target(x: np.ndarray, objective: str) -> np.ndarray:
    signal = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) ** 2 - np.nan_to_num(x[:, 2])
    if objective.startswith("multi"):
        return np.digitize(signal, [0.3, 1.5])
    if objective.startswith("binary"):
        return (signal > 0.7).astype(int)
    if objective == "reg:logistic":
        return 1 / (1 + np.exp(-signal))
    if objective == "count:poisson":
        return RNG.poisson(np.exp(signal / 3))
    return signal * 3 + 10


@pytest.fixture(scope="module", params=list(XGBOOST_JOBS))
def booster(request: pytest.FixtureRequest) -> tuple[xgb.Booster, str]:
    objective = request.param
    x = _data(3000, 0.05)
    params = {"objective": objective, "max_depth": 5, "eta": 0.3, "nthread": 1, "seed": 0}
    if objective.startswith("multi"):
        params["num_class"] = XGBOOST_JOBS[objective]
    data = xgb.DMatrix(x, label=_target(x, objective), missing=np.nan)
    return xgb.train(params, data, num_boost_round=40), objective


def _on_the_splits(booster: xgb.Booster, rows: int) -> np.ndarray:
    """Rows whose values are the model's split values exactly, where < and <= part ways."""
    dump = booster.trees_to_dataframe()
    splits = dump[dump.Feature != "Leaf"]
    matrix = _data(rows, 0.05)
    for column in range(matrix.shape[1]):
        values = splits.Split[splits.Feature == f"f{column}"].to_numpy(np.float32)
        if values.size:
            matrix[:, column] = RNG.choice(values, rows)
    return matrix


def test_flat_xgboost_margins_are_xgboosts_on_thousands_of_rows(
    booster: tuple[xgb.Booster, str],
) -> None:
    model, objective = booster
    flat = flatten(model, objective)
    assert flat is not None
    for rows in (_data(5000, 0.05), _on_the_splits(model, 3000)):
        assert np.array_equal(flat.margins(rows), model.inplace_predict(rows, predict_type="margin"))
    rows = _data(2000, 0.05)
    if flat.identity_link:
        assert np.array_equal(flat.margins(rows), model.inplace_predict(rows))
    assert flat.identity_link == (objective in ("reg:squarederror", "reg:absoluteerror"))


@pytest.mark.parametrize("rows", [1, 7, XGBOOST_FLAT_MAX_ROWS, XGBOOST_FLAT_MAX_ROWS + 1, 3000])
def test_xgboost_plugin_predict_is_the_same_on_both_sides_of_the_switch(
    booster: tuple[xgb.Booster, str], rows: int
) -> None:
    model, objective = booster
    n_classes = XGBOOST_JOBS[objective]
    flat_model = xgboost_plugin.XGBoostModel(model, objective, n_classes, flatten(model, objective))
    plain_model = xgboost_plugin.XGBoostModel(model, objective, n_classes, None)
    frame = pd.DataFrame(_on_the_splits(model, rows))
    outputs = [LABEL, RAW_MARGIN] + ([PROBABILITIES] if n_classes else [])
    for output in outputs:
        fast = xgboost_plugin.predict(model=flat_model, features=frame, output=output)
        general = xgboost_plugin.predict(model=plain_model, features=frame, output=output)
        assert fast.dtype == general.dtype and np.array_equal(fast, general), output


def test_boosters_the_flat_path_cannot_answer_exactly_are_left_to_xgboost() -> None:
    x = _data(500, 0.0)
    y = _target(x, "binary:logistic")
    dart = xgb.train(
        {"booster": "dart", "objective": "binary:logistic", "nthread": 1, "rate_drop": 0.3},
        xgb.DMatrix(x, label=y),
        num_boost_round=5,
    )
    assert flatten(dart, "binary:logistic") is None
    frame = pd.DataFrame({"a": pd.Categorical(RNG.choice(["p", "q", "r"], 500)), "b": x[:, 0]})
    categorical = xgb.train(
        {"objective": "binary:logistic", "nthread": 1, "max_cat_to_onehot": 1},
        xgb.DMatrix(frame, label=y, enable_categorical=True),
        num_boost_round=5,
    )
    assert flatten(categorical, "binary:logistic") is None


def test_large_csv_parser_equals_the_small_one() -> None:
    names = [f"f{i}" for i in range(5)]
    matrix = np.round(RNG.normal(size=(30_000, 5)), 4)
    body = "\n".join(",".join(f"{v:g}" for v in row) for row in matrix).encode()
    assert len(body) > 256 * 1024
    large = decode_csv(body, names)
    small = pd.concat(
        [decode_csv(b"\n".join(body.split(b"\n")[i : i + 1000]), names) for i in range(0, 30_000, 1000)],
        ignore_index=True,
    )
    assert large.equals(small)
    assert np.array_equal(large.to_numpy(), matrix)


CELL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(
        [
            "nan",
            "-nan",
            "inf",
            "1e400",
            "1_000",
            "1__0",
            " 2",
            "3\t",
            "",
            '"4"',
            "0x1",
            "\u0663",
            "f0",
            "e5",
            "5.",
        ]
    ),
)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    st.lists(st.lists(CELL, min_size=3, max_size=3), min_size=1, max_size=5), st.sampled_from(["\n", "\r\n"])
)
def test_small_csv_fast_path_reads_what_the_general_path_reads(rows: list[list[str]], newline: str) -> None:
    names = ["f0", "f1", "f2"]
    body = newline.join(",".join(row) for row in rows).encode()
    if not body.strip():
        return
    try:
        general = decode_csv(body, names, first_row=2).to_numpy()  # first_row > 1: general path
    except BadRequestError:
        general = None
    fast = csv_bodies.read_csv_numbers(body, names)
    if fast is not None:  # it answers only what the general path answers the same way
        assert general is not None and np.array_equal(fast, general, equal_nan=True)
    try:
        answer = decode_csv(body, names).to_numpy()
    except BadRequestError:
        answer = None
    if rows[0] != names:  # (a header row is dropped only at the top of a request)
        assert (answer is None) == (general is None)
        assert answer is None or np.array_equal(answer, general, equal_nan=True)


JSON_CELL = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(10**30), 10**30),
    st.booleans(),
    st.none(),
    st.sampled_from(["1.5", "x", "", "nan", "inf", "1e400", " 2"]),
    st.lists(st.integers(0, 3), max_size=2),
    st.just({"a": 1}),
)
JSON_ROW = st.lists(JSON_CELL, min_size=2, max_size=4)


def _json_document(rows: list[list[object]], shape: str) -> bytes:
    documents = {
        "instances": {"instances": rows},
        "list": rows,
        "flat row": rows[0],
        "extra key": {"instances": rows, "other": 1},
        "records": [dict(zip(["f0", "f1", "f2"], row, strict=False)) for row in rows],
    }
    return json.dumps(documents[shape]).encode()  # (orjson cannot write integers this big)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(
    st.lists(JSON_ROW, min_size=1, max_size=4),
    st.sampled_from(["instances", "list", "flat row", "extra key", "records"]),
)
def test_small_json_fast_path_reads_what_the_general_path_reads(rows: list[list[object]], shape: str) -> None:
    names = ["f0", "f1", "f2"]
    body = _json_document(rows, shape)
    try:
        general = json_bodies.decode_json(body, names).to_numpy()
    except BadRequestError:
        general = None
    fast = json_bodies.read_json_numbers(body, names)
    if fast is not None:  # it answers only what the general path answers the same way
        assert general is not None and np.array_equal(fast, general, equal_nan=True)
    if shape in ("instances", "list") and all(
        len(r) == 3 and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in r) for r in rows
    ):
        assert fast is not None  # plain rows of numbers do take the fast path


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
                if index % 5 == 1:  # records by name: decoded to a table, not the fast matrix
                    records = [dict(zip(model.feature_names, rows[index], strict=True))]
                    answer = session.post(
                        server.url + "/invocations",
                        json={"instances": records},
                        headers={"Accept": "text/csv"},
                        timeout=60,
                    )
                    return index, answer.text
                body = (
                    ",".join(map(str, rows[index]))
                    if index % 3
                    else "\n".join(",".join(map(str, row)) for row in rows[index : index + 3])
                )
                answer = session.post(
                    server.url + "/invocations", data=body, headers={"Content-Type": "text/csv"}, timeout=60
                )
                return index, answer.text

        with ThreadPoolExecutor(32) as pool:
            answers = dict(pool.map(ask, range(len(rows) - 3)))
        for index, text in answers.items():
            wanted = expected[index : index + (1 if index % 3 or index % 5 == 1 else 3)]
            assert text.splitlines() == wanted, index
        bad = server.invoke("1,2")
        assert bad.status_code == 400 and server.invoke("5,3.4,1.5,0.2").text == "setosa\n"
    finally:
        server.stop()


def test_the_tree_walk_compiles_where_numba_cannot_cache_it() -> None:
    """A read-only install: numba finds no folder for its cache, so the walk is compiled in each
    process, says so, and answers the same."""
    script = (
        "import numpy as np\n"
        "from sagecraft.flat_trees import FlatTrees, TreeNodes\n"
        "tree = TreeNodes(np.array([1, 0, 0]), np.array([0.5, 0, 0]), np.array([1, -1, -1]),\n"
        "                 np.array([2, -1, -1]), np.array([True, False, False]))\n"
        "rows = np.array([[0, 0.2], [0, 0.7], [0, np.nan]])\n"
        "print(FlatTrees.from_trees([tree]).leaves(rows).ravel().tolist())\n"
    )
    # Only IPython's locator allowed: none serves a module file, as when no folder is writable.
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "_IPythonCacheLocator"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[1, 2, 1]"  # left, right, missing goes left
    assert "no writable folder for its cache" in done.stderr


def test_loading_compiles_every_walk_the_built_in_plugins_use() -> None:
    """A walk compiled at a request would stall a worker for about half a second: loading a
    forest or a booster must leave nothing for the first predictions to compile. (In a fresh
    process: this one has compiled whatever earlier tests needed.)"""
    script = (
        "import numpy as np, xgboost as xgb\n"
        "from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor\n"
        "from sagecraft import flat_trees\n"
        "from sagecraft_random_forest.flat_forest import FlatForest\n"
        "from sagecraft_xgboost.flat_booster import flatten\n"
        "x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)\n"
        "y = (x[:, 0] > 0).astype(int)\n"
        "forests = [FlatForest.from_forest(RandomForestClassifier(5).fit(x, y)),\n"
        "           FlatForest.from_forest(RandomForestRegressor(5).fit(x, x[:, 1]))]\n"
        "boosters = [flatten(xgb.train({'objective': o, 'num_class': 3} if o.startswith('multi')\n"
        "                              else {'objective': o}, xgb.DMatrix(x, label=label), 5), o)\n"
        "            for o, label in [('binary:logistic', y), ('multi:softprob', y + (x[:, 1] > 0)),\n"
        "                             ('reg:squarederror', x[:, 2])]]\n"
        "kernels = (flat_trees._leaf, flat_trees._walk_rows, flat_trees._sum_rows)\n"
        "loaded = [len(k.signatures) for k in kernels]\n"
        "for forest in forests: forest.predict_values(x[:3])\n"
        "for booster in boosters: booster.margins(x[:3])\n"
        "print(loaded, [len(k.signatures) for k in kernels])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    loaded, after = done.stdout.strip().split("] [")
    assert loaded + "]" == "[" + after, done.stdout
