"""Pipe mode: channels streamed into FIFOs (`input/data/<channel>_0`) by a writer thread, as
SageMaker does, in every format a channel may hold; the model is the one File mode trains."""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import struct
import threading
from pathlib import Path

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest
from sagemaker.amazon.common import write_numpy_to_dense_tensor

from sagecraft.environment import SageMakerPaths
from sagecraft.errors import DataError
from sagecraft.recordio import MAGIC
from sagecraft.training.trainer import train as run_training_job
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


def _epochs(tree: TrainingTree, channel: str, epochs: list[bytes]) -> list[Path]:
    """Pipe mode FIFOs `<channel>_0`, `<channel>_1`, ... each filled by a writer thread with its
    epoch's bytes once the job opens it (as SageMaker opens the next epoch after the last)."""
    tree.write_config(
        "inputdataconfig.json", {channel: {"TrainingInputMode": "Pipe", "ContentType": "text/csv"}}
    )
    fifos = []
    for number, data in enumerate(epochs):
        fifo = tree.base / "input" / "data" / f"{channel}_{number}"
        os.mkfifo(fifo)
        fifos.append(fifo)

        def write(fifo: Path = fifo, data: bytes = data) -> None:
            with contextlib.suppress(BrokenPipeError), fifo.open("wb") as out:
                for start in range(0, len(data), 65536):
                    out.write(data[start : start + 65536])

        threading.Thread(target=write, daemon=True).start()
    return fifos


def _release(fifos: list[Path]) -> None:
    """Let the writers of epochs the job never opened finish."""
    for fifo in fifos:
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))


def test_pipe_epochs_read_one_epoch_a_pass_and_train_the_file_mode_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tree = TrainingTree(tmp_path / "pipe")
    fifos = _epochs(tree, "train", [CSV_ROWS.encode()] * 12)
    tree.hyperparameters({**XGBOOST, "pipe_epochs": True})
    try:
        run_training_job(SageMakerPaths(tree.base))
    finally:
        _release(fifos)
    assert "epoch 0 read (the schema pass)" in caplog.text
    assert "reading epoch 0 from" in caplog.text and "_2 as it arrives" in caplog.text  # pass 2, epoch 2
    assert not (tree.base / "scratch").exists()  # nothing was written there
    assert (tree.model_dir / "xgboost-model.ubj").read_bytes() == _file_mode_model(tmp_path, CSV_ROWS)


def test_a_shuffled_second_epoch_is_a_clear_error(tmp_path: Path) -> None:
    lines = CSV_ROWS.splitlines(keepends=True)
    shuffled = "".join(lines[1:] + lines[:1]).encode()  # the same rows, another order
    tree = TrainingTree(tmp_path / "pipe")
    fifos = _epochs(tree, "train", [CSV_ROWS.encode(), shuffled, *([CSV_ROWS.encode()] * 6)])
    tree.hyperparameters({**XGBOOST, "pipe_epochs": True})
    try:
        with pytest.raises(
            DataError, match="epoch 1 of the 'train' channel \\(Pipe mode\\) differs from epoch 0"
        ) as caught:
            run_training_job(SageMakerPaths(tree.base))
    finally:
        _release(fifos)
    assert "the same count but other bytes or another order" in str(caught.value)
    assert "ShuffleConfig" in str(caught.value)
