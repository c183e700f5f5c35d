"""Checkpoints in SageMaker's checkpoint folder, resuming from them, and stopping on request.

On a multi-host job only the leader writes and prunes checkpoints (SageMaker syncs the folder
with S3, deletions included, so a host that pruned its own copy would delete the leader's), and
a resumed job starts every host from the leader's newest checkpoint, sent to the others.

A checkpoint is the booster after N rounds, `xgboost-checkpoint.<N>.ubj`, written under a hidden
temporary name and renamed, so a reader never sees half a file. A restarted job (a spot instance
taken back, a job retried) resumes from the newest checkpoint that loads; numeric order, not
lexical; files that do not load (an upload cut short) are skipped with a warning.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import xgboost as xgb
from sagecraft.cluster import Cluster
from sagecraft.errors import ModelLoadError
from sagecraft.progress import QUIET_S, FitProgress

from .persistence import booster_from_bytes, read_booster

CHECKPOINT_NAME = re.compile(r"^xgboost-checkpoint\.(\d+)\.ubj$")
KEEP = 3  # the newest checkpoints kept; older ones are deleted as new ones are written


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(rounds, path) of every checkpoint file, newest first."""
    found = [
        (int(match.group(1)), path)
        for path in folder.iterdir()
        if (match := CHECKPOINT_NAME.match(path.name)) and path.is_file()
    ]
    return sorted(found, reverse=True)


def latest_checkpoint(folder: Path, logger: logging.Logger) -> xgb.Booster | None:
    """The newest checkpoint that loads and holds the rounds its name says, or None."""
    for rounds, path in _checkpoints(folder):
        try:  # checked as any model file: the checkpoint folder is synced from a bucket
            booster, _ = read_booster(path)
        except ModelLoadError as exc:
            logger.warning("checkpoint %s does not load (an incomplete upload?): skipped: %s", path, exc)
            continue
        if booster.num_boosted_rounds() != rounds:
            logger.warning(
                "checkpoint %s holds %d rounds, not %d: skipped", path, booster.num_boosted_rounds(), rounds
            )
            continue
        logger.info("resuming from checkpoint %s (%d rounds done)", path, rounds)
        return booster
    return None


def resume(folder: Path | None, cluster: Cluster, logger: logging.Logger) -> xgb.Booster | None:
    """The booster every host resumes from: the leader's newest checkpoint (None: start afresh)."""
    booster = latest_checkpoint(folder, logger) if folder is not None and cluster.is_leader else None
    if cluster.size == 1:
        return booster
    data = cluster.broadcast(None if booster is None else bytes(booster.save_raw("ubj")))
    if not data:
        return None
    if not cluster.is_leader:
        booster, _ = booster_from_bytes(data, f"the checkpoint sent by {cluster.leader}")
        logger.info(
            "resuming from %s's checkpoint (%d rounds done)", cluster.leader, booster.num_boosted_rounds()
        )
    return booster


def write_checkpoint(booster: xgb.Booster, folder: Path) -> Path:
    rounds = booster.num_boosted_rounds()
    final = folder / f"xgboost-checkpoint.{rounds}.ubj"
    partial = folder / f".{final.name}.partial"
    partial.write_bytes(booster.save_raw("ubj"))
    os.replace(partial, final)
    for _, old in _checkpoints(folder)[KEEP:]:
        old.unlink(missing_ok=True)
    return final


class Progress(xgb.callback.TrainingCallback):
    """Logs each tenth of the rounds with the time left (sagecraft.progress)."""

    def __init__(
        self,
        total: int,
        logger: logging.Logger,
        quiet_s: float = QUIET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.progress = FitProgress(total, "round", logger, quiet_s, clock)

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict) -> bool:
        self.progress.advance(epoch + 1)
        return False


class CheckpointAndStop(xgb.callback.TrainingCallback):
    """After each round: a checkpoint every `every` rounds (when there is a folder, on the
    leader), and an end to training, with a last checkpoint, once `stop_requested()` says so on
    any host (every host then stops after the same round)."""

    def __init__(
        self,
        folder: Path | None,
        every: int,
        stop_requested: Callable[[], bool],
        logger: logging.Logger,
        cluster: Cluster,
    ) -> None:
        self.folder = folder if cluster.is_leader else None
        self.every, self.cluster = every, cluster
        self.stop_requested, self.logger = stop_requested, logger

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict) -> bool:
        stop = self.cluster.agree_stop(self.stop_requested())
        rounds = model.num_boosted_rounds()
        if self.folder is not None and (stop or rounds % self.every == 0):
            path = write_checkpoint(model, self.folder)
            if stop:
                self.logger.warning("stopping after round %d; checkpoint %s written", rounds - 1, path)
        return stop
