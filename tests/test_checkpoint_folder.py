"""The core's checkpoint helper on its own: the safe write, numeric order, rotation, resume."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sagecraft.checkpoints import CheckpointFolder
from sagecraft.cluster import Cluster
from sagecraft.errors import ModelLoadError

LOG = logging.getLogger("test")


def _load(data: bytes, where: str, step: int) -> str:
    if not data.startswith(b"step "):
        raise ModelLoadError(f"{where} is not a checkpoint")
    return data.decode()


def test_writes_rename_into_place_keep_the_newest_by_number(tmp_path: Path) -> None:
    folder = CheckpointFolder(tmp_path, "algo-checkpoint", ".bin", keep=3)
    for step in (1, 2, 9, 10, 11):
        path = folder.write(step, f"step {step}".encode())
        assert path == tmp_path / f"algo-checkpoint.{step}.bin"
    assert [step for step, _ in folder.saved()] == [11, 10, 9]  # 10 after 9, not before
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"algo-checkpoint.{s}.bin" for s in (10, 11, 9)]
    assert folder.resume(_load, LOG) == (11, "step 11")


def test_resume_skips_a_checkpoint_that_does_not_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = CheckpointFolder(tmp_path, "c", ".bin", unit="rounds")
    folder.write(4, b"step 4")
    (tmp_path / "c.7.bin").write_bytes(b"half an upl")  # cut short
    (tmp_path / "c.8.bin").mkdir()  # not a file: never a checkpoint
    (tmp_path / "other.9.bin").write_bytes(b"step 9")  # another plugin's
    with caplog.at_level(logging.INFO):
        assert folder.resume(_load, LOG) == (4, "step 4")
    assert "c.7.bin does not load (an incomplete upload?): skipped" in caplog.text
    assert "resuming from checkpoint" in caplog.text and "(4 rounds done)" in caplog.text


def test_no_folder_or_no_checkpoint_starts_afresh(tmp_path: Path) -> None:
    assert CheckpointFolder(None, "c", ".bin").write(1, b"x") is None
    assert CheckpointFolder(None, "c", ".bin").resume(_load, LOG) is None
    assert CheckpointFolder(tmp_path / "absent", "c", ".bin").resume(_load, LOG) is None


def test_only_the_leader_writes(tmp_path: Path) -> None:
    """A host that is not the leader never writes nor prunes (SageMaker syncs deletions)."""
    (tmp_path / "c.1.bin").write_bytes(b"step 1")
    follower = CheckpointFolder(tmp_path, "c", ".bin", Cluster(["algo-1", "algo-2"], "algo-2"), keep=1)
    assert follower.write(5, b"step 5") is None
    assert [p.name for p in tmp_path.iterdir()] == ["c.1.bin"]
