"""Training data formats (CSV both ways, libsvm, Parquet, JSON Lines), from the channel's
ContentType or detected from the files, trained by the real `sagecraft train` and served back."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sagemaker_tree import Server, TrainingTree, iris_rows


def _iris() -> tuple[list[str], list[list[str]]]:
    header, rows = iris_rows()
    return header.split(","), [row.split(",") for row in rows]


def _manifest(tree: TrainingTree) -> dict:
    return json.loads((tree.model_dir / "manifest.json").read_text())


def _serve_and_predict(tree: TrainingTree, body: bytes | str, content_type: str) -> list[str]:
    server = Server(tree.base, SAGEMAKER_MODEL_SERVER_WORKERS="1").wait_ready()
    try:
        response = server.invoke(body, content_type)
        assert response.status_code == 200, response.text
        return response.text.splitlines()
    finally:
        server.stop()


def _libsvm_line(label: float, features: dict[int, float]) -> str:
    return " ".join([f"{label:g}", *(f"{i}:{v:g}" for i, v in sorted(features.items()))])


@pytest.mark.parametrize("content_type", ["text/libsvm", None])
def test_libsvm_whose_first_row_lacks_the_highest_index(tmp_path: Path, content_type: str | None) -> None:
    """Index = column number; the first row never mentions f3; a gzip part in a nested folder."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(300):
        x = rng.normal(size=4)
        features = {1: x[1], 2: x[2]} if i == 0 else {1: x[1], 2: x[2], 3: x[3]}
        lines.append(_libsvm_line(float(x[1] + 2 * x[2] > 0), features))
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "part-1.libsvm", "\n".join(lines[:150]) + "\n")
    tree.add_file("train", "nested/part-2.libsvm.gz", "\n".join(lines[150:]) + "\n", gzipped=True)
    tree.channels(train=content_type)
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 20, "objective": "binary:logistic"})
    assert tree.train().returncode == 0, tree.explain()
    manifest = _manifest(tree)
    assert [f["name"] for f in manifest["features"]] == ["f0", "f1", "f2", "f3"]
    how = "from the ContentType" if content_type else "detected from the files"
    assert f"(libsvm {how}" in tree.result.stderr
    answers = _serve_and_predict(tree, "1:2.0 2:2.0\n0 1:-2 2:-2 3:0.5", "text/libsvm")
    assert [float(p) > 0.5 for p in answers] == [True, False]  # P(class 1): the objective was the user's


def test_libsvm_validation_with_a_different_highest_index_is_aligned(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)

    def block(n: int, width: int) -> str:
        rows = rng.normal(size=(n, width))
        return "\n".join(_libsvm_line(float(r[0] > 0), {i: r[i] for i in range(width)}) for r in rows) + "\n"

    tree = TrainingTree(tmp_path)
    tree.add_file("train", "train.libsvm", block(200, 3))
    tree.add_file("validation", "validation.libsvm", block(50, 5))
    tree.channels(train="text/libsvm", validation="text/libsvm")
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 5, "objective": "binary:logistic"})
    assert tree.train().returncode == 0, tree.explain()
    assert len(_manifest(tree)["features"]) == 5
    assert "validation-logloss" in tree.result.stdout


@pytest.mark.parametrize("algorithm", ["random_forest", "xgboost"])
def test_parquet_with_target_and_with_the_label_first(tmp_path: Path, algorithm: str) -> None:
    names, rows = _iris()
    columns = {
        name: [float(r[i]) for r in rows] if name != "Species" else [r[i] for r in rows]
        for i, name in enumerate(names)
    }
    table = pa.table(columns)
    tree = TrainingTree(tmp_path / "target")
    (tree.base / "input/data/train").mkdir(parents=True, exist_ok=True)
    pq.write_table(table.slice(0, 75), tree.base / "input/data/train/a.parquet")
    pq.write_table(table.slice(75), tree.base / "input/data/train/b.parquet")
    tree.channels(train="application/x-parquet")
    tree.hyperparameters({"algorithm": algorithm, "target": "Species"})
    assert tree.train().returncode == 0, tree.explain()
    assert [f["name"] for f in _manifest(tree)["features"]] == names[:4]
    buffer = io.BytesIO()
    pq.write_table(pa.table({n: [v] for n, v in zip(names[:4], [5.0, 3.4, 1.5, 0.2], strict=True)}), buffer)
    assert _serve_and_predict(tree, buffer.getvalue(), "application/x-parquet") == ["setosa"]

    label_first = TrainingTree(tmp_path / "first")
    (label_first.base / "input/data/train").mkdir(parents=True, exist_ok=True)
    whole = io.BytesIO()
    pq.write_table(table.select(["Species", *names[:4]]), whole)
    # Gzipped as a whole file, as some pipelines do: detected and read all the same.
    (label_first.base / "input/data/train/data.parquet.gz").write_bytes(gzip.compress(whole.getvalue()))
    label_first.hyperparameters({"algorithm": algorithm})  # no ContentType: detected
    assert label_first.train().returncode == 0, label_first.explain()
    assert "(parquet detected from the files" in label_first.result.stderr
    assert _manifest(label_first)["classes"] == ["setosa", "versicolor", "virginica"]


