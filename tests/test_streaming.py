"""Streamed channels (sagecraft.training.stream): each file parsed once into float32 batches on
the scratch disk, XGBoost trained from an iterator over them (QuantileDMatrix, or
ExtMemQuantileDMatrix with its page cache on the scratch disk). The same model, to the byte, as
the in-memory path on the same data, in every format that streams; clear errors for what does
not; and the peak memory of a 200 MB CSV job bounded by the chunks, not the file."""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import scipy.sparse
from sagemaker.amazon.common import write_numpy_to_dense_tensor, write_spmatrix_to_sparse_tensor

from sagecraft.environment import SageMakerPaths
from sagecraft.errors import DataError, HyperparameterError
from sagecraft.testing import train
from sagecraft.training import stream as stream_module
from sagecraft.training.trainer import train as run_training_job
from sagemaker_tree import SAGECRAFT, TrainingTree, environment, iris_rows, regression_rows

XGBOOST = {"algorithm": "xgboost", "num_round": 8, "max_bin": 64}
MODEL = "xgboost-model.ubj"


def _binary_rows(seed: int, count: int) -> str:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(count, 4))
    features[rng.random(features.shape) < 0.1] = np.nan
    labels = (np.nan_to_num(features[:, 0]) + np.nan_to_num(features[:, 1]) > 0).astype(int)
    lines = []
    for label, row in zip(labels, features, strict=True):
        lines.append(",".join([str(label), *("" if np.isnan(v) else f"{v:.5f}" for v in row)]))
    return "\n".join(lines) + "\n"


def _job(tmp_path: Path, name: str, hyperparameters: dict[str, object], **files: bytes) -> TrainingTree:
    tree = TrainingTree(tmp_path / name)
    content_types = {}
    for key, data in files.items():
        channel, _, content_type = key.partition("__")
        tree.add_file(channel, "part-0", "")
        (tree.base / "input/data" / channel / "part-0").write_bytes(data)
        content_types[channel] = {"csv": "text/csv", "libsvm": "text/libsvm", "": None}.get(
            content_type, content_type.replace("_", "/")
        )
    tree.channels(**content_types)
    tree.hyperparameters(hyperparameters)
    return tree


def _model(tree: TrainingTree) -> bytes:
    """Train the tree's job in this process (the `sagecraft train` process is tested elsewhere)."""
    run_training_job(SageMakerPaths(tree.base))
    assert not list((tree.base / "scratch").glob("stream-*")), "the batches are removed"
    return (tree.model_dir / MODEL).read_bytes()


def _recordio(features: np.ndarray, labels: np.ndarray, sparse: bool = False) -> bytes:
    buffer = io.BytesIO()
    if sparse:
        write_spmatrix_to_sparse_tensor(buffer, scipy.sparse.csr_matrix(features), labels)
    else:
        write_numpy_to_dense_tensor(buffer, features, labels)
    return buffer.getvalue()


