"""Rows 10-16 of the built-in XGBoost notes (../shared/docs/builtin-xgboost-compat.md): an XGBoost
model whose objective the user chose answers as SageMaker's built-in algorithm does (the
objective's output by default, JSON as `{"score": x}` records, the seven SAGEMAKER_INFERENCE_OUTPUT
keys with AWS's meanings, list values as one quoted CSV cell), driven by the SageMaker SDK v2's
own serializers and deserializers against the real `sagecraft serve`; values checked against
the same booster in-process, to float32 precision. A model whose objective sagecraft chose keeps
sagecraft's answers (labels)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from sagemaker.base_deserializers import CSVDeserializer, JSONDeserializer, StringDeserializer

from sagemaker_tree import Server, TrainingTree
from sdk_client import sdk_predictor as _predictor

RNG = np.random.default_rng(44)
X = RNG.normal(size=(400, 4)).astype(np.float32)
PROBE = RNG.normal(size=(12, 4)).astype(np.float32)
ALL_KEYS = "predicted_label,labels,probability,probabilities,raw_score,raw_scores,predicted_score"


def _booster(objective: str) -> xgb.Booster:
    if objective.startswith("multi:"):
        labels, extra = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int), {"num_class": 3}
    elif objective.startswith("binary:"):
        labels, extra = (X[:, 0] + X[:, 2] > 0).astype(int), {}
    else:
        labels, extra = 2 * X[:, 0] - X[:, 3], {}
    params = {"objective": objective, "max_depth": 3, "eta": 0.3, **extra}
    return xgb.train(params, xgb.DMatrix(X, label=labels), num_boost_round=12)


def _serve_builtin(base: Path, objective: str, **env: str) -> tuple[Server, xgb.Booster]:
    """A built-in algorithm's model.tar.gz, unpacked: a lone xgboost-model, written by XGBoost."""
    booster = _booster(objective)
    (base / "model").mkdir(parents=True)
    (base / "model" / "xgboost-model").write_bytes(bytes(booster.save_raw("ubj")))
    return Server(base, SAGEMAKER_MODEL_SERVER_WORKERS="1", **env).wait_ready(), booster


@pytest.mark.parametrize("objective", ["binary:logistic", "multi:softprob"])
def test_the_default_answer_is_the_objectives_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, objective: str
) -> None:
    server, booster = _serve_builtin(tmp_path, objective)
    expected = booster.inplace_predict(PROBE)  # P(class 1), or every class's probability
    try:
        rows = _predictor(server, monkeypatch, CSVDeserializer()).predict(PROBE.tolist())
        values = np.array(rows, dtype=float)
        # AWS's layout (sagemaker_inference's array_to_csv): a line a row, a softprob row's
        # probabilities comma-separated on it.
        assert values.shape == (len(PROBE), 1 if expected.ndim == 1 else expected.shape[1])
        assert np.allclose(values.reshape(expected.shape), expected, rtol=1e-6, atol=1e-7)  # rows 10, 11
        answer = _predictor(server, monkeypatch, JSONDeserializer()).predict(PROBE.tolist())
        scores = [record["score"] for record in answer["predictions"]]  # row 13
        assert list(answer["predictions"][0]) == ["score"]
        assert np.allclose(np.array(scores), expected, rtol=1e-6, atol=1e-7)
    finally:
        server.stop()


def test_the_seven_keys_of_a_binary_model_as_aws_gives_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, booster = _serve_builtin(tmp_path, "binary:logistic", SAGEMAKER_INFERENCE_OUTPUT=ALL_KEYS)
    p = booster.inplace_predict(PROBE)
    try:
        records = _predictor(server, monkeypatch, JSONDeserializer()).predict(PROBE.tolist())["predictions"]
        assert [list(r) for r in records] == [ALL_KEYS.split(",")] * len(PROBE)
        for record, positive in zip(records, p, strict=True):
            assert record["predicted_label"] == int(positive > 0.5)
            assert record["labels"] == [0, 1]
            assert record["probability"] == pytest.approx(positive, rel=1e-6)
            assert record["probabilities"] == pytest.approx([1 - positive, positive], rel=1e-6)
            assert record["raw_score"] == pytest.approx(positive, rel=1e-6)
            assert record["raw_scores"] == pytest.approx([1 - positive, positive], rel=1e-6)
            assert record["predicted_score"] is None  # AWS: NaN, a key that does not apply
        # Row 16: in CSV a list is one quoted cell.
        text = _predictor(server, monkeypatch, StringDeserializer(accept="text/csv")).predict(PROBE.tolist())
        cells = list(csv.reader(io.StringIO(text)))
        assert all(len(row) == 7 for row in cells)
        assert cells[0][1] == "[0, 1]" and float(cells[0][2]) == pytest.approx(p[0], rel=1e-6)
        assert np.allclose(json.loads(cells[0][3]), [1 - p[0], p[0]], rtol=1e-6)
    finally:
        server.stop()


