"""The cluster's parts on their own: a host's share of a channel, and the byte bus between hosts
(run as real processes joined through XGBoost's collective, in a private namespace)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sagecraft.cluster import Cluster
from sagecraft.local_cluster import HostRun, LocalCluster
from sagecraft.training.sharding import SHARDED, Share


def _files(tmp_path: Path, sizes: list[int]) -> list[Path]:
    paths = []
    for index, size in enumerate(sizes):
        path = tmp_path / f"part-{index}.csv"
        path.write_bytes(b"x" * size)
        paths.append(path)
    return paths


def test_replicated_files_are_divided_by_size_each_to_one_host(tmp_path: Path) -> None:
    files = _files(tmp_path, [900, 100, 500, 400, 300, 0, 0])
    shares = [Share(rank, 3).files(files) for rank in range(3)]
    assert sorted(p.name for share in shares for p in share) == sorted(p.name for p in files)
    loads = [sum(p.stat().st_size for p in share) for share in shares]
    assert sorted(loads) == [600, 700, 900], loads  # the 900-byte file alone: nothing fits better
    assert all(share for share in shares)  # empty files too are spread, one host each
    assert [p.name for p in shares[0]] == sorted(p.name for p in shares[0])  # listing order kept


def test_fewer_files_than_hosts_divides_the_rows_in_blocks(tmp_path: Path) -> None:
    files = _files(tmp_path, [10, 20])
    share = Share(1, 3)
    assert share.files(files) == files and share.splits_rows(len(files))
    blocks = [Share(rank, 3).rows(10) for rank in range(3)]
    assert [list(range(10))[b] for b in blocks] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]


def test_a_shard_and_a_single_host_keep_every_file(tmp_path: Path) -> None:
    files = _files(tmp_path, [1, 2, 3, 4])
    assert Share(2, 3, SHARDED).files(files) == files and not Share(2, 3, SHARDED).splits_rows(1)
    assert Share(0, 1).files(files) == files and not Share(0, 1).splits_rows(1)


def test_a_single_host_cluster_answers_at_once() -> None:
    cluster = Cluster.single("algo-1")
    assert (cluster.size, cluster.rank, cluster.is_leader, cluster.leader) == (1, 0, True, "algo-1")
    assert cluster.allreduce(np.array([1, 2])).tolist() == [1, 2]
    assert cluster.gather(b"abc") == [b"abc"] and cluster.broadcast(b"x") == b"x"
    assert cluster.gather_json({"a": 1}) == [{"a": 1}]
    assert cluster.agree_stop(False) is False and cluster.agree_stop(True) is True
    assert cluster.stop_agreed and cluster.lost(RuntimeError("socket closed")) is None
    with pytest.raises(ValueError, match="op must be one of"):
        cluster.allreduce(np.array([1]), "mean")


# Each host's script starts by joining the others, as the trainer does.
JOIN = """
    import json, os
    from pathlib import Path
    import numpy as np
    from sagecraft import cluster as module
    from sagecraft.training.joining import JoinSettings, joined

    base = Path(os.environ["SAGEMAKER_BASE_DIR"])
    config = json.loads((base / "input/config/resourceconfig.json").read_text())
"""

BUS = """
    module.EXCHANGE_CHUNK = 7  # pieces smaller than the payloads: the boundaries are exercised
    settings = JoinSettings(bootstrap_timeout=60, collective_timeout=20)
    with joined(config["hosts"], config["current_host"], settings) as c:
        mine = bytes(range(c.rank * 10, c.rank * 10 + [5, 0, 23][c.rank]))
        result = {
            "gather": [p.hex() for p in c.gather(mine)],
            "broadcast": c.broadcast(b"from the leader" if c.is_leader else None).decode(),
            "sum": c.allreduce(np.array([[c.rank, 1], [2, 3]], dtype=np.int64)).tolist(),
            "max": c.allreduce(np.array([c.rank * 1.5]), "max").tolist(),
            "min": c.allreduce(np.array([c.rank + 1], dtype=np.int32), "min").tolist(),
            "any": [c.any(c.rank == 2), c.any(False)],
            "json": c.gather_json({"rank": c.rank}),
        }
    print(json.dumps(result))
"""


def _on_three_hosts(tmp_path: Path, body: str) -> list[HostRun]:
    """Run JOIN then `body` as the script of each of three hosts."""
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(JOIN) + textwrap.dedent(body))
    return (
        LocalCluster([tmp_path / f"algo-{i}" for i in (1, 2, 3)])
        .start(command=[sys.executable, str(script)])
        .wait(120)
    )


@pytest.mark.skipif(not LocalCluster.available(), reason="needs user, network and mount namespaces")
def test_the_byte_bus_between_three_hosts(tmp_path: Path) -> None:
    results = _on_three_hosts(tmp_path, BUS)
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr[-2000:] for r in results]
    answers = [json.loads(r.stdout.strip().splitlines()[-1]) for r in results]
    assert answers[0] == answers[1] == answers[2]
    expected = [bytes(range(0, 5)).hex(), "", bytes(range(20, 43)).hex()]
    assert answers[0] == {
        "gather": expected,
        "broadcast": "from the leader",
        "sum": [[3, 3], [6, 9]],
        "max": [3.0],
        "min": [1],
        "any": [True, False],
        "json": [{"rank": 0}, {"rank": 1}, {"rank": 2}],
    }


HOSTILE = """
    settings = JoinSettings(bootstrap_timeout=60, collective_timeout=20)
    with joined(config["hosts"], config["current_host"], settings) as c:
        if c.rank == 1:  # a peer that announces far more than it could send
            c.allreduce(np.array([0, 2**62, 0], dtype=np.int64))
        else:
            try:
                c.gather(b"mine")
            except Exception as exc:
                print(json.dumps({"error": str(exc)}))
"""


@pytest.mark.skipif(not LocalCluster.available(), reason="needs user, network and mount namespaces")
def test_a_peer_announcing_a_huge_exchange_is_refused_before_any_buffer(tmp_path: Path) -> None:
    results = _on_three_hosts(tmp_path, HOSTILE)
    for run in (results[0], results[2]):
        assert run.returncode == 0, run.stderr[-2000:]
        error = json.loads(run.stdout.strip().splitlines()[-1])["error"]
        assert "host algo-2 announced 4,611,686,018,427,387,904 bytes" in error
        assert "SAGECRAFT_MAX_MODEL_FILE_MB" in error