def _cases() -> dict[str, tuple[dict[str, object], dict[str, bytes]]]:
    binary = _binary_rows(1, 3000).encode()
    regression = regression_rows(2, 3000).encode()
    header, lines = iris_rows()
    iris = ("\n".join([header, *lines]) + "\n").encode()
    rng = np.random.default_rng(3)
    dense = rng.normal(size=(1500, 6)).astype(np.float32)
    dense_labels = (dense[:, 0] > 0).astype(np.float32)
    libsvm = "".join(
        f"{int(y)}:{1 + i % 3} " + " ".join(f"{j}:{v:.4f}" for j, v in enumerate(row) if j != i % 6) + "\n"
        for i, (y, row) in enumerate(zip(dense_labels, dense, strict=True))
    ).encode()
    table = pa.table({"y": dense_labels, **{f"x{i}": dense[:, i] for i in range(6)}})
    parquet = io.BytesIO()
    pq.write_table(table, parquet, row_group_size=400)
    binary_objective = {"objective": "binary:logistic"}
    return {
        "csv, label first, with validation": (
            binary_objective,
            {"train__csv": binary, "validation__csv": _binary_rows(4, 800).encode()},
        ),
        "gzipped csv, regression": ({}, {"train__": gzip.compress(regression, mtime=0)}),
        "csv with a header, target and text labels": ({"target": "Species"}, {"train__csv": iris}),
        "csv with weights": ({**binary_objective, "csv_weights": 1}, {"train__csv": _weighted(binary)}),
        "libsvm with label:weight and gaps": (binary_objective, {"train__libsvm": libsvm}),
        "recordio dense (the SDK's writer)": (
            binary_objective,
            {"train__application_x-recordio-protobuf": _recordio(dense, dense_labels)},
        ),
        "recordio sparse (the SDK's writer)": (
            binary_objective,
            {
                "train__application_x-recordio-protobuf": _recordio(
                    np.where(dense > 0.5, dense, 0), dense_labels, True
                )
            },
        ),
        "parquet": (
            {**binary_objective, "target": "y"},
            {"train__application_x-parquet": parquet.getvalue()},
        ),
    }


def _weighted(rows: bytes) -> bytes:
    out = []
    for number, line in enumerate(rows.decode().splitlines()):
        label, rest = line.split(",", 1)
        out.append(f"{label},{1 + number % 4},{rest}")
    return ("\n".join(out) + "\n").encode()


