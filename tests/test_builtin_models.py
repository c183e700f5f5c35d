"""A model folder from SageMaker's built-in XGBoost (a lone `xgboost-model`, written here by
XGBoost itself, in UBJSON and in JSON; the old binary format is in test_binary_models.py) serves
without a manifest.json, on a single-model and a multi-model endpoint, and answers as the same
booster does in-process; a pickled booster is refused saying how to convert it, a file that is no
model in any of the formats naming what is wrong."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from sagemaker_tree import Server, TrainingTree, serve_models

RNG = np.random.default_rng(33)
X = RNG.normal(size=(400, 4)).astype(np.float32)
PROBE = RNG.normal(size=(25, 4)).astype(np.float32)
BODY = "\n".join(",".join(f"{v:.9g}" for v in row) for row in PROBE)


def _booster(objective: str) -> xgb.Booster:
    if objective == "multi:softprob":
        labels, extra = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int), {"num_class": 3}
    elif objective == "binary:logistic":
        labels, extra = (X[:, 0] + X[:, 2] > 0).astype(int), {}
    else:
        labels, extra = 2 * X[:, 0] - X[:, 3], {}
    params = {"objective": objective, "max_depth": 3, "eta": 0.3, **extra}
    return xgb.train(params, xgb.DMatrix(X, label=labels), num_boost_round=15)


def _builtin_folder(base: Path, booster: xgb.Booster, form: str) -> Path:
    """/opt/ml/model as SageMaker unpacks the built-in algorithm's model.tar.gz: one file,
    xgboost-model."""
    base.mkdir(parents=True, exist_ok=True)
    written = base / "xgboost-model"
    written.write_bytes(bytes(booster.save_raw(form)))
    with tarfile.open(base / "model.tar.gz", "w:gz") as tar:
        tar.add(written, arcname="xgboost-model")
    written.unlink()
    with tarfile.open(base / "model.tar.gz") as tar:
        tar.extractall(base / "model", filter="data")
    return base / "model"


@pytest.mark.parametrize("form", ["ubj", "json"])
@pytest.mark.parametrize("objective", ["binary:logistic", "multi:softprob", "reg:squarederror"])
def test_a_builtin_model_serves_without_a_manifest(tmp_path: Path, objective: str, form: str) -> None:
    booster = _booster(objective)
    _builtin_folder(tmp_path, booster, form)
    expected = booster.inplace_predict(PROBE)
    server = Server(tmp_path).wait_ready()
    try:
        if objective == "reg:squarederror":
            values = [float(v) for v in server.invoke(BODY).text.split()]
            assert np.allclose(values, expected, rtol=1e-6)
        else:
            answer = server.invoke(BODY, accept="application/json", headers={
                "X-Amzn-SageMaker-Custom-Attributes": "output=probabilities"})  # fmt: skip
            assert answer.status_code == 200, answer.text
            records = answer.json()["predictions"]  # as the built-in algorithm: one object a row
            probabilities = np.array([r["probabilities"] for r in records])
            default = np.array(
                [float(v) for v in server.invoke(BODY).text.replace("\n", ",").strip(",").split(",")]
            )
            assert np.allclose(default, expected.ravel(), atol=1e-6)  # the objective's output
            if objective == "binary:logistic":
                expected = np.column_stack([1 - expected, expected])
            assert np.allclose(probabilities, expected, atol=1e-6)
            label = {"X-Amzn-SageMaker-Custom-Attributes": "output=predicted_label"}
            labels = [int(float(v)) for v in server.invoke(BODY, headers=label).text.split()]
            assert labels == np.argmax(expected, axis=1).tolist()
        assert "has no manifest.json: serving it as a xgboost model" in server.log()
    finally:
        server.stop()


@pytest.mark.parametrize("form", ["ubj", "json"])
def test_a_builtin_model_loads_on_a_multi_model_endpoint(tmp_path: Path, form: str) -> None:
    booster = _booster("reg:squarederror")
    folder = _builtin_folder(tmp_path / "built", booster, form)
    server, _ = serve_models(tmp_path / "mme", builtin=folder)
    try:
        answer = server.session.post(
            f"{server.url}/models/builtin/invoke", data=BODY, headers={"Content-Type": "text/csv"}
        )
        assert answer.status_code == 200, answer.text
        assert np.allclose([float(v) for v in answer.text.split()], booster.inplace_predict(PROBE), rtol=1e-6)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (lambda b: pickle.dumps(b), "is a pickled booster"),
        (lambda b: b"binf" + bytes(b.save_raw("ubj"))[4:], "not a valid XGBoost binary model"),
        (lambda b: b"\0\1" + bytes(b.save_raw("ubj")), "not an XGBoost model in UBJSON, JSON or"),
        (lambda b: bytes(b.save_raw("ubj"))[: len(b.save_raw("ubj")) // 2], "xgboost-model is"),
    ],
    ids=["pickled", "binary format", "no format", "truncated"],
)
def test_builtin_models_that_cannot_be_checked_are_refused(tmp_path: Path, make, phrase: str) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "xgboost-model").write_bytes(make(_booster("reg:squarederror")))
    server = Server(tmp_path)
    assert server.process.wait(60) == 1
    assert phrase in server.log(), server.log()
    if phrase == "is a pickled booster":
        assert "save_model('xgboost-model.json')" in server.log()
    server.stop()


def test_a_folder_no_algorithm_recognises_still_names_the_missing_manifest(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"\0" * 16)
    server = Server(tmp_path)
    assert server.process.wait(60) == 1
    assert "manifest.json is missing" in server.log()
    server.stop()


def test_a_sagecraft_model_folder_is_read_by_its_manifest(tmp_path: Path) -> None:
    """A folder with a manifest never asks the plugins to describe it."""
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "d.csv", "".join(f"{i % 2},{i}\n" for i in range(40)))
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 3})
    assert tree.train().returncode == 0, tree.explain()
    server = Server(tree.base).wait_ready()
    try:
        assert "has no manifest.json" not in server.log()
    finally:
        server.stop()
