"""Batch transform and large payloads: N records in, N records out, in order, in bounded memory."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from sagecraft.loaded_model import LoadedModel
from sagemaker_tree import IRIS_FEATURES, Server, TrainingTree

BLOCK_ROWS = 10_000


@pytest.fixture(scope="module")
def block() -> tuple[bytes, np.ndarray]:
    """10,000 distinct CSV rows (newline-terminated) and their feature matrix."""
    rows = np.round(np.random.default_rng(7).uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], size=(BLOCK_ROWS, 4)), 2)
    text = "".join(",".join(f"{v:.2f}" for v in row) + "\n" for row in rows)
    return text.encode(), rows


@pytest.fixture(scope="module")
def expected(iris_xgboost: TrainingTree, block: tuple[bytes, np.ndarray]) -> list[str]:
    model = LoadedModel.load(iris_xgboost.model_dir)
    return model.predict(pd.DataFrame(block[1], columns=IRIS_FEATURES)).tolist()


@pytest.fixture(scope="module")
def batch_server(iris_xgboost: TrainingTree) -> Iterator[Server]:
    server = Server(
        iris_xgboost.base,
        SAGEMAKER_BATCH="true",
        SAGEMAKER_MAX_PAYLOAD_IN_MB="100",
        SAGEMAKER_MODEL_SERVER_WORKERS="3",
    ).wait_ready()
    yield server
    server.stop()


def test_execution_parameters(batch_server: Server) -> None:
    answer = batch_server.session.get(f"{batch_server.url}/execution-parameters").json()
    assert answer == {"MaxConcurrentTransforms": 3, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 100}


def test_execution_parameters_follow_the_job_settings(iris_forest: TrainingTree) -> None:
    server = Server(
        iris_forest.base, SAGEMAKER_BATCH_STRATEGY="SingleRecord", SAGEMAKER_MAX_PAYLOAD_IN_MB="20"
    ).wait_ready()
    try:
        answer = server.session.get(f"{server.url}/execution-parameters").json()
        assert answer["BatchStrategy"] == "SINGLERECORD"
        assert answer["MaxPayloadInMB"] == 20
    finally:
        server.stop()


@pytest.mark.slow
def test_50_mb_csv_mini_batch_gives_one_line_per_record_in_order(
    batch_server: Server, block: tuple[bytes, np.ndarray], expected: list[str]
) -> None:
    repeats = 50 * 1024 * 1024 // len(block[0]) + 1
    body = block[0] * repeats
    assert len(body) > 50 * 1024 * 1024
    before = batch_server.rss_bytes()
    response = batch_server.invoke(body[:-1])  # SageMaker may leave off the last newline
    assert response.status_code == 200, response.text[:500]
    lines = response.content.split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == BLOCK_ROWS * repeats
    assert [line.decode() for line in lines[:BLOCK_ROWS]] == expected
    assert lines[-1 - BLOCK_ROWS : -1] == lines[:BLOCK_ROWS]
    peak = batch_server.peak_rss_bytes()
    print(f"50 MB batch: server RSS {before >> 20} MiB before, peak {peak >> 20} MiB")


def test_jsonlines_batch_keeps_every_record_in_place(
    batch_server: Server, block: tuple[bytes, np.ndarray], expected: list[str]
) -> None:
    body = "\n".join(f"[{','.join(map(str, row))}]" for row in block[1][:500])
    response = batch_server.invoke(body, "application/jsonlines")
    assert response.status_code == 200
    assert [line.strip('"') for line in response.text.splitlines()] == expected[:500]
    assert response.text.endswith("\n")


@pytest.mark.slow
def test_bad_record_in_a_large_batch_is_named_with_its_row(
    batch_server: Server, block: tuple[bytes, np.ndarray]
) -> None:
    rows = block[0].split(b"\n")[:-1] * 120  # 1.2 million rows, several slices
    bad = 1_000_003
    rows[bad - 1] = b"5.0,oops,1.5,0.2"
    response = batch_server.invoke(b"\n".join(rows))
    assert response.status_code == 400
    assert f"row {bad}, column 2 (sepal_width): 'oops' is not a number" in response.json()["message"]


def test_record_error_markers_keep_the_batch_aligned(
    iris_xgboost: TrainingTree, block: tuple[bytes, np.ndarray], expected: list[str]
) -> None:
    server = Server(iris_xgboost.base, SAGECRAFT_RECORD_ERRORS="true").wait_ready()
    try:
        rows = block[0].split(b"\n")[:6]
        rows[2] = b"1,2,3"
        rows[4] = b""
        response = server.invoke(b"\n".join(rows))
        assert response.status_code == 200, response.text
        lines = response.text.split("\n")
        assert len(lines) == 7 and lines[-1] == ""
        assert lines[0:2] == expected[0:2] and lines[3] == expected[3] and lines[5] == expected[5]
        assert lines[2].startswith('"error: row 3 has 3 values')
        assert lines[4] == '"error: row 5 is empty"'
        as_jsonl = server.invoke(b"\n".join(rows), accept="application/jsonlines")
        assert as_jsonl.text.split("\n")[2].startswith('{"error":"row 3 has 3 values')
    finally:
        server.stop()


def test_empty_line_inside_a_batch_is_an_error_without_markers(batch_server: Server) -> None:
    response = batch_server.invoke("5,3,1,0.2\n\n6,3,5,2\n")
    assert response.status_code == 400
    assert response.json()["message"] == "row 2 is empty"


@pytest.mark.slow
def test_large_async_payload_is_spooled_and_sliced_in_bounded_memory(
    iris_xgboost: TrainingTree, block: tuple[bytes, np.ndarray], expected: list[str]
) -> None:
    server = Server(iris_xgboost.base, SAGECRAFT_MAX_PAYLOAD_MB="300").wait_ready()
    try:
        assert server.invoke(block[0][:100]).status_code == 200  # warm: libraries, threads
        before = server.rss_bytes()
        repeats = 200 * 1024 * 1024 // len(block[0])
        body = io.BytesIO(block[0] * repeats)
        size = body.getbuffer().nbytes
        response = server.invoke(body)
        assert response.status_code == 200
        assert response.content.count(b"\n") == BLOCK_ROWS * repeats
        assert response.text[: len(expected[0])] == expected[0]
        growth = server.peak_rss_bytes() - before
        print(f"{size >> 20} MiB payload: RSS {before >> 20} MiB before, grew {growth >> 20} MiB")
        assert growth < size / 2, f"memory grew {growth >> 20} MiB for a {size >> 20} MiB body"
    finally:
        server.stop()
