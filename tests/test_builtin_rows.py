"""The drop-in suite for SageMaker's built-in XGBoost: every row of the compat notes
(../shared/docs/builtin-xgboost-compat.md, summarised in docs/migrating-from-builtin-xgboost.md)
names the tests that train or serve through the real processes and check AWS's observed
behaviour there; the rows whose requests a SageMaker SDK client sends are driven here once more
by the SDK's own Predictor (RecordSerializer, RecordDeserializer, CSVSerializer,
CSVDeserializer) against a built-in algorithm's model.tar.gz from XGBoost 1 (its binary
format), the model such a client has today."""

from __future__ import annotations

import ast
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from sagemaker.base_deserializers import CSVDeserializer
from sagemaker.deserializers import RecordDeserializer
from sagemaker.serializers import RecordSerializer

from old_xgboost import PROBE
from sagecraft_xgboost.persistence import booster_from_bytes
from sagemaker_tree import Server
from sdk_client import sdk_predictor

TESTS = Path(__file__).parent
# Row of the compat notes -> the tests that check AWS's behaviour for it.
ROWS: dict[int, list[str]] = {
    1: ["test_training.py::test_a_job_without_an_algorithm_trains_the_images_default"],
    2: [
        "test_builtin_compat.py::test_libsvm_with_label_weight_and_empty_values_trains_and_serves",
        "test_formats.py::test_parquet_with_target_and_with_the_label_first",
        "test_negotiation.py::test_one_vocabulary_for_requests_and_channels",
    ],
    3: [
        "test_recordio.py::test_sdk_dense_records_train_and_serve_through_record_serializers",
        "test_recordio.py::test_sdk_sparse_records_train_a_forest_with_a_content_type",
    ],
    4: ["test_cross_validation.py::test_repeated_kfold_under_the_builtin_algorithms_names"],
    5: [
        "test_builtin_compat.py::test_sigterm_with_save_model_on_termination_false_writes_no_model",
        "test_builtin_compat.py::test_legacy_names_and_gpu_hist_train_with_warnings",
    ],
    6: ["test_builtin_compat.py::test_builtin_metric_names_print_each_round_and_drive_early_stopping"],
    7: ["test_builtin_compat.py::test_legacy_names_and_gpu_hist_train_with_warnings"],
    8: ["test_builtin_compat.py::test_libsvm_with_label_weight_and_empty_values_trains_and_serves"],
    9: [
        "test_builtin_compat.py::test_libsvm_with_label_weight_and_empty_values_trains_and_serves",
        "test_builtin_compat.py::test_a_libsvm_line_that_is_neither_is_named",
    ],
    10: ["test_builtin_answers.py::test_the_default_answer_is_the_objectives_output"],
    11: ["test_builtin_answers.py::test_the_default_answer_is_the_objectives_output"],
    12: [
        "test_builtin_models.py::test_a_builtin_model_serves_without_a_manifest",
        "test_binary_models.py::test_binary_models_serve_on_a_multi_model_endpoint",
    ],
    13: ["test_builtin_answers.py::test_the_default_answer_is_the_objectives_output"],
    14: [
        "test_builtin_answers.py::test_the_seven_keys_of_a_binary_model_as_aws_gives_them",
        "test_builtin_answers.py::test_the_keys_of_multiclass_and_regression_models",
        "test_builtin_answers.py::test_raw_scores_of_objectives_without_probabilities_are_their_output",
    ],
    15: ["test_builtin_answers.py::test_one_selected_key_answers_objects"],
    16: ["test_builtin_answers.py::test_the_seven_keys_of_a_binary_model_as_aws_gives_them"],
    17: [
        "test_builtin_answers.py::test_a_batch_transform_answers_the_default_a_line_a_row_whatever_accept_says"
    ],
    18: ["test_builtin_rows.py::test_records_from_the_sdk_are_answered_in_records_it_reads"],
    19: ["test_builtin_rows.py::test_records_from_the_sdk_are_answered_in_records_it_reads"],
    20: ["test_builtin_rows.py::test_csv_from_the_sdk_with_any_delimiter_and_empty_rows"],
    21: ["test_builtin_rows.py::test_csv_from_the_sdk_with_any_delimiter_and_empty_rows"],
    22: [
        "test_builtin_models.py::test_a_builtin_model_serves_without_a_manifest",
        "test_builtin_models.py::test_a_builtin_model_loads_on_a_multi_model_endpoint",
        "test_binary_models.py::test_a_binary_model_tarball_serves_as_the_builtin_algorithm_answers",
        "test_binary_models.py::test_binary_models_serve_on_a_multi_model_endpoint",
    ],
    23: ["test_builtin_answers.py::test_an_ensemble_of_softmax_models_votes_and_can_be_switched_off"],
}
RECORDIO = "application/x-recordio-protobuf"


