"""Request bodies that are small as sent and large as decoded: Parquet files that declare millions
of rows or thousands of columns, libsvm lines of labels only, gzip bombs, many rows in few bytes,
and numbers that float64 holds but the models' float32 does not. Each is refused by what it expands
to (or answered off the event loop), the server keeps its memory and keeps answering /ping within
SageMaker's 2 s, and a good request right after gets its right answer."""

from __future__ import annotations

import concurrent.futures
import gzip
import io
import json
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from sagemaker_tree import Server, TrainingTree

pytestmark = pytest.mark.hardening

SETOSA = "5.0,3.4,1.5,0.2"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
PING_DEADLINE_S = 2.0  # SageMaker's: /ping answers within 2 s


def _memory_bytes(server: Server) -> int:
    return sum(
        server.rss_bytes() if pid == server.process.pid else _rss(pid)
        for pid in [server.process.pid, *server.worker_pids()]
    )


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class _Pinger:
    """GET /ping every 20 ms while a test runs; `worst` is the slowest answer (a timeout counts
    as the deadline passed)."""

    def __init__(self, server: Server) -> None:
        self.server, self.worst, self.failures = server, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    ok = session.get(f"{self.server.url}/ping", timeout=PING_DEADLINE_S).status_code == 200
                except requests.RequestException:
                    ok = False
                self.worst = max(self.worst, time.monotonic() - start)
                self.failures += not ok
                time.sleep(0.02)

    def __enter__(self) -> _Pinger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        assert self.failures == 0 and self.worst < PING_DEADLINE_S, (self.failures, self.worst)


@pytest.fixture(scope="module")
def server(iris_forest: TrainingTree) -> Iterator[Server]:
    server = Server(iris_forest.base, SAGEMAKER_MODEL_SERVER_WORKERS="1").wait_ready()
    yield server
    server.stop()


def _still_serving(server: Server) -> None:
    answer = server.invoke(SETOSA)
    assert (answer.status_code, answer.text) == (200, "setosa\n")


