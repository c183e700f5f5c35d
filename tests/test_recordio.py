"""RecordIO-protobuf, checked against the SageMaker SDK's own writer and reader
(`sagemaker.amazon.common`): records the SDK writes train and are read back exactly; requests
from its RecordSerializer are answered in records its RecordDeserializer reads; every malformed
record is refused with its number, and the server keeps serving."""

from __future__ import annotations

import io
import os
import struct

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest
import scipy.sparse as sp
from sagemaker.amazon.common import read_records, write_numpy_to_dense_tensor, write_spmatrix_to_sparse_tensor
from sagemaker.deserializers import RecordDeserializer
from sagemaker.serializers import RecordSerializer

from sagecraft.recordio import MAGIC, RecordIOError, decode_rows, encode_answers, unwrap
from sagemaker_tree import Server, TrainingTree

RECORDIO = "application/x-recordio-protobuf"
RNG = np.random.default_rng(7)


def _dense(features: np.ndarray, labels: np.ndarray | None = None) -> bytes:
    buffer = io.BytesIO()
    write_numpy_to_dense_tensor(buffer, features, labels)
    return buffer.getvalue()


def _sparse(matrix: sp.spmatrix, labels: np.ndarray | None = None) -> bytes:
    buffer = io.BytesIO()
    write_spmatrix_to_sparse_tensor(buffer, matrix, labels)
    return buffer.getvalue()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_dense_records_written_by_the_sdk_are_read_exactly(dtype: type) -> None:
    features = (RNG.normal(size=(20, 4)) * 100).astype(dtype)
    labels = np.arange(20).astype(dtype)
    rows = decode_rows(_dense(features, labels))
    assert np.array_equal(rows.features, features.astype(np.float64))
    assert rows.labels is not None and np.array_equal(rows.labels, labels.astype(np.float64))
    assert decode_rows(_dense(features)).labels is None


def test_sparse_records_written_by_the_sdk_leave_unmentioned_positions_missing() -> None:
    matrix = sp.random(30, 12, density=0.25, random_state=3, format="csr", dtype=np.float64)
    rows = decode_rows(_sparse(matrix, np.ones(30)))
    dense = matrix.toarray()
    assert rows.sparse and rows.features.shape == (30, 12)
    assert np.array_equal(np.isnan(rows.features), dense == 0)
    assert np.array_equal(np.nan_to_num(rows.features), dense)


def test_answers_are_records_the_sdk_reads() -> None:
    body = encode_answers(
        [
            {"score": np.array([0.25])},
            {"predicted_label": ["virginica"], "probabilities": np.array([0.1, 0.9])},
        ]
    )
    first, second = read_records(io.BytesIO(body))
    assert list(first.label["score"].float32_tensor.values) == [0.25]
    assert list(second.label["predicted_label"].bytes.value) == [b"virginica"]
    assert np.allclose(second.label["probabilities"].float32_tensor.values, [0.1, 0.9])


