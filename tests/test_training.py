"""`sagecraft train` end to end: the R blog's job, SageMaker's convention, and every user error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from sagemaker_tree import Server, TrainingTree, iris_rows, iris_tree, regression_rows

# What SageMaker users write in MetricDefinitions for the built-in XGBoost (tab shown as #011).
VALIDATION_RMSE = re.compile(r".*\[[0-9]+\].*#011validation-rmse:(\S+)")


@pytest.mark.parametrize("encoding", ["str", "json"])
def test_blog_iris_job_in_both_hyperparameter_encodings(tmp_path: Path, encoding: str) -> None:
    tree = iris_tree(
        tmp_path,
        {"algorithm": "random_forest", "target": "Species", "mtry": 2, "ntree": 50},
        encoding=encoding,
    )
    result = tree.train()
    assert result.returncode == 0, tree.explain()
    assert tree.failure is None
    manifest = json.loads((tree.model_dir / "manifest.json").read_text())
    assert manifest["algorithm"] == "random_forest"
    assert manifest["task"] == "classification"
    assert manifest["target"] == "Species"
    assert manifest["classes"] == ["setosa", "versicolor", "virginica"]
    assert [f["name"] for f in manifest["features"]] == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert manifest["hyperparameters"]["max_features"] == 2
    assert manifest["hyperparameters"]["n_estimators"] == 50
    assert "scikit-learn" in manifest["libraries"]
    assert (tree.model_dir / "model.skops").is_file()
    assert not list(tree.model_dir.glob("*.pkl")) and not list(tree.model_dir.glob("*.joblib"))
    assert "150 rows" in result.stderr


def test_xgboost_headerless_with_validation_prints_metric_lines(
    regression_xgboost: TrainingTree,
) -> None:
    lines = [line for line in regression_xgboost.result.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 30
    cloudwatch = [line.replace("\t", "#011") for line in lines]
    values = [float(VALIDATION_RMSE.match(line).group(1)) for line in cloudwatch]
    assert values[-1] < values[0] / 5
    assert re.fullmatch(r"\[0\]\ttrain-rmse:\S+\tvalidation-rmse:\S+", lines[0])
    manifest = json.loads((regression_xgboost.model_dir / "manifest.json").read_text())
    assert manifest["task"] == "regression"
    assert manifest["target"] is None
    assert [f["name"] for f in manifest["features"]] == ["f0", "f1", "f2", "f3", "f4"]
    assert (regression_xgboost.model_dir / "xgboost-model.ubj").is_file()


def test_gzip_parts_nested_folders_and_skipped_names(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    rows = regression_rows(2, 90).splitlines(keepends=True)
    tree.add_file("train", "part-0.csv", "".join(rows[:30]))
    tree.add_file("train", "nested/deeper/part-1.csv.gz", "".join(rows[30:60]), gzipped=True)
    tree.add_file("train", "part-2", "".join(rows[60:]), gzipped=True)  # gzip without the suffix
    tree.add_file("train", ".hidden.csv", "not,a,row\n")
    tree.add_file("train", "_SUCCESS", "")
    tree.add_file("train", "_temporary/part-9.csv", "junk\n")
    tree.channels(train="text/csv")
    tree.hyperparameters({"algorithm": "random_forest", "ntree": 10})
    result = tree.train()
    assert result.returncode == 0, tree.explain()
    assert "90 rows, 5 features from 3 file(s)" in result.stderr


def test_native_xgboost_parameter_passes_through(tmp_path: Path) -> None:
    tree = iris_tree(
        tmp_path,
        {
            "algorithm": "xgboost",
            "target": "Species",
            "num_round": 3,
            "device": "cpu",
            "max_cat_threshold": 32,
        },
    )
    assert tree.train().returncode == 0, tree.explain()
    manifest = json.loads((tree.model_dir / "manifest.json").read_text())
    assert manifest["hyperparameters"]["device"] == "cpu"


@pytest.mark.parametrize("booster", ["gblinear", "dart"])
def test_linear_and_dart_boosters_train_and_serve(tmp_path: Path, booster: str) -> None:
    """XGBoost predicts in place for trees only: a gblinear model is served from a DMatrix."""
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "train.csv", regression_rows(0, 200))
    tree.hyperparameters({"algorithm": "xgboost", "booster": booster, "num_round": 10})
    assert tree.train().returncode == 0, tree.explain()
    rows = [line.split(",", 1)[1] for line in regression_rows(1, 20).splitlines()]
    features = np.array([[float(v) for v in row.split(",")] for row in rows], dtype=np.float32)
    written = xgb.Booster(model_file=str(tree.model_dir / "xgboost-model.ubj"))
    expected = written.predict(xgb.DMatrix(features, feature_names=written.feature_names))
    server = Server(tree.base).wait_ready()
    try:
        answer = server.invoke("\n".join(rows))
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose([float(v) for v in answer.text.split()], expected, rtol=1e-6, atol=1e-6)
    finally:
        server.stop()


def test_forest_regression_and_task_override(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "t.csv", "".join(f"{i % 2},{i},{i * 2}\n" for i in range(40)))
    tree.hyperparameters({"algorithm": "random_forest", "task": "classification", "ntree": 5})
    assert tree.train().returncode == 0, tree.explain()
    manifest = json.loads((tree.model_dir / "manifest.json").read_text())
    assert manifest["task"] == "classification"
    assert manifest["classes"] == [0, 1]


def _iris(tmp_path: Path, **hyperparameters: object) -> TrainingTree:
    return iris_tree(tmp_path, {"algorithm": "random_forest", "target": "Species", **hyperparameters})


def _headerless(tmp_path: Path, text: str, **hyperparameters: object) -> TrainingTree:
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "data.csv", text)
    tree.hyperparameters({"algorithm": "xgboost", **hyperparameters})
    return tree


def _without_train(tmp_path: Path) -> TrainingTree:
    tree = TrainingTree(tmp_path)
    tree.hyperparameters({"algorithm": "xgboost"})
    return tree


def _header_only(tmp_path: Path) -> TrainingTree:
    tree = _iris(tmp_path)
    for part in (tree.base / "input" / "data" / "train").iterdir():
        part.write_text(iris_rows()[0] + "\n")
    return tree


def _with_validation_class(tmp_path: Path) -> TrainingTree:
    tree = _iris(tmp_path)
    tree.add_file("validation", "v.csv", iris_rows()[0] + "\n5,3,1,0.2,daisy\n")
    return tree


FAILURES = {
    "unknown algorithm": (
        lambda p: _iris(p, algorithm="lightgbm"),
        ["unknown algorithm 'lightgbm'", "Installed algorithms: random_forest, xgboost"],
    ),
    "the blog's job without an algorithm": (
        lambda p: iris_tree(p, {"target": "Species", "mtry": 2}),
        ["mtry is a random forest hyperparameter", "add algorithm=random_forest"],
    ),
    "misspelt hyperparameter": (
        lambda p: _iris(p, ntrees=10),
        ["unknown hyperparameter 'ntrees'", "did you mean 'ntree'"],
    ),
    "misspelt core hyperparameter": (
        lambda p: _iris(p, tagret="Species"),
        ["'tagret'", "did you mean 'target'"],
    ),
    "invalid value": (lambda p: _iris(p, mtry="two"), ["'mtry' ('max_features') = 'two'", "not a valid"]),
    "mtry above feature count": (lambda p: _iris(p, mtry=9), ["mtry", "exceeds the number of features, 4"]),
    "value out of range": (lambda p: _iris(p, ntree=0), ["'ntree' ('n_estimators') = 0", ">= 1"]),
    "bad choice": (lambda p: _iris(p, task="clustering"), ["'task' = 'clustering'", "classification"]),
    "xgboost range": (lambda p: _headerless(p, regression_rows(0, 20), eta=2), ["'eta' = 2", "<= 1"]),
    "xgboost misspelt native parameter": (
        lambda p: _headerless(p, regression_rows(0, 20), colsample_bytre=0.5),
        ["unknown hyperparameter 'colsample_bytre'", "did you mean 'colsample_bytree'"],
    ),
    "xgboost rejects a native value": (
        lambda p: _headerless(p, regression_rows(0, 20), tree_method="hist", device="tpu"),
        ["XGBoost rejected the hyperparameters", "device"],
    ),
    "xgboost objective against task": (
        lambda p: iris_tree(
            p,
            {
                "algorithm": "xgboost",
                "target": "Species",
                "task": "classification",
                "objective": "reg:squarederror",
            },
        ),
        ["objective 'reg:squarederror' is for regression", "classification"],
    ),
    "xgboost regression objective on text labels": (
        lambda p: iris_tree(
            p, {"algorithm": "xgboost", "target": "Species", "objective": "reg:squarederror"}
        ),
        ["task is regression", "'setosa'"],
    ),
    "binary objective for three classes": (
        lambda p: iris_tree(p, {"algorithm": "xgboost", "target": "Species", "objective": "binary:logistic"}),
        ["needs two classes", "3"],
    ),
    "early stopping without validation": (
        lambda p: _headerless(p, regression_rows(0, 20), early_stopping_rounds=5),
        ["early_stopping_rounds needs a 'validation' channel"],
    ),
    "missing train channel": (_without_train, ["the 'train' channel is missing"]),
    "empty channel": (lambda p: _headerless(p, "", num_round=2), ["the 'train' channel holds no rows"]),
    "header only": (_header_only, ["the 'train' channel holds no rows"]),
    "missing target column": (
        lambda p: _iris(p, target="species"),
        ["target column 'species' is not in", "Species"],
    ),
    "ragged row": (
        lambda p: _headerless(p, "1,2,3\n4,5,6\n7,8\n9,1,2\n"),
        ["is not valid CSV", "line 3 has 2 values where the first line has 3"],
    ),
    "header in header-less data": (
        lambda p: _headerless(p, "y,a,b\n1,2,3\n4,5,6\n"),
        ["starts with a header row (y, a, b)", "Set target="],
    ),
    "text in a feature column": (
        # The label is split off first: 'oops' is in the model's first feature, f0.
        lambda p: _headerless(p, "1,2,3\n4,oops,6\n"),
        ["feature column 'f0'", "'oops'", "not numeric"],
    ),
    "text labels for regression": (
        lambda p: _iris(p, task="regression"),
        ["task is regression", "non-numeric"],
    ),
    "validation label unseen in train": (_with_validation_class, ["label 'daisy'", "never has"]),
    "single class": (
        lambda p: _headerless(p, "a,1,2\na,3,4\n", task="classification"),
        ["at least two classes"],
    ),
    "malformed hyperparameters.json": (lambda p: _bad_config(p), ["hyperparameters.json is not valid JSON"]),
    "pipe mode": (lambda p: _pipe_mode(p), ["Pipe mode"]),
}


def _bad_config(tmp_path: Path) -> TrainingTree:
    tree = _iris(tmp_path)
    (tree.base / "input/config/hyperparameters.json").write_text("{algorithm: xgboost")
    return tree


def _pipe_mode(tmp_path: Path) -> TrainingTree:
    tree = _iris(tmp_path)
    tree.write_config("inputdataconfig.json", {"train": {"TrainingInputMode": "Pipe"}})
    return tree


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_user_errors_write_a_clear_failure_file(tmp_path: Path, case: str) -> None:
    build, phrases = FAILURES[case]
    tree = build(tmp_path)
    result = tree.train()
    assert result.returncode != 0, tree.explain()
    failure = tree.failure
    assert failure is not None, tree.explain()
    for phrase in phrases:
        assert phrase in failure, failure
    assert len(failure) <= 1024
    assert "Traceback" not in failure
    assert "Error type:" in failure.splitlines()[-1]
    assert not (tree.model_dir / "manifest.json").exists()


def test_failure_message_comes_first_and_is_cut_to_1024(tmp_path: Path) -> None:
    columns = ",".join(f"column_{i}" for i in range(300))
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "wide.csv", columns + "\n" + ",".join("1" * 300) + "\n")
    tree.hyperparameters({"algorithm": "random_forest", "target": "label"})
    assert tree.train().returncode == 1
    failure = tree.failure
    assert failure.startswith("target column 'label' is not in")
    assert len(failure) <= 1024
    assert failure.endswith("Error type: DataError")


@pytest.mark.parametrize("early_stopping", [True, False])
def test_tuning_objective_is_evaluated_and_watched_by_early_stopping(
    tmp_path: Path, early_stopping: bool
) -> None:
    """A tuning job reads `validation:mae` from the log even when eval_metric names only rmse."""
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "t.csv", regression_rows(3, 300))
    tree.add_file("validation", "v.csv", regression_rows(4, 100))
    tree.write_config(
        "hyperparameters.json",
        {
            "algorithm": "xgboost",
            "num_round": "300",
            "eta": "0.3",
            "eval_metric": "rmse",
            "_tuning_objective_metric": "validation:mae",
            **({"early_stopping_rounds": "5"} if early_stopping else {}),
        },
    )
    result = tree.train()
    assert result.returncode == 0, tree.explain()
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert all("\tvalidation-rmse:" in line and "\tvalidation-mae:" in line for line in lines)
    if early_stopping:
        assert len(lines) < 300
        assert "early stopping: keeping rounds 0-" in result.stderr
    else:
        assert len(lines) == 300


def test_a_job_without_an_algorithm_trains_the_images_default(tmp_path: Path) -> None:
    """As SageMaker's built-in XGBoost does; SAGECRAFT_DEFAULT_ALGORITHM changes it, empty makes
    the hyperparameter required."""
    default = iris_tree(tmp_path / "default", {"target": "Species"})
    result = default.train()
    assert result.returncode == 0, default.explain()
    assert "training the image's default, xgboost (SAGECRAFT_DEFAULT_ALGORITHM)" in result.stderr
    assert json.loads((default.model_dir / "manifest.json").read_text())["algorithm"] == "xgboost"
    forest = iris_tree(tmp_path / "forest", {"target": "Species"})
    assert forest.train(SAGECRAFT_DEFAULT_ALGORITHM="random_forest").returncode == 0, forest.explain()
    assert json.loads((forest.model_dir / "manifest.json").read_text())["algorithm"] == "random_forest"
    required = iris_tree(tmp_path / "required", {"target": "Species"})
    assert required.train(SAGECRAFT_DEFAULT_ALGORITHM="").returncode == 1
    assert "'algorithm' is required; installed algorithms: random_forest, xgboost" in (required.failure or "")