def test_the_keys_of_multiclass_and_regression_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, booster = _serve_builtin(
        tmp_path / "multi", "multi:softprob", SAGEMAKER_INFERENCE_OUTPUT=ALL_KEYS
    )
    probabilities = booster.inplace_predict(PROBE)
    try:
        records = _predictor(server, monkeypatch, JSONDeserializer()).predict(PROBE.tolist())["predictions"]
        first = records[0]
        assert first["labels"] == [0, 1, 2]
        assert first["predicted_label"] == int(np.argmax(probabilities[0]))
        assert first["probability"] == pytest.approx(probabilities[0].max(), rel=1e-6)  # the winning class's
        assert first["raw_scores"] == pytest.approx(probabilities[0].tolist(), rel=1e-6)
    finally:
        server.stop()
    server, booster = _serve_builtin(
        tmp_path / "regression",
        "reg:squarederror",
        SAGEMAKER_INFERENCE_OUTPUT="predicted_score,labels,probability",
    )
    try:
        records = _predictor(server, monkeypatch, JSONDeserializer()).predict(PROBE.tolist())["predictions"]
        values = booster.inplace_predict(PROBE)
        assert [r["predicted_score"] for r in records] == pytest.approx(values.tolist(), rel=1e-6)
        assert all(r["labels"] is None and r["probability"] is None for r in records)
    finally:
        server.stop()


@pytest.mark.parametrize("objective", ["binary:logitraw", "binary:hinge", "multi:softmax"])
def test_raw_scores_of_objectives_without_probabilities_are_their_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, objective: str
) -> None:
    """AWS's serve_utils: the raw score of these objectives is what the objective outputs (the
    margin, 0/1, the class index) and the raw scores [1 - x, x], for multi:softmax too."""
    server, booster = _serve_builtin(tmp_path, objective, SAGEMAKER_INFERENCE_OUTPUT=ALL_KEYS)
    output = booster.inplace_predict(PROBE)  # the margin, 0/1, or the class index
    try:
        records = _predictor(server, monkeypatch, JSONDeserializer()).predict(PROBE.tolist())["predictions"]
        for record, x in zip(records, output.astype(float), strict=True):
            assert record["raw_score"] == pytest.approx(x, rel=1e-6, abs=1e-6)
            assert record["raw_scores"] == pytest.approx([1 - x, x], rel=1e-6, abs=1e-6)
            label = int(x > 0) if objective == "binary:logitraw" else int(x)
            assert record["predicted_label"] == label
            assert record["labels"] == ([0, 1, 2] if objective == "multi:softmax" else [0, 1])
            assert record["predicted_score"] is None
    finally:
        server.stop()


def test_one_selected_key_answers_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, booster = _serve_builtin(
        tmp_path, "binary:logistic", SAGEMAKER_INFERENCE_OUTPUT="predicted_label"
    )
    try:
        records = _predictor(server, monkeypatch, JSONDeserializer()).predict(PROBE.tolist())["predictions"]
        assert records == [
            {"predicted_label": int(p > 0.5)} for p in booster.inplace_predict(PROBE)
        ]  # row 15
        lines = server.invoke(b"0.1,0.2,0.3,0.4\n0.5,0.6,0.7,0.8\n", accept="application/jsonlines").text
        assert [line.startswith('{"predicted_label":') for line in lines.splitlines()] == [True, True]
    finally:
        server.stop()