def test_jsonlines_records_with_a_target(tmp_path: Path) -> None:
    names, rows = _iris()
    lines = [
        json.dumps({n: (float(v) if n != "Species" else v) for n, v in zip(names, r, strict=True)})
        for r in rows
    ]
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "iris.jsonl", "\n".join(lines) + "\n")
    tree.channels(train="application/jsonlines")
    tree.hyperparameters({"algorithm": "random_forest", "target": "Species"})
    assert tree.train().returncode == 0, tree.explain()
    assert _serve_and_predict(
        tree,
        '{"sepal_length": 5.0, "sepal_width": 3.4, "petal_length": 1.5, "petal_width": 0.2}',
        "application/jsonlines",
    ) == ['"setosa"']


def test_csv_header_present_in_the_content_type_names_the_features(tmp_path: Path) -> None:
    """Label first (SageMaker's way) but with a header row, declared by `header=present`."""
    names, rows = _iris()
    reordered = [[r[4], *r[:4]] for r in rows]
    tree = TrainingTree(tmp_path)
    tree.add_file(
        "train", "iris.csv", "\n".join(",".join(r) for r in [["Species", *names[:4]], *reordered]) + "\n"
    )
    tree.channels(train="text/csv;label_size=1;header=present;charset=utf-8")
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 10})
    assert tree.train().returncode == 0, tree.explain()
    assert [f["name"] for f in _manifest(tree)["features"]] == names[:4]


@pytest.mark.parametrize("algorithm", ["random_forest", "xgboost"])
def test_csv_weights_take_the_column_after_the_label(tmp_path: Path, algorithm: str) -> None:
    """Each x appears twice with contradicting labels: the weights decide which one is learnt."""
    rng = np.random.default_rng(2)
    lines = []
    for x in rng.uniform(-1, 1, size=300):
        lines.append(f"10,1,{x:.4f}")  # weight 1
        lines.append(f"-10,0,{x:.4f}")  # weight 0: must be ignored
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "weighted.csv", "\n".join(lines) + "\n")
    tree.hyperparameters(
        {
            "algorithm": algorithm,
            "csv_weights": 1,
            "task": "regression",
            **({"num_round": 50} if algorithm == "xgboost" else {}),
        }
    )
    assert tree.train().returncode == 0, tree.explain()
    assert len(_manifest(tree)["features"]) == 1  # the weight is not a feature
    answer = float(_serve_and_predict(tree, "0.5", "text/csv")[0])
    assert answer > 9, answer


@pytest.mark.parametrize(
    ("case", "phrase"),
    [
        ("mixed formats", "holds libsvm data but"),
        ("label_size=2", "exactly one label column"),
        ("unknown content type", "sagecraft reads"),
        ("header=absent with target", "header=absent"),
        ("libsvm not index:value", "is not valid libsvm text"),
        ("csv_weights with target", "csv_weights=1 reads weights"),
        ("parquet that is not", "is not a readable Parquet file"),
    ],
)
def test_format_errors_name_the_file_or_setting(tmp_path: Path, case: str, phrase: str) -> None:
    tree = TrainingTree(tmp_path)
    hyperparameters: dict[str, object] = {"algorithm": "xgboost", "num_round": 2}
    if case == "mixed formats":
        tree.add_file("train", "a.csv", "1,2,3\n0,1,1\n")
        tree.add_file("train", "b.libsvm", "1 0:2 1:3\n0 0:1\n")
    elif case == "label_size=2":
        tree.add_file("train", "a.csv", "1,2,3\n")
        tree.channels(train="text/csv;label_size=2")
    elif case == "unknown content type":
        tree.add_file("train", "a.csv", "1,2,3\n")
        tree.channels(train="image/jpeg")
    elif case == "header=absent with target":
        tree.add_file("train", "a.csv", "y,x\n1,2\n")
        tree.channels(train="text/csv;header=absent")
        hyperparameters["target"] = "y"
    elif case == "libsvm not index:value":
        tree.add_file("train", "a.libsvm", "1 0:2 1:x\n")
        tree.channels(train="text/libsvm")
    elif case == "csv_weights with target":
        tree.add_file("train", "a.csv", "y,w,x\n1,1,2\n0,1,3\n")
        hyperparameters.update(target="y", csv_weights=1)
    elif case == "parquet that is not":
        tree.add_file("train", "a.parquet", "PAR1 not really")
        tree.channels(train="application/x-parquet")
    tree.hyperparameters(hyperparameters)
    assert tree.train().returncode == 1
    assert tree.failure is not None and phrase in tree.failure, tree.failure


def test_a_gzipped_latin1_csv_is_read_by_its_charset(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    (tree.base / "input/data/train").mkdir(parents=True, exist_ok=True)
    text = "y,caf\u00e9\n" + "\n".join(f"{i % 2},{i}" for i in range(40)) + "\n"
    (tree.base / "input/data/train/latin.csv.gz").write_bytes(gzip.compress(text.encode("latin-1")))
    tree.channels(train="text/csv;charset=latin-1")
    tree.hyperparameters({"algorithm": "random_forest", "target": "y", "task": "classification"})
    assert tree.train().returncode == 0, tree.explain()
    assert [f["name"] for f in _manifest(tree)["features"]] == ["caf\u00e9"]
