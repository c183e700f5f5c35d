"""Training channels that expand: libsvm indices in the millions, gzip files of millions of tiny
rows, gzipped Parquet and JSON Lines; and channel entries that are not regular files. A job whose
data would not fit in its memory fails with output/failure saying so (size, limit, what to do)
instead of growing until the kernel kills it; entries it skips are named in the log."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sagemaker_tree import TrainingTree, environment

pytestmark = pytest.mark.hardening

# The data budget these jobs get (SAGECRAFT_TRAINING_MEMORY_MB): far below what the inputs expand to.
BUDGET_MB = "64"


def _train_measured(tree: TrainingTree, **env: str) -> tuple[int, float]:
    """`sagecraft train`'s exit status and the peak resident memory (MiB) the kernel accounted to
    that process (wait4's rusage)."""
    process = subprocess.Popen(
        [*tree.command, "train"],
        env=environment(tree.base, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # A job that hangs is killed (and so fails the test) after what TrainingTree.train allows.
    watchdog = threading.Timer(180, process.kill)
    watchdog.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        watchdog.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024


def _job(tmp_path: Path, content_type: str | None = None) -> TrainingTree:
    tree = TrainingTree(tmp_path)
    if content_type:
        tree.channels(train=content_type)
    # In memory: these are the in-memory readers' bounds (streamed channels are bounded by
    # their chunks and the scratch disk: test_streaming.py).
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 2, "streaming": "false"})
    return tree


def _fails_for_memory(tree: TrainingTree, *phrases: str) -> float:
    """Asserts the job failed for its memory budget; returns its peak resident memory in MiB."""
    returncode, peak = _train_measured(tree, SAGECRAFT_TRAINING_MEMORY_MB=BUDGET_MB)
    assert returncode == 1
    assert tree.failure is not None
    message = tree.failure.split("\n")[0]
    for phrase in ("over the 64 MiB", "SAGECRAFT_TRAINING_MEMORY_MB", *phrases):
        assert phrase in message, message
    assert "Error type: DataTooLargeError" in tree.failure
    assert not any(tree.model_dir.iterdir())
    return peak


def test_a_libsvm_index_in_the_millions_is_refused_before_the_matrix_is_made(tmp_path: Path) -> None:
    tree = _job(tmp_path, "text/libsvm")
    lines = [f"{i % 2} 0:{i} 1:{i * 2}" for i in range(2000)] + ["1 3000000:1.0"]
    tree.add_file("train", "train.libsvm", "\n".join(lines) + "\n")
    _fails_for_memory(tree, "3,000,001 features", "train.libsvm")


def test_a_gzip_of_millions_of_tiny_rows_is_stopped_while_it_is_read(tmp_path: Path) -> None:
    tree = _job(tmp_path, "text/csv")
    # 60 million rows of "1,0": 240 MB of text in about 250 KB, 480 MB as a float32 table, and
    # (measured on a third of it: 2,145 MiB) over 6 GB at its peak unbounded.
    tree.add_file("train", "train.csv.gz", "", gzipped=False)
    (tree.base / "input/data/train/train.csv.gz").write_bytes(gzip.compress(b"1,0\n" * 60_000_000, 6))
    peak = _fails_for_memory(tree, "train.csv.gz")
    # Stopped while it was read: about 600 MiB measured (a trivial job peaks at 374: the
    # interpreter, pyarrow and xgboost), with room here for a loaded machine's read-ahead.
    assert peak < 2000, peak


@pytest.mark.parametrize("kind", ["parquet", "jsonlines"])
def test_gzipped_parquet_and_json_lines_are_bounded_by_what_they_inflate_to(
    tmp_path: Path, kind: str
) -> None:
    tree = _job(tmp_path, "application/x-parquet" if kind == "parquet" else "application/jsonlines")
    rows = 6_000_000  # about 100 MB inflated
    if kind == "parquet":
        buffer = io.BytesIO()
        # Stored uncompressed, so that gzip makes the file small and inflating it large.
        pq.write_table(pa.table({"y": np.zeros(rows), "x": np.zeros(rows)}), buffer, compression="none")
        data = buffer.getvalue()
    else:
        data = b'{"y": 0, "x": 0}\n' * rows
    (tree.base / "input/data/train").mkdir(parents=True, exist_ok=True)
    (tree.base / f"input/data/train/train.{kind}.gz").write_bytes(gzip.compress(data, 1))
    _fails_for_memory(tree, f"train.{kind}.gz")


def test_a_parquet_file_is_bounded_by_the_rows_its_footer_declares(tmp_path: Path) -> None:
    tree = _job(tmp_path, "application/x-parquet")
    (tree.base / "input/data/train").mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({"y": np.zeros(10_000_000), "x": np.zeros(10_000_000)}),
        tree.base / "input/data/train/train.parquet",
        compression="zstd",
    )
    _fails_for_memory(tree, "train.parquet", "10,000,000 rows")


def test_data_within_the_budget_still_trains(tmp_path: Path) -> None:
    tree = _job(tmp_path, "text/csv")
    rng = np.random.default_rng(0)
    rows = [f"{int(a > 0)},{a:.4f},{b:.4f}" for a, b in rng.normal(size=(2000, 2))]
    tree.add_file("train", "train.csv.gz", "\n".join(rows) + "\n", gzipped=True)
    assert tree.train(SAGECRAFT_TRAINING_MEMORY_MB=BUDGET_MB).returncode == 0, tree.explain()


# --- entries that are not regular files --------------------------------------------------------


def test_channel_entries_that_are_not_regular_files_are_named_in_the_log_and_skipped(tmp_path: Path) -> None:
    tree = _job(tmp_path, "text/csv")
    tree.add_file("train", "good.csv", "1,0.5\n0,0.1\n1,0.9\n0,0.2\n")
    channel = tree.base / "input" / "data" / "train"
    os.mkfifo(channel / "pipe.csv")
    (channel / "dangling.csv").symlink_to(channel / "nowhere.csv")
    (channel / "self.csv").symlink_to(channel / "self.csv")
    (channel / "nested").mkdir()
    (channel / "nested" / "loop").symlink_to(channel, target_is_directory=True)
    result = subprocess.run(
        [*tree.command, "train"],
        env=environment(tree.base),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    log = result.stderr
    assert "pipe.csv is a FIFO, not a regular file: skipped" in log, log
    assert "dangling.csv is a link to nothing: skipped" in log, log
    assert "self.csv is a link that leads back to itself: skipped" in log, log
    assert "loop leads back to a folder already read (a link loop): skipped" in log, log
    assert "channel 'train': 4 rows" in log, log


def test_a_channel_of_only_special_files_fails_naming_them(tmp_path: Path) -> None:
    tree = _job(tmp_path, "text/csv")
    channel = tree.base / "input" / "data" / "train"
    channel.mkdir(parents=True, exist_ok=True)
    os.mkfifo(channel / "pipe.csv")
    assert tree.train().returncode == 1
    assert tree.failure is not None and "holds no data files" in tree.failure, tree.failure
    assert json.dumps(str(channel / "pipe.csv"))[1:-1] in tree.explain()
