"""Pipe mode: channels streamed into FIFOs (`input/data/<channel>_0`) by a writer thread, as
SageMaker does, in every format a channel may hold; the model is the one File mode trains."""

from __future__ import annotations

import gzip
import io
import os
import struct
from pathlib import Path

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest
from sagemaker.amazon.common import write_numpy_to_dense_tensor

from sagecraft.recordio import MAGIC
from sagemaker_tree import Server, TrainingTree, regression_rows

XGBOOST = {"algorithm": "xgboost", "num_round": 10}
CSV_ROWS = regression_rows(11, 2000)


def _file_mode_model(tmp_path: Path, text: str, **hyperparameters: object) -> bytes:
    tree = TrainingTree(tmp_path / "file-mode")
    tree.add_file("train", "data.csv", text)
    tree.hyperparameters({**XGBOOST, **hyperparameters})
    assert tree.train().returncode == 0, tree.explain()
    return (tree.model_dir / "xgboost-model.ubj").read_bytes()


def _wrapped(data: bytes, piece: int = 1000) -> bytes:
    """The data cut into RecordIO records, as RecordWrapperType RecordIO delivers it."""
    out = b""
    for start in range(0, len(data), piece):
        chunk = data[start : start + piece]
        out += struct.pack("<II", MAGIC, len(chunk)) + chunk + b"\0" * (-len(chunk) % 4)
    return out


PIPES = {  # case -> (what the FIFO carries, ContentType, RecordWrapperType)
    "csv": (CSV_ROWS.encode(), "text/csv", None),
    "gzip csv, no content type": (gzip.compress(CSV_ROWS.encode()), None, None),
    "csv wrapped in RecordIO": (_wrapped(CSV_ROWS.encode()), "text/csv", "RecordIO"),
}


@pytest.mark.parametrize("case", sorted(PIPES))
def test_a_pipe_channel_trains_the_file_mode_model(tmp_path: Path, case: str) -> None:
    data, content_type, wrapper = PIPES[case]
    tree = TrainingTree(tmp_path / "pipe")
    writer = tree.pipe("train", data, content_type=content_type, record_wrapper=wrapper)
    tree.hyperparameters(XGBOOST)
    result = tree.train()
    assert result.returncode == 0, tree.explain()
    writer.join(5)
    assert "reading epoch 0" in result.stderr
    assert (tree.model_dir / "xgboost-model.ubj").read_bytes() == _file_mode_model(tmp_path, CSV_ROWS), case
    assert not (tree.base / "scratch").exists()  # the copy is removed


def test_libsvm_and_recordio_protobuf_pipes_with_a_validation_pipe(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    features = rng.normal(size=(600, 3)).astype(np.float32)
    labels = (features[:, 0] > 0).astype(np.float32)
    buffer = io.BytesIO()
    write_numpy_to_dense_tensor(buffer, features[:500], labels[:500])
    libsvm = "".join(
        f"{int(y)} " + " ".join(f"{i}:{v:.6f}" for i, v in enumerate(row)) + "\n"
        for y, row in zip(labels[500:], features[500:], strict=True)
    )
    tree = TrainingTree(tmp_path)
    tree.pipe("train", buffer.getvalue(), content_type="application/x-recordio-protobuf")
    tree.pipe("validation", libsvm.encode(), content_type="text/libsvm")
    tree.hyperparameters({**XGBOOST, "objective": "binary:logistic"})
    result = tree.train()
    assert result.returncode == 0, tree.explain()
    assert "validation-logloss" in result.stdout
    server = Server(tree.base).wait_ready()
    try:
        answer = server.invoke("1,0,0\n-1,0,0\n")  # P(class 1): the objective was the user's
        assert [float(p) > 0.5 for p in answer.text.split()] == [True, False], answer.text
    finally:
        server.stop()


def test_pipe_mode_errors_name_the_channel(tmp_path: Path) -> None:
    missing = TrainingTree(tmp_path / "missing")
    missing.write_config("inputdataconfig.json", {"train": {"TrainingInputMode": "Pipe"}})
    missing.hyperparameters(XGBOOST)
    assert missing.train().returncode == 1
    assert "Pipe mode, but SageMaker's FIFO" in (missing.failure or "")
    regular = TrainingTree(tmp_path / "regular")
    regular.write_config("inputdataconfig.json", {"train": {"TrainingInputMode": "Pipe"}})
    (regular.base / "input" / "data" / "train_0").write_text(CSV_ROWS)
    regular.hyperparameters(XGBOOST)
    assert regular.train().returncode == 1
    assert "train_0 is not a FIFO" in (regular.failure or "")
    truncated = TrainingTree(tmp_path / "truncated")
    truncated.pipe(
        "train", _wrapped(CSV_ROWS.encode())[:-10], content_type="text/csv", record_wrapper="RecordIO"
    )
    truncated.hyperparameters(XGBOOST)
    assert truncated.train().returncode == 1
    failure = truncated.failure or ""
    assert "RecordWrapperType RecordIO" in failure and "only" in failure, failure
    bad_wrapper = TrainingTree(tmp_path / "bad-wrapper")
    bad_wrapper.write_config("inputdataconfig.json", {"train": {"RecordWrapperType": "Zip"}})
    bad_wrapper.hyperparameters(XGBOOST)
    assert bad_wrapper.train().returncode == 1
    assert "RecordWrapperType must be None or RecordIO" in (bad_wrapper.failure or "")


def test_a_pipe_that_would_fill_the_scratch_disk_stops_the_job_with_a_message(tmp_path: Path) -> None:
    """An epoch never ends only when the disk does: the copy stops before the disk is full."""
    import shutil

    from sagecraft.errors import DataTooLargeError
    from sagecraft.training import pipe

    free = shutil.disk_usage(tmp_path).free
    pipe._check_room(tmp_path, 1024, "train", 0)  # room to spare: nothing said
    with pytest.raises(
        DataTooLargeError, match="'train' channel \\(Pipe mode\\) does not fit the scratch disk"
    ):
        pipe._check_room(tmp_path, free - pipe.DISK_RESERVE_BYTES + 1, "train", 5 << 20)