def test_a_sagecraft_model_with_a_user_objective_answers_as_the_builtin_one(tmp_path: Path) -> None:
    labels = (X[:, 0] + X[:, 2] > 0).astype(int)
    rows = "".join(f"{y}," + ",".join(f"{v:.7g}" for v in x) + "\n" for y, x in zip(labels, X, strict=True))
    chosen = TrainingTree(tmp_path / "chosen")
    chosen.add_file("train", "d.csv", rows)
    chosen.hyperparameters({"algorithm": "xgboost", "objective": "binary:logistic", "num_round": 10})
    assert chosen.train().returncode == 0, chosen.explain()
    body = "\n".join(",".join(f"{v:.7g}" for v in x) for x in PROBE) + "\n"
    server = Server(chosen.base, SAGEMAKER_MODEL_SERVER_WORKERS="1").wait_ready()
    try:
        booster = xgb.Booster(model_file=str(chosen.model_dir / "xgboost-model.ubj"))
        expected = booster.inplace_predict(np.array([[float(v) for v in x.split(",")] for x in body.split()]))
        answered = [float(v) for v in server.invoke(body).text.split()]
        assert np.allclose(answered, expected, rtol=1e-6)
        label = server.invoke(body, headers={"X-Amzn-SageMaker-Custom-Attributes": "output=predicted_label"})
        assert label.text.split() == [str(int(p > 0.5)) for p in expected]
    finally:
        server.stop()


def test_a_model_whose_objective_sagecraft_chose_answers_labels(iris_server: Server) -> None:
    answer = iris_server.invoke("5.1,3.5,1.4,0.2\n6.9,3.1,5.4,2.1\n", accept="application/json")
    assert answer.json() == {"predictions": ["setosa", "virginica"]}


@pytest.mark.parametrize("objective", ["binary:logistic", "multi:softprob"])
def test_a_batch_transform_answers_the_default_a_line_a_row_whatever_accept_says(
    tmp_path: Path, objective: str
) -> None:
    """Row 17: SAGEMAKER_BATCH=true, as SageMaker sets it in a batch transform's container."""
    server, booster = _serve_builtin(tmp_path, objective, SAGEMAKER_BATCH="true")
    many = RNG.normal(size=(3000, 4)).astype(np.float32)  # past the small-body path too
    try:
        for rows in (PROBE, many):
            body = "\n".join(",".join(f"{v:.9g}" for v in row) for row in rows) + "\n"
            answer = server.invoke(body, accept="application/json")
            assert answer.status_code == 200, answer.text
            assert answer.headers["Content-Type"] == "text/csv"
            lines = answer.text.splitlines()
            expected = booster.inplace_predict(rows)
            if objective == "multi:softprob":
                assert lines[0].startswith("[") and ", " in lines[0]  # a list a line: [0.1, 0.2, 0.7]
            assert np.allclose([json.loads(line) for line in lines], expected, rtol=1e-6, atol=1e-7)
    finally:
        server.stop()
    chosen, _ = _serve_builtin(tmp_path / "chosen", objective, SAGEMAKER_BATCH="true",
                               SAGEMAKER_INFERENCE_OUTPUT="predicted_label")  # fmt: skip
    try:  # selected outputs are encoded for Accept, as AWS does
        answer = chosen.invoke("0.1,0.2,0.3,0.4\n", accept="application/json")
        assert answer.headers["Content-Type"] == "application/json"
        assert list(answer.json()["predictions"][0]) == ["predicted_label"]
    finally:
        chosen.stop()


