"""A built-in algorithm's `xgboost-model` in XGBoost's old binary format (what SageMaker's built-in
XGBoost 1.x wrote; written here by XGBoost itself, old_xgboost.py) is read, checked and served:
in-process the booster predicts exactly what the booster that wrote the file predicted; a
`model.tar.gz` holding only that file serves on a single-model endpoint (driven by the SageMaker
SDK's serializers) and on a multi-model endpoint with the writer's answers; crafted files are
refused, naming what is wrong."""

from __future__ import annotations

import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from sagemaker.base_deserializers import CSVDeserializer, JSONDeserializer

from old_xgboost import MODELS, PROBE
from sagecraft.errors import ModelLoadError
from sagecraft_xgboost.binary_format import read_binary_model
from sagecraft_xgboost.persistence import booster_from_bytes
from sagemaker_tree import Server, place_model
from sdk_client import sdk_predictor


def _model_file(binary_models: Path, name: str) -> bytes:
    return (binary_models / name / "xgboost-model").read_bytes()


def _expected(binary_models: Path, name: str, kind: str = "expected") -> np.ndarray:
    return np.load(binary_models / name / f"{kind}.npy")


def _assert_as_written(got: np.ndarray, expected: np.ndarray, name: str) -> None:
    """Equal to float32 precision: this XGBoost's sigmoid and softmax (and dart's weighted sum,
    gblinear's dot product) round a last bit differently from the writer's now and then."""
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_binary_model_predicts_what_the_xgboost_that_wrote_it_predicted(
    binary_models: Path, name: str
) -> None:
    booster, document = booster_from_bytes(_model_file(binary_models, name), name)
    expected = _expected(binary_models, name)
    probe = xgb.DMatrix(PROBE)  # gblinear predicts from a DMatrix only
    _assert_as_written(booster.predict(probe), expected, name)
    margin = booster.predict(probe, output_margin=True)
    written_margin = _expected(binary_models, name, "margin").reshape(-1)
    if name in ("dart", "linear"):
        _assert_as_written(margin.reshape(-1), written_margin, name)
    else:  # the sum of the same trees' leaves: bit for bit
        np.testing.assert_array_equal(margin.reshape(-1), written_margin)
    assert document["learner"]["objective"]["name"] == MODELS[name][0]["objective"]


def test_pruned_trees_keep_their_deleted_nodes(binary_models: Path) -> None:
    document = read_binary_model(_model_file(binary_models, "pruned"))
    trees = document["learner"]["gradient_booster"]["model"]["trees"]
    assert sum(int(tree["tree_param"]["num_deleted"]) for tree in trees) > 0


def _tarball(binary_models: Path, name: str, base: Path) -> Path:
    """What the built-in algorithm's training job leaves in S3 (a model.tar.gz of xgboost-model),
    unpacked where SageMaker puts it: <base>/model."""
    base.mkdir(parents=True, exist_ok=True)
    archive = base / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(binary_models / name / "xgboost-model", arcname="xgboost-model")
    (base / "model").mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(base / "model", filter="data")
    return base / "model"


