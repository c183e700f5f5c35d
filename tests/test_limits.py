"""Every limit in the README's table, enforced: body and header sizes, rows per request, the request
timeout (slow bodies and slow predictions), concurrent requests per worker (503 + Retry-After rather
than a queue), and the model load timeout. Each limit's answer is the error shape, and the server
keeps serving afterwards."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sagemaker_tree import (
    Server,
    TrainingTree,
    install_slow_plugin,
    iris_tree,
    place_model,
)

pytestmark = pytest.mark.hardening

SETOSA = "5.0,3.4,1.5,0.2"
REQUEST_TIMEOUT_S = 2
MAX_CONCURRENT = 2
MAX_ROWS = 1000


@pytest.fixture(scope="module")
def limited(iris_forest: TrainingTree) -> Iterator[Server]:
    server = Server(
        iris_forest.base,
        SAGEMAKER_MODEL_SERVER_WORKERS="1",
        SAGECRAFT_REQUEST_TIMEOUT=str(REQUEST_TIMEOUT_S),
        SAGECRAFT_MAX_CONCURRENT_REQUESTS=str(MAX_CONCURRENT),
        SAGECRAFT_MAX_ROWS=str(MAX_ROWS),
    ).wait_ready()
    yield server
    server.stop()


def _still_serving(server: Server) -> None:
    answer = server.invoke(SETOSA)
    assert answer.status_code == 200, answer.text
    assert answer.text == "setosa\n"


def _error(response: requests.Response, status: int, phrase: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()
    assert error["code"] == status
    assert phrase in error["message"], error
    return error


def _stalled_request(server: Server, declared: int, sent: bytes) -> socket.socket:
    """A request whose headers say `declared` bytes of body and which then sends only `sent`."""
    client = socket.create_connection(("127.0.0.1", server.port))
    client.sendall(
        f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        f"Content-Length: {declared}\r\n\r\n".encode()
        + sent
    )
    return client


def _read_response(client: socket.socket, timeout: float) -> bytes:
    client.settimeout(timeout)
    data = b""
    try:
        while chunk := client.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and data.split(b"\r\n\r\n", 1)[1].endswith(b"}"):
                break
    except TimeoutError:
        pass
    return data


def test_a_body_that_stops_arriving_gets_408_within_the_timeout(limited: Server) -> None:
    started = time.monotonic()
    client = _stalled_request(limited, 1000, SETOSA.encode())
    answer = _read_response(client, REQUEST_TIMEOUT_S + 10)
    client.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"type":"RequestTimeoutError"' in answer
    assert b"did not arrive within 2 s" in answer
    assert time.monotonic() - started < REQUEST_TIMEOUT_S + 5
    _still_serving(limited)


def test_a_slowly_trickled_body_gets_408(limited: Server) -> None:
    """Slowloris: a byte every 0.2 s never completes the body in time."""
    client = _stalled_request(limited, 200, b"")
    deadline = time.monotonic() + REQUEST_TIMEOUT_S + 3
    answered = b""
    client.settimeout(0.2)
    while time.monotonic() < deadline and not answered:
        try:
            client.sendall(b"1")
            answered = client.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    client.close()
    assert answered.startswith(b"HTTP/1.1 408"), answered
    _still_serving(limited)


def test_requests_over_the_concurrency_limit_get_503_with_retry_after(limited: Server) -> None:
    holders = [_stalled_request(limited, 1000, b"5.0,") for _ in range(MAX_CONCURRENT)]
    time.sleep(0.5)  # both reached the handler and hold their slots
    try:
        started = time.monotonic()
        refused = limited.invoke(SETOSA)
        assert time.monotonic() - started < 1, "the refusal must be immediate, not queued"
        _error(refused, 503, "SAGECRAFT_MAX_CONCURRENT_REQUESTS")
        assert refused.headers["Retry-After"] == "1"
        # /ping is not an invocation: it stays healthy while the worker is full.
        assert limited.session.get(f"{limited.url}/ping").status_code == 200
    finally:
        for holder in holders:
            assert _read_response(holder, REQUEST_TIMEOUT_S + 10).startswith(b"HTTP/1.1 408")
            holder.close()
    _still_serving(limited)


def test_rows_over_the_limit_get_413(limited: Server) -> None:
    assert limited.invoke("\n".join([SETOSA] * MAX_ROWS)).status_code == 200
    _error(limited.invoke("\n".join([SETOSA] * (MAX_ROWS + 1))), 413, "more than 1000 rows")
    document = json.dumps({"instances": [[5.0, 3.4, 1.5, 0.2]] * (MAX_ROWS + 1)})
    _error(limited.invoke(document, "application/json"), 413, "SAGECRAFT_MAX_ROWS")
    # A large body is read a slice at a time: the count runs across slices.
    big = "\n".join([SETOSA] * 200_000)
    assert len(big) > 2 * 1024 * 1024
    _error(limited.invoke(big), 413, "more than 1000 rows")
    _still_serving(limited)


def test_sagemaker_headers_over_1024_characters_get_400(limited: Server) -> None:
    for header in ("X-Amzn-SageMaker-Custom-Attributes", "Accept", "Content-Type"):
        value = "text/csv;x=" + "a" * 1020 if header != "X-Amzn-SageMaker-Custom-Attributes" else "a" * 1025
        response = limited.session.post(
            f"{limited.url}/invocations", data=SETOSA, headers={"Content-Type": "text/csv", header: value}
        )
        _error(response, 400, f"the {header} header has")
    ok = limited.session.post(
        f"{limited.url}/invocations",
        data=SETOSA,
        headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Custom-Attributes": "a" * 1024},
    )
    assert ok.status_code == 200


def test_a_header_line_over_aiohttps_limit_is_refused_by_the_parser(limited: Server) -> None:
    """Over 8190 bytes in one header line, aiohttp's HTTP parser refuses the request before it
    reaches the application: a plain-text 400 and the connection closed (documented)."""
    response = requests.post(
        f"{limited.url}/invocations",
        data=SETOSA,
        headers={"Content-Type": "text/csv", "X-Padding": "x" * 9000},
    )
    assert response.status_code == 400
    assert "Traceback" not in response.text
    assert len(response.content) < 1024
    _still_serving(limited)


def test_body_over_the_payload_limit_gets_413_before_it_is_read(limited: Server) -> None:
    client = _stalled_request(limited, 7 * 1024 * 1024, b"")
    answer = _read_response(client, 10)
    client.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"over the limit of 6291456" in answer
    _still_serving(limited)


@pytest.fixture(scope="module")
def slow_tree(tmp_path_factory: pytest.TempPathFactory) -> TrainingTree:
    site = install_slow_plugin(tmp_path_factory.mktemp("slow-site"))
    tree = iris_tree(
        tmp_path_factory.mktemp("slow"),
        {"algorithm": "slow", "target": "Species", "load_delay": 3, "predict_delay": 4},
    )
    tree.pythonpath = site
    assert tree.train().returncode == 0, tree.explain()
    return tree


@pytest.mark.slow
def test_a_prediction_over_the_timeout_gets_504_and_ping_stays_healthy(
    slow_tree: TrainingTree,
) -> None:
    server = Server(
        slow_tree.base,
        pythonpath=slow_tree.pythonpath,
        SAGEMAKER_MODEL_SERVER_WORKERS="1",
        SAGECRAFT_REQUEST_TIMEOUT="1",
    ).wait_ready()
    try:
        rows = "\n".join([SETOSA] * 2000)  # over 16 KiB: predicted in a thread
        outcome: dict[str, requests.Response] = {}
        caller = threading.Thread(target=lambda: outcome.update(r=server.invoke(rows)))
        caller.start()
        time.sleep(0.3)
        assert server.session.get(f"{server.url}/ping", timeout=2).status_code == 200
        caller.join()
        _error(outcome["r"], 504, "did not finish within 1 s")
        assert server.invoke(SETOSA).status_code == 200
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_a_model_load_over_the_timeout_gets_504_and_others_still_load(
    slow_tree: TrainingTree, iris_forest: TrainingTree, tmp_path: Path
) -> None:
    slow_url = place_model(tmp_path, "slow", slow_tree.model_dir)
    forest_url = place_model(tmp_path, "forest", iris_forest.model_dir)
    # 2 s: the slow plugin takes 3 s; the forest's first load imports skops, about 0.7 s idle.
    server = Server(
        tmp_path,
        pythonpath=slow_tree.pythonpath,
        SAGEMAKER_MULTI_MODEL="true",
        SAGECRAFT_MODEL_LOAD_TIMEOUT="2",
    ).wait_ready()
    try:
        load = server.session.post(f"{server.url}/models", json={"model_name": "slow", "url": slow_url})
        _error(load, 504, "longer than 2 s")
        assert (
            server.session.post(
                f"{server.url}/models", json={"model_name": "forest", "url": forest_url}
            ).status_code
            == 200
        )
        assert [m["modelName"] for m in server.session.get(f"{server.url}/models").json()["models"]] == [
            "forest"
        ]
        invoked = server.session.post(
            f"{server.url}/models/forest/invoke", data=SETOSA, headers={"Content-Type": "text/csv"}
        )
        assert invoked.text == "setosa\n"
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_a_single_model_load_over_the_timeout_stops_serve(slow_tree: TrainingTree) -> None:
    server = Server(slow_tree.base, pythonpath=slow_tree.pythonpath, SAGECRAFT_MODEL_LOAD_TIMEOUT="1")
    try:
        assert server.process.wait(60) == 1
        assert "took longer than 1 s; raise SAGECRAFT_MODEL_LOAD_TIMEOUT" in server.log()
    finally:
        server.stop()
