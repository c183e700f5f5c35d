"""Worker processes: the model loaded once and shared, a dead worker replaced, SIGTERM drains all."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from sagemaker_tree import Server, TrainingTree

SETOSA = "5.0,3.4,1.5,0.2"


def _wait_for_workers(server: Server, count: int, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = server.worker_pids()
        if len(pids) == count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"expected {count} workers, have {server.worker_pids()}")


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
    print(f"PSS: 1 worker {sizes[1] >> 20} MiB, 2 workers {sizes[2] >> 20} MiB "
          f"({sizes[2] / sizes[1]:.2f}x)")
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