def _ensemble_folder(base: Path, objective: str, count: int = 3, **names: str) -> list[xgb.Booster]:
    """A built-in model folder of `count` boosters trained on different halves of the rows."""
    boosters = []
    folder = base / "model"
    folder.mkdir(parents=True)
    for index in range(count):
        rows = RNG.permutation(len(X))[: len(X) // 2]
        if objective.startswith("multi:"):
            labels, extra = (X[rows, 0] > 0).astype(int) + (X[rows, 1] > 0).astype(int), {"num_class": 3}
        elif objective.startswith("binary:"):
            labels, extra = (X[rows, 0] + X[rows, 2] > 0).astype(int), {}
        else:
            labels, extra = 2 * X[rows, 0] - X[rows, 3], {}
        params = {"objective": objective, "max_depth": 2 + index, **extra}
        booster = xgb.train(params, xgb.DMatrix(X[rows], label=labels), num_boost_round=5 + 3 * index)
        name = "xgboost-model" if index == 0 else names.get(str(index), f"xgboost-model-{index}")
        (folder / name).write_bytes(bytes(booster.save_raw("ubj" if index % 2 == 0 else "json")))
        boosters.append(booster)
    return boosters


BODY = "\n".join(",".join(f"{v:.9g}" for v in row) for row in PROBE) + "\n"


@pytest.mark.parametrize("objective", ["binary:logistic", "multi:softprob", "reg:squarederror"])
def test_several_model_files_answer_as_their_mean(tmp_path: Path, objective: str) -> None:
    """Row 23: every file of a built-in model folder answers; probabilities and values averaged."""
    boosters = _ensemble_folder(tmp_path, objective)
    (tmp_path / "model" / ".hidden").write_text("not a model: hidden files are left alone")
    expected = np.mean([b.inplace_predict(PROBE) for b in boosters], axis=0)
    server = Server(tmp_path, SAGEMAKER_MODEL_SERVER_WORKERS="1").wait_ready()
    try:
        answer = server.invoke(BODY, accept="application/json")
        assert answer.status_code == 200, answer.text
        scores = np.array([r["score"] for r in answer.json()["predictions"]])
        assert np.allclose(scores, expected, rtol=1e-5, atol=1e-6)
        if objective != "reg:squarederror":
            label = {"X-Amzn-SageMaker-Custom-Attributes": "output=predicted_label"}
            labels = [int(v) for v in server.invoke(BODY, headers=label).text.split()]
            averaged = expected if expected.ndim == 2 else np.column_stack([1 - expected, expected])
            assert labels == averaged.argmax(axis=1).tolist()
            shap = server.invoke(BODY, headers={"X-Amzn-SageMaker-Custom-Attributes": "output=contributions"})
            assert shap.status_code == 400 and "an ensemble of 3 model files" in shap.text
    finally:
        server.stop()


def test_an_ensemble_of_softmax_models_votes_and_can_be_switched_off(tmp_path: Path) -> None:
    boosters = _ensemble_folder(tmp_path, "multi:softmax")
    classes = np.stack([b.inplace_predict(PROBE).astype(int) for b in boosters], axis=1)
    votes = [int(np.bincount(row, minlength=3).argmax()) for row in classes]
    server = Server(tmp_path, SAGEMAKER_MODEL_SERVER_WORKERS="1").wait_ready()
    try:
        assert [int(v) for v in server.invoke(BODY).text.split()] == votes
    finally:
        server.stop()
    alone = Server(
        tmp_path, SAGEMAKER_MODEL_SERVER_WORKERS="1", SAGEMAKER_INFERENCE_ENSEMBLE="false"
    ).wait_ready()
    try:
        assert [int(v) for v in alone.invoke(BODY).text.split()] == classes[:, 0].tolist()
    finally:
        alone.stop()


@pytest.mark.parametrize(
    ("write", "phrase"),
    [
        (
            lambda path: path.write_bytes(bytes(_booster("reg:squarederror").save_raw("ubj"))),
            "its objective is reg:squarederror",
        ),
        (lambda path: path.write_text('{"learner": 3}'), "xgboost-model-9"),
    ],
    ids=["another objective", "not a booster"],
)
def test_a_member_that_does_not_fit_is_refused_naming_it(tmp_path: Path, write, phrase: str) -> None:  # type: ignore[no-untyped-def]
    _ensemble_folder(tmp_path, "binary:logistic", count=2)
    write(tmp_path / "model" / "xgboost-model-9")
    server = Server(tmp_path)
    assert server.process.wait(60) == 1
    assert phrase in server.log() and "xgboost-model-9" in server.log()
    server.stop()


def test_an_ensemble_is_held_to_one_models_size_limit(tmp_path: Path) -> None:
    """Many files, each within the model file limit, are still one model: counted together."""
    _ensemble_folder(tmp_path, "binary:logistic", count=3)
    sizes = [p.stat().st_size for p in (tmp_path / "model").iterdir()]
    limit_mb = f"{max(sizes) * 1.5 / 2**20:.6f}"  # every file fits, the three together do not
    server = Server(tmp_path, SAGECRAFT_MAX_MODEL_FILE_MB=limit_mb)
    assert server.process.wait(60) == 1
    assert "holds 3 model files of" in server.log() and "SAGECRAFT_MAX_MODEL_FILE_MB" in server.log()
    server.stop()
    alone = Server(tmp_path, SAGECRAFT_MAX_MODEL_FILE_MB=limit_mb, SAGEMAKER_INFERENCE_ENSEMBLE="false")
    try:
        assert alone.wait_ready().invoke(BODY).status_code == 200
    finally:
        alone.stop()
