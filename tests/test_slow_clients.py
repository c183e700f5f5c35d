"""Slow and odd clients, over raw sockets: connections held open without a request, half-sent
headers, a process out of file descriptors, a SIGTERM while a body is still arriving, half-closed
requests, `Expect: 100-continue` for a body the server will refuse, and clients that go away."""

from __future__ import annotations

import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagemaker_tree import SAGECRAFT, Server, TrainingTree

pytestmark = pytest.mark.hardening

SETOSA = b"5.0,3.4,1.5,0.2"


def _connect(server: Server, timeout: float = 10) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", server.port))
    client.settimeout(timeout)
    return client


def _request_head(length: int, *extra: str) -> bytes:
    lines = [
        "POST /invocations HTTP/1.1",
        "Host: x",
        "Content-Type: text/csv",
        f"Content-Length: {length}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_until_closed(client: socket.socket) -> bytes:
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    return data


def _read_answer(client: socket.socket) -> bytes:
    """One answer, head and body (by its Content-Length), without waiting for the connection to
    close: a server may linger to read a body it refused before it closes."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += client.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
    )
    while len(body) < length:
        body += client.recv(65536)
    return head + b"\r\n\r\n" + body


def _still_serving(server: Server) -> None:
    answer = server.invoke(SETOSA)
    assert (answer.status_code, answer.text) == (200, "setosa\n")


@pytest.fixture
def server(tmp_path: Path, iris_forest: TrainingTree) -> Iterator[Server]:
    shutil.copytree(iris_forest.model_dir, tmp_path / "model")
    server = Server(
        tmp_path,
        SAGEMAKER_MODEL_SERVER_WORKERS="1",
        SAGECRAFT_KEEPALIVE_TIMEOUT="1",
        SAGECRAFT_MAX_PAYLOAD_MB="1",
    ).wait_ready()
    yield server
    server.stop()


def test_idle_connections_and_half_sent_headers_are_closed_by_the_keepalive_timeout(server: Server) -> None:
    idle = [_connect(server) for _ in range(10)]
    partial = [_connect(server) for _ in range(10)]
    for client in partial:
        client.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    started = time.monotonic()
    for client in idle + partial:
        assert _read_until_closed(client) == b""  # closed by the server, without an answer
        client.close()
    assert time.monotonic() - started < 9  # (the client's own timeout is 10 s)
    _still_serving(server)


def test_a_server_out_of_descriptors_keeps_serving_without_flooding_its_log(
    tmp_path: Path, iris_forest: TrainingTree
) -> None:
    shutil.copytree(iris_forest.model_dir, tmp_path / "model")
    server = Server(
        tmp_path,
        command=["prlimit", "--nofile=96:96", *SAGECRAFT],
        SAGEMAKER_MODEL_SERVER_WORKERS="1",
        SAGECRAFT_KEEPALIVE_TIMEOUT="3",
    ).wait_ready()
    try:
        held = []
        for _ in range(150):  # more than the server can hold: its accepts fail with EMFILE
            held.append(_connect(server))
        time.sleep(2)
        log = server.log()
        assert "cannot accept connections: Too many open files" in log, log
        assert log.count("cannot accept connections") <= 2, log  # once a minute, not per attempt
        for client in held:
            client.close()
        time.sleep(0.5)
        _still_serving(server)
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_a_body_still_arriving_at_sigterm_is_answered_within_the_drain(server: Server) -> None:
    client = _connect(server)
    client.sendall(_request_head(2 * len(SETOSA) + 2) + SETOSA + b"\n")
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    client.sendall(SETOSA + b"\n")  # the rest of the body, after the SIGTERM
    head = client.recv(65536)
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    assert head.endswith(b"setosa\nsetosa\n"), head
    client.close()
    assert server.process.wait(30) == 0
    assert "draining 1 request(s) in progress" in server.log()


def test_a_half_closed_request_still_gets_its_answer(server: Server) -> None:
    client = _connect(server)
    client.sendall(_request_head(len(SETOSA)) + SETOSA)
    client.shutdown(socket.SHUT_WR)  # "no more from me": the answer must still come
    answer = _read_until_closed(client)
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"setosa\n"), answer
    _still_serving(server)


def test_expect_continue_is_refused_with_413_before_the_body_is_sent(server: Server) -> None:
    client = _connect(server)
    client.sendall(_request_head(5_000_000, "Expect: 100-continue"))
    answer = _read_answer(client)
    assert b"100 Continue" not in answer, answer
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"over the limit of 1048576" in answer
    # Headers it cannot serve are refused before the body too.
    client = _connect(server)
    client.sendall(_request_head(len(SETOSA), "Expect: 100-continue").replace(b"text/csv", b"image/png"))
    assert _read_answer(client).startswith(b"HTTP/1.1 415"), answer
    _still_serving(server)


def test_expect_continue_for_a_body_it_reads_says_continue(server: Server) -> None:
    client = _connect(server)
    client.sendall(_request_head(len(SETOSA), "Expect: 100-continue", "Connection: close"))
    assert client.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.sendall(SETOSA)
    answer = _read_until_closed(client)
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"setosa\n"), answer


def test_a_client_that_goes_away_mid_body_is_one_log_line(server: Server) -> None:
    client = _connect(server)
    client.sendall(_request_head(100_000) + SETOSA * 100)
    time.sleep(0.3)
    client.close()
    time.sleep(0.5)
    log = server.log()
    assert "POST /invocations: the client closed the connection before its answer" in log, log
    assert "Traceback" not in log and "ERROR" not in log, log
    _still_serving(server)