def _test_names(module: str) -> set[str]:
    tree = ast.parse((TESTS / module).read_text())
    return {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test")
    }


def test_every_row_of_the_compat_notes_names_tests_that_exist() -> None:
    assert sorted(ROWS) == list(range(1, 24))
    for row, tests in ROWS.items():
        assert tests, f"row {row} has no test"
        for test in tests:
            module, name = test.split("::")
            assert name in _test_names(module), f"row {row}: {test} does not exist"


@pytest.fixture(scope="module")
def builtin_endpoint(binary_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A single-model endpoint serving a binary:logistic model.tar.gz written by XGBoost 1's
    binary format, unpacked as SageMaker unpacks it."""
    base = tmp_path_factory.mktemp("builtin-rows")
    archive = base / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(binary_models / "binary" / "xgboost-model", arcname="xgboost-model")
    with tarfile.open(archive) as tar:
        tar.extractall(base / "model", filter="data")
    server = Server(base, SAGEMAKER_MODEL_SERVER_WORKERS="1").wait_ready()
    yield server
    server.stop()


def _written(binary_models: Path) -> np.ndarray:
    return np.load(binary_models / "binary" / "expected.npy")


def test_records_from_the_sdk_are_answered_in_records_it_reads(
    builtin_endpoint: Server, binary_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows 18, 19: RecordSerializer's body, answered for RecordDeserializer (AWS's 500 without
    SAGEMAKER_INFERENCE_OUTPUT is not copied: the default answer, P(class 1), as a record)."""
    predictor = sdk_predictor(builtin_endpoint, monkeypatch, RecordDeserializer(), RecordSerializer())
    records = predictor.predict(np.nan_to_num(PROBE, nan=0.0))
    scores = np.array([r.label["score"].float32_tensor.values[0] for r in records], dtype=np.float32)
    booster, _ = booster_from_bytes((binary_models / "binary" / "xgboost-model").read_bytes(), "binary")
    expected = booster.predict(xgb.DMatrix(np.nan_to_num(PROBE, nan=0.0)))
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    refused = builtin_endpoint.invoke(RecordSerializer().serialize(PROBE[:, :3]).read(), RECORDIO)
    assert refused.status_code == 400 and "the records have 3 values" in refused.json()["message"]


@pytest.mark.parametrize("delimiter", [",", "\t", ";", "|"])
def test_csv_from_the_sdk_with_any_delimiter_and_empty_rows(
    builtin_endpoint: Server, binary_models: Path, monkeypatch: pytest.MonkeyPatch, delimiter: str
) -> None:
    """Rows 20, 21: the delimiter sniffed per request; a row of only empty fields is a row of
    missing values (the SDK's CSVSerializer sends a string body as it is)."""
    lines = [delimiter.join("" if np.isnan(v) else f"{v:.9g}" for v in row) for row in PROBE]
    lines.append(delimiter * 3)  # four empty fields
    predictor = sdk_predictor(builtin_endpoint, monkeypatch, CSVDeserializer())
    rows = predictor.predict("\n".join(lines))
    scores = np.array(rows, dtype=np.float32)
    assert scores.shape == (len(PROBE) + 1, 1)
    np.testing.assert_allclose(scores[:-1, 0], _written(binary_models), rtol=1e-6)
    booster, _ = booster_from_bytes((binary_models / "binary" / "xgboost-model").read_bytes(), "binary")
    missing = booster.predict(xgb.DMatrix(np.full((1, 4), np.nan, dtype=np.float32)))
    np.testing.assert_allclose(scores[-1], missing, rtol=1e-6)