CASES = _cases()


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_streamed_channel_trains_the_in_memory_model_to_the_byte(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    hyperparameters, files = CASES[case]
    base = {**XGBOOST, **hyperparameters}
    in_memory = _model(_job(tmp_path, "memory", {**base, "streaming": "false"}, **files))
    assert "streamed:" not in caplog.text
    streamed = _job(tmp_path, "streamed", {**base, "streaming": "true"}, **files)
    assert _model(streamed) == in_memory, case
    assert "streamed:" in caplog.text
    external = _job(tmp_path, "external", {**base, "streaming": "true", "external_memory": "true"}, **files)
    assert _model(external) == in_memory, case
    assert not (external.base / "scratch" / "fit").exists(), "XGBoost's page cache is removed"


def test_many_small_batches_give_the_one_batch_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rows = _binary_rows(5, 4000)
    hyperparameters = {**XGBOOST, "objective": "binary:logistic", "streaming": "true"}
    whole = (train(tmp_path / "whole", hyperparameters, rows) / MODEL).read_bytes()
    monkeypatch.setattr(stream_module, "CHUNK_BYTES", 4096)  # about 100 rows a batch
    chunked = train(tmp_path / "chunked", {**hyperparameters, "external_memory": "true"}, rows)
    assert (chunked / MODEL).read_bytes() == whole
    batches = [int(b) for b in re.findall(r"streamed: 4000 rows, 4 features, (\d+) batches", caplog.text)]
    assert batches[0] == 1 and batches[1] > 30, batches
    assert not list((tmp_path / "chunked").glob("scratch/**/*.npy"))


@pytest.mark.usefixtures("with_report")
def test_the_report_and_the_served_model_of_a_streamed_job(tmp_path: Path) -> None:
    header, lines = iris_rows()
    model_dir = train(
        tmp_path, {**XGBOOST, "target": "Species", "streaming": "true"}, "\n".join([header, *lines]) + "\n"
    )
    assert (tmp_path / "output" / "data" / "report").exists()
    from sagecraft.testing import load

    loaded = load(model_dir)
    assert loaded.manifest.classes == sorted({line.split(",")[-1] for line in lines})


BAD = {  # case -> (hyperparameters, train CSV, what the error names)
    "a text feature": (
        {"target": "y"},
        "y,a,b\n1,2.5,red\n0,1.5,blue\n",
        "feature column 'b'",
    ),
    "a row with no label": ({}, "1,2.5\n,3.5\n", "no label"),
    "rows of different widths": ({}, "1,2.5,3\n0,1.5\n", "not valid CSV"),
    "kfold": ({"kfold": 3}, "1,2.5\n0,1.5\n" * 10, "kfold"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_what_cannot_stream_is_refused_naming_it(tmp_path: Path, case: str) -> None:
    hyperparameters, rows, named = BAD[case]
    with pytest.raises((DataError, HyperparameterError)) as caught:
        train(tmp_path, {**XGBOOST, "streaming": "true", **hyperparameters}, rows)
    assert named in str(caught.value), str(caught.value)
    assert not list((tmp_path / "scratch").glob("stream-*")), "nothing is left on the scratch disk"


def test_text_labels_after_a_batch_of_numeric_ones_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "CHUNK_BYTES", 64)  # the numbers and the text in two batches
    rows = "1,2.5\n0,1.5\n" * 20 + "cat,3.5\n"
    with pytest.raises(
        DataError, match="has the label 'cat' where the channel's first rows have numeric labels"
    ):
        train(tmp_path, {**XGBOOST, "streaming": "true", "task": "classification"}, rows)


def test_a_validation_label_the_train_channel_lacks_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"label 'c' \(row 2\), which the 'train' channel never has"):
        train(tmp_path, {**XGBOOST, "streaming": "true"}, "a,1\nb,2\n" * 5, "a,1\nc,2\n")


def test_streaming_needs_an_algorithm_that_takes_batches(tmp_path: Path) -> None:
    header, lines = iris_rows()
    with pytest.raises(HyperparameterError, match="trains on data in memory only"):
        train(
            tmp_path,
            {"algorithm": "random_forest", "target": "Species", "streaming": "true"},
            "\n".join([header, *lines]) + "\n",
        )


def test_auto_streams_a_channel_larger_than_the_memory_for_data(tmp_path: Path) -> None:
    """Through the `sagecraft train` process, with the job's memory for data set to 1 MiB."""
    rows = _binary_rows(6, 100_000)  # binned, 1.3 MB: over the 1 MiB given
    tree = _job(tmp_path, "auto", {**XGBOOST, "objective": "binary:logistic"}, train__csv=rows.encode())
    small = tree.train(SAGECRAFT_TRAINING_MEMORY_MB="1")
    assert small.returncode == 0, tree.explain()
    assert "would take about" in small.stderr and "streamed:" in small.stderr
    assert "external memory: the binned matrices" in small.stderr  # 1 MiB: the pages on disk too
    assert not (tree.base / "scratch").exists()


def _peak_rss_mib(command: list[str], env: dict[str, str]) -> float:
    """Run `command`, reading its peak resident memory (VmHWM) from /proc as it runs."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    status = Path(f"/proc/{process.pid}/status")
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.append(process.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
        time.sleep(0.05)
    reader.join(5)
    assert process.returncode == 0, "".join(stderr)
    return peak


@pytest.mark.slow
def test_a_200_mb_csv_trains_in_memory_bounded_by_its_batches(tmp_path: Path) -> None:
    """The job's peak memory grows with what XGBoost itself holds per row, not with the text:
    from a 20 MB head of the file to the whole 200 MB, the streamed job's peak grew by 0.6x the
    extra megabytes here, the in-memory path's by 1.6x (the figures are in bench/)."""
    rng = np.random.default_rng(7)
    rows, width = 1_600_000, 12
    features = rng.normal(size=(rows, width)).astype(np.float32)
    table = pa.table(
        {"label": (features[:, 0] > 0).astype(np.int8), **{f"f{i}": features[:, i] for i in range(width)}}
    )
    del features
    peaks, sizes = [], []
    for name, count in (("head", rows // 10), ("whole", rows)):
        tree = TrainingTree(tmp_path / name)
        path = tree.base / "input" / "data" / "train" / "data.csv"
        path.parent.mkdir(parents=True)
        pacsv.write_csv(table.slice(0, count), path, pacsv.WriteOptions(include_header=False))
        sizes.append(path.stat().st_size / 2**20)
        tree.hyperparameters({**XGBOOST, "num_round": 2, "objective": "binary:logistic", "streaming": "true"})
        peaks.append(_peak_rss_mib([*SAGECRAFT, "train"], environment(tree.base)))
        path.unlink()
    assert sizes[1] > 190
    growth = (peaks[1] - peaks[0]) / (sizes[1] - sizes[0])
    assert growth < 0.8, f"peaks {peaks} MiB for {sizes} MiB of CSV: {growth:.2f} MiB per MiB"


MEMORY_CGROUPS = Path("/sys/fs/cgroup/memory")


@pytest.mark.skipif(
    not os.access(MEMORY_CGROUPS, os.W_OK), reason="needs a writable cgroup v1 memory hierarchy"
)
def test_a_job_in_a_memory_cgroup_of_its_own_knows_its_limit(tmp_path: Path) -> None:
    """Without a cgroup namespace the mount shows the root's limit; the process's own cgroup
    (from /proc/self/cgroup) is the one that kills it, so that is the limit the guard reads."""
    group = MEMORY_CGROUPS / f"sagecraft-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(768 << 20))
        code = "from sagecraft.memory import container_memory_bytes as c; print(c())"
        shell = f'echo $$ > {group}/cgroup.procs && exec {sys.executable} -c "{code}"'
        limit = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, check=True).stdout
        assert int(limit) == 768 << 20
    finally:
        group.rmdir()


def test_a_fastfile_channel_streams_as_a_file_channel(tmp_path: Path) -> None:
    """FastFile: SageMaker streams each file from S3 as it is read; sagecraft reads each once,
    from start to end, as a File channel."""
    rows = _binary_rows(8, 2000).encode()
    hyperparameters = {**XGBOOST, "objective": "binary:logistic", "streaming": "true"}
    models = []
    for mode in ("File", "FastFile"):
        tree = _job(tmp_path, mode, hyperparameters, train__csv=rows)
        tree.write_config(
            "inputdataconfig.json", {"train": {"TrainingInputMode": mode, "ContentType": "text/csv"}}
        )
        models.append(_model(tree))
    assert models[0] == models[1]


def test_a_libsvm_index_far_beyond_the_others_is_refused_before_its_matrix_exists(tmp_path: Path) -> None:
    rows = "1 3000000000:1\n0 1:2\n"  # three billion columns: 12 GB a row as float32
    with pytest.raises(DataError, match=r"its highest index is 3,000,000,000.*an index far beyond"):
        train(tmp_path, {**XGBOOST, "streaming": "true"}, rows)


def test_batches_widened_past_the_memory_for_data_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk is small, but a narrow chunk of many rows widened to one row's far index is not."""
    monkeypatch.setattr(stream_module, "CHUNK_BYTES", 4096)
    monkeypatch.setenv("SAGECRAFT_TRAINING_MEMORY_MB", "1")
    # 16 bytes a line: two chunks of 256 narrow rows each, then the wide row in a chunk alone
    rows = "1 0:1.500 1:2.5\n" * 512 + "1 60000:1\n"
    with pytest.raises(DataError, match="once widened to the highest position any row mentions"):
        train(tmp_path, {**XGBOOST, "streaming": "true"}, rows)


def test_more_distinct_text_labels_than_classes_may_be_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every distinct text label becomes a class and is held in the channel's dictionary: a
    column of unique texts (an identifier as the target?) is stopped at the bound."""
    monkeypatch.setattr(stream_module, "MAX_CLASSES", 50)
    rows = "".join(f"id-{i},{i % 7}.5\n" for i in range(200))
    with pytest.raises(DataError, match="more than 50 distinct texts"):
        train(tmp_path, {**XGBOOST, "streaming": "true"}, rows)
    assert not list((tmp_path / "scratch").glob("stream-*"))