def test_a_binary_model_tarball_serves_as_the_builtin_algorithm_answers(
    binary_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tarball(binary_models, "softprob", tmp_path)
    server = Server(tmp_path, SAGEMAKER_MODEL_SERVER_WORKERS="1").wait_ready()
    try:
        expected = _expected(binary_models, "softprob")
        rows = sdk_predictor(server, monkeypatch, CSVDeserializer()).predict(PROBE.tolist())
        assert np.array(rows, dtype=np.float32).shape == expected.shape
        np.testing.assert_allclose(np.array(rows, dtype=np.float32), expected, rtol=1e-6)  # float32 text
        answer = sdk_predictor(server, monkeypatch, JSONDeserializer()).predict(PROBE.tolist())
        scores = np.array([record["score"] for record in answer["predictions"]], dtype=np.float32)
        _assert_as_written(scores, expected, "softprob")
        assert "has no manifest.json: serving it as a xgboost model" in server.log()
    finally:
        server.stop()


def test_binary_models_serve_on_a_multi_model_endpoint(
    binary_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server(tmp_path, SAGEMAKER_MULTI_MODEL="true", SAGEMAKER_MODEL_SERVER_WORKERS="2").wait_ready()
    try:
        for name in sorted(MODELS):
            folder = _tarball(binary_models, name, tmp_path / "built" / name)
            url = place_model(tmp_path, name, folder)
            loaded = server.session.post(f"{server.url}/models", json={"model_name": name, "url": url})
            assert loaded.status_code == 200, loaded.text
        # A crafted one (a child index outside its tree) fails its own load, naming the node.
        crafted = _tarball(binary_models, "binary", tmp_path / "built" / "crafted")
        data = (crafted / "xgboost-model").read_bytes()
        (crafted / "xgboost-model").write_bytes(_set(data, _first_tree(data) + 148 + 4, "<i", 10**6))
        url = place_model(tmp_path, "crafted", crafted)
        refused = server.session.post(f"{server.url}/models", json={"model_name": "crafted", "url": url})
        assert refused.status_code == 500 and refused.json()["type"] == "ModelLoadError", refused.text
        assert "tree 0: node 0 has a child outside the tree" in refused.json()["message"]
        predictor = sdk_predictor(server, monkeypatch, JSONDeserializer())
        for name in sorted(MODELS):  # every other model still answers
            answer = predictor.predict(PROBE.tolist(), target_model=name)
            scores = np.array([record["score"] for record in answer["predictions"]], dtype=np.float32)
            _assert_as_written(scores, _expected(binary_models, name), name)
    finally:
        server.stop()


def _set(data: bytes, at: int, layout: str, value: float) -> bytes:
    size = struct.calcsize(layout)
    return data[:at] + struct.pack(layout, value) + data[at + size :]


# Offsets in the file: "binf" (4), the learner's 136 bytes, then the names.
_LEARNER_END = 4 + 136


def _first_tree(data: bytes) -> int:
    """Where the first tree's parameters start: after both names and the booster's 160 bytes."""
    at = _LEARNER_END
    for _ in range(2):
        (size,) = struct.unpack_from("<Q", data, at)
        at += 8 + size
    return at + 160


@pytest.mark.parametrize(
    ("craft", "phrase"),
    [
        (lambda d: d[: len(d) // 2], "run past the end of the file"),
        (lambda d: d + b"\0", "bytes after the end of the model"),
        (lambda d: _set(d, _LEARNER_END, "<Q", 2**62), "would run past the end of the file"),
        (lambda d: _set(d, _first_tree(d) - 160, "<i", 2**31 - 1), "trees would run past the end"),
        (lambda d: _set(d, _first_tree(d) + 4, "<i", 10**8), "nodes of tree 0 would run past"),
        (lambda d: _set(d, _first_tree(d) + 4, "<i", -1), "tree 0 has -1 nodes"),
        (lambda d: _set(d, _first_tree(d) + 20, "<i", -1), "size_leaf_vector"),
        (lambda d: _set(d, _first_tree(d) + 148 + 4, "<i", 10**6), "tree 0: node 0 has a child outside"),
        (lambda d: _set(d, 4 + 20, "<I", 0), "before XGBoost 1.0"),
        (lambda d: d.replace(b"binary:logistic", b"binary:logitraw", 1), "does not match"),
    ],
    ids=[
        "truncated",
        "trailing byte",
        "objective name length",
        "tree count",
        "node count",
        "negative node count",
        "leaf vector",
        "child out of the tree",
        "pre-1.0",
        "objective mismatch",
    ],
)
def test_crafted_binary_models_are_refused_naming_the_problem(
    binary_models: Path, craft: object, phrase: str
) -> None:
    data = craft(_model_file(binary_models, "binary"))  # type: ignore[operator]
    with pytest.raises(ModelLoadError) as refused:
        booster_from_bytes(data, "xgboost-model")
    assert phrase in str(refused.value), str(refused.value)
