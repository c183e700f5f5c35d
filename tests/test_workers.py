"""Worker processes: the model loaded once and shared, a dead worker replaced, SIGTERM drains all."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from sagemaker_tree import Server, TrainingTree

SETOSA = "5.0,3.4,1.5,0.2"


def _wait_for_workers(server: Server, count: int, timeout: float = 30) -> list[int]:
    """The workers' pids, once `count` of them run and each has said it accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = server.worker_pids()
        log = server.log()
        if len(pids) == count and all(f"worker {pid} accepting" in log for pid in pids):
            return pids
        time.sleep(0.05)
    raise AssertionError(f"expected {count} workers, have {server.worker_pids()}:\n{server.log()}")


def test_a_killed_worker_is_replaced_and_the_server_keeps_serving(
    iris_forest: TrainingTree,
) -> None:
    server = Server(iris_forest.base, SAGEMAKER_MODEL_SERVER_WORKERS="2").wait_ready()
    try:
        first, second = _wait_for_workers(server, 2)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while first in server.worker_pids() or len(server.worker_pids()) < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        assert second in server.worker_pids()
        answers = [server.invoke(SETOSA).text for _ in range(20)]
        assert answers == ["setosa\n"] * 20
        assert f"worker {first} exited" in server.log()
    finally:
        assert server.stop() == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in (first, second))


def test_workers_share_the_model_memory(big_forest: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(big_forest, tmp_path / "model")
    sizes = {}
    for workers in (1, 2):
        server = Server(tmp_path, SAGEMAKER_MODEL_SERVER_WORKERS=str(workers)).wait_ready()
        try:
            if workers > 1:
                _wait_for_workers(server, workers)
            server.invoke("0,0,0,0,0")
            sizes[workers] = server.pss_bytes()
        finally:
            server.stop()
    print(f"PSS: 1 worker {sizes[1] >> 20} MiB, 2 workers {sizes[2] >> 20} MiB ({sizes[2] / sizes[1]:.2f}x)")
    assert sizes[2] <= 1.3 * sizes[1]


@pytest.mark.parametrize("workers", ["1", "3"])
def test_worker_count_follows_the_setting(iris_forest: TrainingTree, workers: str) -> None:
    server = Server(iris_forest.base, SAGEMAKER_MODEL_SERVER_WORKERS=workers).wait_ready()
    try:
        expected = 0 if workers == "1" else int(workers)
        assert len(_wait_for_workers(server, expected)) == expected
        assert server.invoke(SETOSA).text == "setosa\n"
    finally:
        assert server.stop() == 0


def _connections_by_worker(server: Server) -> dict[int, int]:
    """Each worker's established connections on the server's port, from /proc."""
    established = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == server.port and fields[3] == "01":
            established.add(fields[9])  # the socket's inode
    counts = {}
    for pid in server.worker_pids():
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir() if fd.is_symlink()]
        counts[pid] = sum(link[8:-1] in established for link in links if link.startswith("socket:["))
    return counts


def _open_and_ask(server: Server, count: int) -> list[socket.socket]:
    """`count` keep-alive connections opened at once, each answered once (so each is accepted)."""
    request = (
        f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        f"Content-Length: {len(SETOSA)}\r\n\r\n{SETOSA}"
    ).encode()
    clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(count)]
    for client in clients:
        client.settimeout(30)
        client.sendall(request)
    for client in clients:
        assert client.recv(65536).startswith(b"HTTP/1.1 200"), "no answer"
    return clients


def test_connections_opened_at_once_are_spread_evenly_over_the_workers(
    iris_forest: TrainingTree,
) -> None:
    """Without turns, the worker that wakes first takes every waiting connection."""
    server = Server(iris_forest.base, SAGEMAKER_MODEL_SERVER_WORKERS="3").wait_ready()
    try:
        _wait_for_workers(server, 3)
        for _ in range(3):
            clients = _open_and_ask(server, 24)
            counts = _connections_by_worker(server)
            for client in clients:
                client.close()
            assert sum(counts.values()) in (24, 25), counts  # (+ the /ping session's)
            assert max(counts.values()) - min(counts.values()) <= 2, counts
            time.sleep(0.5)  # the workers see their connections close
    finally:
        assert server.stop() == 0


def test_a_stopped_worker_does_not_keep_new_connections_waiting(iris_forest: TrainingTree) -> None:
    """A worker stuck with fewer connections than the others: they take its turn."""
    server = Server(iris_forest.base, SAGEMAKER_MODEL_SERVER_WORKERS="2").wait_ready()
    try:
        stuck, running = _wait_for_workers(server, 2)
        os.kill(stuck, signal.SIGSTOP)
        try:
            clients = _open_and_ask(server, 8)  # each answered, by the running worker
            assert _connections_by_worker(server)[running] >= 8
            for client in clients:
                client.close()
        finally:
            os.kill(stuck, signal.SIGCONT)
        assert server.invoke(SETOSA).text == "setosa\n"
    finally:
        assert server.stop() == 0