def _error(response: requests.Response, status: int, kind: str, phrase: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()
    assert error["type"] == kind and phrase in error["message"], error


def _parquet(columns: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer, compression="zstd")
    return buffer.getvalue()


# --- Parquet -----------------------------------------------------------------------------------


def test_a_parquet_body_declaring_ten_million_rows_is_refused_from_its_footer(server: Server) -> None:
    body = _parquet({name: np.zeros(10_000_000) for name in FEATURES})
    assert len(body) < 1024 * 1024  # a constant compresses to next to nothing
    before = _memory_bytes(server)
    with _Pinger(server):
        response = server.invoke(body, "application/x-parquet")
    _error(response, 413, "DecodedTooLargeError", "decodes to 10,000,000 rows of 4 features")
    assert "SAGECRAFT_MAX_DECODED_MB" in response.json()["message"]
    # Refused before decoding: the 320 MB of float64 never existed.
    assert _memory_bytes(server) - before < 100 * 2**20
    _still_serving(server)


def test_a_parquet_body_of_twenty_thousand_columns_decodes_only_the_models_four(
    iris_forest: TrainingTree,
) -> None:
    # The footer alone takes 6 MB for 20,000 columns: this endpoint allows 32 MB bodies.
    server = Server(
        iris_forest.base, SAGEMAKER_MODEL_SERVER_WORKERS="1", SAGECRAFT_MAX_PAYLOAD_MB="32"
    ).wait_ready()
    try:
        _twenty_thousand_columns(server)
    finally:
        server.stop()


def _twenty_thousand_columns(server: Server) -> None:
    columns = {f"extra_{i}": np.zeros(100) for i in range(20_000)}
    columns.update(
        {name: np.full(100, value) for name, value in zip(FEATURES, [5.0, 3.4, 1.5, 0.2], strict=True)}
    )
    named = _parquet(columns)
    unnamed = _parquet({f"c{i}": np.zeros(100) for i in range(20_000)})
    before = _memory_bytes(server)
    response = server.invoke(named, "application/x-parquet")
    assert response.status_code == 200 and response.text == "setosa\n" * 100, response.text[:200]
    _error(
        server.invoke(unnamed, "application/x-parquet"),
        400,
        "BadRequestError",
        "the Parquet file has 20000 columns, the model expects 4",
    )
    # What the bodies used is given back (it was 1.7 GB per worker before).
    assert _memory_bytes(server) - before < 200 * 2**20
    _still_serving(server)


# --- libsvm -------------------------------------------------------------------------------------


def test_libsvm_lines_of_labels_only_are_bounded_by_the_matrix_they_make(iris_forest: TrainingTree) -> None:
    server = Server(
        iris_forest.base, SAGEMAKER_MODEL_SERVER_WORKERS="1", SAGECRAFT_MAX_DECODED_MB="1"
    ).wait_ready()
    try:
        # 2 bytes a line, 32 bytes of float64 a row: 200,000 lines weigh 400 KB, decode to 6.4 MB.
        _error(
            server.invoke(b"1\n" * 200_000, "text/libsvm"),
            413,
            "DecodedTooLargeError",
            "decodes to 200,000 rows of 4 features",
        )
        assert server.invoke(b"1 0:5.0 1:3.4 2:1.5 3:0.2\n" * 100, "text/libsvm").text == "setosa\n" * 100
        _still_serving(server)
    finally:
        server.stop()


# --- Content-Encoding ---------------------------------------------------------------------------


def test_a_small_gzip_body_that_inflates_to_megabytes_is_answered_off_the_event_loop(server: Server) -> None:
    rows = 360_000
    body = gzip.compress((SETOSA + "\n").encode() * rows, 9)
    assert len(body) < 16 * 1024  # it would have taken the inline path by its size
    with _Pinger(server):
        response = server.invoke(body, "text/csv", headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.text == "setosa\n" * rows


def test_a_gzip_bomb_is_refused_by_its_inflated_size_without_holding_the_event_loop(server: Server) -> None:
    bomb = gzip.compress(b"0" * (1 << 30), 9)  # 1 GiB of zeros in about 1 MB
    before = _memory_bytes(server)
    with _Pinger(server):
        response = server.invoke(bomb, "text/csv", headers={"Content-Encoding": "gzip"})
    _error(response, 413, "PayloadTooLargeError", "expands to more than the limit of 6291456 bytes")
    assert _memory_bytes(server) - before < 100 * 2**20
    _still_serving(server)


@pytest.mark.parametrize(
    ("coding", "body", "status", "phrase"),
    [
        ("deflate", zlib.compress(SETOSA.encode()), 200, "setosa\n"),
        ("deflate", zlib.compress(SETOSA.encode())[2:-4], 200, "setosa\n"),  # raw deflate
        ("GZIP", gzip.compress(SETOSA.encode(), mtime=0), 200, "setosa\n"),
        ("gzip", gzip.compress(SETOSA.encode(), mtime=0)[:-12], 400, "ends before its compressed data does"),
        ("gzip", b"not gzip at all", 400, "is not valid gzip data"),
        ("br", b"\x0b\x02\x80" + SETOSA.encode(), 415, "Content-Encoding 'br' is not supported"),
        (
            "gzip, gzip",
            gzip.compress(gzip.compress(SETOSA.encode(), mtime=0), mtime=0),
            415,
            "is not supported",
        ),
    ],
)
def test_content_encodings_are_inflated_or_refused_by_name(
    server: Server, coding: str, body: bytes, status: int, phrase: str
) -> None:
    response = server.invoke(body, "text/csv", headers={"Content-Encoding": coding})
    assert response.status_code == status, response.text
    assert phrase in response.text
    _still_serving(server)


# --- many rows in few bytes ---------------------------------------------------------------------


def test_many_rows_in_small_bodies_from_many_clients_leave_ping_answering(server: Server) -> None:
    body = "\n".join([SETOSA] * 1000)  # 16 KB: small by its size, large by its rows
    assert len(body) <= 16 * 1024

    def send(_: int) -> tuple[int, str]:
        with requests.Session() as session:
            response = session.post(
                f"{server.url}/invocations", data=body, headers={"Content-Type": "text/csv"}, timeout=120
            )
            return response.status_code, response.text

    with _Pinger(server), concurrent.futures.ThreadPoolExecutor(48) as pool:
        answers = list(pool.map(send, range(300)))
    # Each answer is whole, or a 503 that says when to retry: the worker's queue stays bounded.
    assert {status for status, _ in answers} <= {200, 503}, {s for s, _ in answers}
    assert all(text == "setosa\n" * 1000 for status, text in answers if status == 200)
    _still_serving(server)


# --- numbers beyond float32 ---------------------------------------------------------------------


def _npy(rows: list[list[float]]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array(rows))
    return buffer.getvalue()


BEYOND = [5.0, 1e39, 1.5, 0.2]
BODIES = {
    "text/csv": "5.0,1e39,1.5,0.2",
    "text/csv (missing cell)": "5.0,1e39,,0.2",
    "text/csv (row 71)": "\n".join([SETOSA] * 70 + ["5.0,-1e39,1.5,0.2"]),
    "application/json": json.dumps({"instances": [BEYOND]}),
    "application/json (records)": json.dumps({"instances": [dict(zip(FEATURES, BEYOND, strict=True))]}),
    "application/jsonlines": json.dumps(BEYOND),
    "application/x-npy": _npy([BEYOND]),
    "text/libsvm": "0:5.0 1:1e39 2:1.5 3:0.2",
    "application/x-parquet": _parquet({name: [value] for name, value in zip(FEATURES, BEYOND, strict=True)}),
}


@pytest.mark.parametrize("output", ["predicted_label", "probabilities", "raw_margin", "leaves"])
@pytest.mark.parametrize("kind", list(BODIES))
def test_values_beyond_float32_get_a_400_naming_row_and_column(
    iris_server: Server, kind: str, output: str
) -> None:
    content_type = kind.split(" ")[0]
    response = iris_server.invoke(
        BODIES[kind], content_type, headers={"X-Amzn-SageMaker-Custom-Attributes": f"output={output}"}
    )
    row = 71 if "row 71" in kind else 1
    _error(response, 400, "BadRequestError", f"row {row}, column 2 (sepal_width)")
    assert "beyond the largest value" in response.json()["message"]
    _still_serving(iris_server)


def test_record_errors_isolate_a_value_beyond_float32_to_its_record(iris_xgboost: TrainingTree) -> None:
    server = Server(iris_xgboost.base, SAGECRAFT_RECORD_ERRORS="true").wait_ready()
    try:
        lines = server.invoke(f"{SETOSA}\n5.0,1e39,1.5,0.2\n{SETOSA}\n").text.splitlines()
        assert lines[0] == lines[2] == "setosa", lines
        assert "row 2, column 2 (sepal_width)" in lines[1] and "beyond the largest value" in lines[1]
    finally:
        server.stop()