def test_a_record_split_where_it_held_the_magic_is_joined() -> None:
    """dmlc's writer splits a record where its bytes hold the magic number; readers put it back."""
    magic = struct.pack("<I", MAGIC)
    value = np.frombuffer(magic, dtype="<f4")[0]  # a float32 whose bytes are the magic
    whole = _dense(np.array([[value, 1.0]], dtype=np.float32), np.array([2.0], dtype=np.float32))
    payload = whole[8 : 8 + struct.unpack_from("<I", whole, 4)[0]]
    head, tail = payload.split(magic)
    split = b""
    for piece, flag in ((head, 1), (tail, 3)):
        split += struct.pack("<II", MAGIC, len(piece) | flag << 29) + piece + b"\0" * (-len(piece) % 4)
    rows = decode_rows(split)
    assert rows.features.tobytes() == decode_rows(whole).features.tobytes()
    assert rows.labels is not None and rows.labels.tolist() == [2.0]
    assert b"".join(unwrap(io.BytesIO(split), 1 << 20)) == payload
    assert b"".join(unwrap(io.BytesIO(whole), 1 << 20)) == payload


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x0a\x23\xd7\xce\x10\x00\x00\x00abc", "record 1 (byte 0): declares 16 bytes, only 3 follow"),
        (b"PAR1" * 4, "record 1 (byte 0): no RecordIO magic number"),
        (b"\x0a\x23\xd7\xce\x01", "truncated: 5 bytes where a header needs 8"),
        (struct.pack("<II", MAGIC, 2) + b"\x0a\xff\0\0", "truncated varint"),
        (struct.pack("<II", MAGIC, 3 << 29), "part flag 3 out of sequence"),
        (b"", "no records"),
    ],
)
def test_malformed_records_are_refused_naming_the_record(data: bytes, message: str) -> None:
    with pytest.raises(RecordIOError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_rows(data)


def test_a_sparse_record_declaring_a_huge_width_is_refused_before_the_matrix() -> None:
    huge = sp.csr_matrix(([1.0], ([0], [3_000_000_000])), shape=(1, 3_000_000_001))
    with pytest.raises(RecordIOError, match="more than 1,000,000 cells"):
        decode_rows(_sparse(huge), max_cells=1_000_000)


def test_a_truncated_sdk_file_names_its_last_record() -> None:
    data = _dense(np.ones((10, 3), dtype=np.float32), np.zeros(10, dtype=np.float32))
    with pytest.raises(RecordIOError, match="record 10"):
        decode_rows(data[:-5])
    with pytest.raises(RecordIOError, match="record 4: 2 values where another record has 3"):
        decode_rows(data[: 3 * (len(data) // 10)] + _dense(np.ones((1, 2), dtype=np.float32)))


# --- through the real processes --------------------------------------------------------------


def _three_classes(rows: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(rows) % 3
    features = RNG.normal(size=(rows, 4)) + labels[:, None] * 2.0
    return features.astype(np.float32), labels.astype(np.float32)


@pytest.fixture(scope="module")
def recordio_model(tmp_path_factory: pytest.TempPathFactory) -> TrainingTree:
    tree = TrainingTree(tmp_path_factory.mktemp("recordio"))
    features, labels = _three_classes(300)
    (tree.base / "input" / "data" / "train").mkdir(parents=True)
    (tree.base / "input" / "data" / "train" / "part-0.pbr").write_bytes(_dense(features[:200], labels[:200]))
    (tree.base / "input" / "data" / "train" / "part-1.pbr").write_bytes(_dense(features[200:], labels[200:]))
    tree.hyperparameters(
        {"algorithm": "xgboost", "objective": "multi:softprob", "num_class": 3, "num_round": 5}
    )
    result = tree.train()
    assert result.returncode == 0, tree.explain()
    assert "recordio-protobuf detected from the files" in result.stderr
    return tree


def test_sdk_dense_records_train_and_serve_through_record_serializers(recordio_model: TrainingTree) -> None:
    features, _ = _three_classes(30)
    server = Server(recordio_model.base).wait_ready()
    try:
        body = RecordSerializer().serialize(features).read()
        csv = server.invoke("\n".join(",".join(f"{v:.9g}" for v in row) for row in features))
        answer = server.invoke(body, RECORDIO, accept=RECORDIO)
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"] == RECORDIO
        records = RecordDeserializer().deserialize(io.BytesIO(answer.content), RECORDIO)
        # The objective (multi:softprob) was the user's: the default answer is the probabilities.
        scores = [list(r.label["score"].float32_tensor.values) for r in records]
        expected = [[float(v) for v in line.split(",")] for line in csv.text.splitlines()]
        assert np.allclose(scores, expected, rtol=1e-6)
        probabilities = server.invoke(
            body,
            RECORDIO,
            accept=RECORDIO,
            headers={"X-Amzn-SageMaker-Custom-Attributes": "output=probabilities"},
        )
        rows = [
            list(r.label["score"].float32_tensor.values)
            for r in read_records(io.BytesIO(probabilities.content))
        ]
        assert len(rows) == 30 and all(len(row) == 3 and abs(sum(row) - 1) < 1e-5 for row in rows)
        for bad, why in ((body[:-7], "record 30"), (b"\x0a\x23\xd7\xce" + b"\xff" * 8, "record 1")):
            refused = server.invoke(bad, RECORDIO)
            assert refused.status_code == 400 and why in refused.json()["message"], refused.text
        narrow = RecordSerializer().serialize(features[:, :3]).read()
        refused = server.invoke(narrow, RECORDIO)
        assert refused.status_code == 400 and "the records have 3 values" in refused.json()["message"]
        assert server.invoke("0,0,0,0").status_code == 200  # still serving
    finally:
        server.stop()


def test_sdk_sparse_records_train_a_forest_with_a_content_type(tmp_path) -> None:  # type: ignore[no-untyped-def]
    features, labels = _three_classes(240)
    features[features < 0.5] = 0  # sparse: zeros are not written, so they are missing values
    tree = TrainingTree(tmp_path)
    (tree.base / "input" / "data" / "train").mkdir(parents=True)
    (tree.base / "input" / "data" / "train" / "data").write_bytes(_sparse(sp.csr_matrix(features), labels))
    tree.channels(train=RECORDIO)
    tree.hyperparameters({"algorithm": "random_forest", "n_estimators": 20})
    assert tree.train().returncode == 0, tree.explain()
    server = Server(tree.base).wait_ready()
    try:
        body = _sparse(sp.csr_matrix(features[:10]))
        answer = server.invoke(body, RECORDIO, accept="text/csv")
        assert answer.status_code == 200, answer.text
        assert len(answer.text.split()) == 10
    finally:
        server.stop()


def test_records_without_labels_cannot_train(tmp_path) -> None:  # type: ignore[no-untyped-def]
    tree = TrainingTree(tmp_path)
    (tree.base / "input" / "data" / "train").mkdir(parents=True)
    (tree.base / "input" / "data" / "train" / "data").write_bytes(_dense(np.ones((5, 2), dtype=np.float32)))
    tree.hyperparameters({"algorithm": "xgboost"})
    assert tree.train().returncode == 1
    assert "records have no label" in (tree.failure or "")


def test_a_wrapped_record_streams_in_pieces_no_larger_than_asked() -> None:
    """SageMaker wraps each S3 object in one record: it is never held whole."""
    payload = bytes(range(256)) * 40
    framed = struct.pack("<II", MAGIC, len(payload)) + payload
    pieces = list(unwrap(io.BytesIO(framed), 1000))
    assert b"".join(pieces) == payload and max(map(len, pieces)) <= 1000
    with pytest.raises(RecordIOError, match=r"declares 10240 bytes, only 5000 follow"):
        list(unwrap(io.BytesIO(framed[: 8 + 5000]), 1000))
