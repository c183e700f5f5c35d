"""XGBoost's checkpoints and stopping, on the core's `sagecraft.checkpoints.CheckpointFolder`.

A checkpoint is the booster after N rounds, `xgboost-checkpoint.<N>.ubj`; the folder does the safe
write, the numeric order, the rotation (the newest 3 kept), resume discovery, and on several
hosts the leader-only writes and the checkpoint sent to every host. A checkpoint is checked as any
model file, and must hold the rounds its name says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import xgboost as xgb
from sagecraft.checkpoints import CheckpointFolder
from sagecraft.cluster import Cluster
from sagecraft.errors import ModelLoadError
from sagecraft.progress import QUIET_S, FitProgress

from .persistence import booster_from_bytes

PREFIX, SUFFIX = "xgboost-checkpoint", ".ubj"


def checkpoint_folder(folder: Path | None, cluster: Cluster | None = None) -> CheckpointFolder:
    return CheckpointFolder(folder, PREFIX, SUFFIX, cluster or Cluster.single(), unit="rounds")


def _load(data: bytes, where: str, rounds: int) -> xgb.Booster:
    booster, _ = booster_from_bytes(data, where)
    if booster.num_boosted_rounds() != rounds:
        raise ModelLoadError(f"{where} holds {booster.num_boosted_rounds()} rounds, not {rounds}")
    return booster


def resume(folder: Path | None, cluster: Cluster, logger: logging.Logger) -> xgb.Booster | None:
    """The booster every host resumes from: the leader's newest checkpoint (None: start afresh)."""
    found = checkpoint_folder(folder, cluster).resume(_load, logger)
    return None if found is None else found[1]


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
    """After each round: a checkpoint every `every` rounds (when there is a folder; the leader's
    only), and an end to training, with a last checkpoint, once `stop_requested()` says so on
    any host (every host then stops after the same round)."""

    def __init__(
        self,
        folder: Path | None,
        every: int,
        stop_requested: Callable[[], bool],
        logger: logging.Logger,
        cluster: Cluster,
    ) -> None:
        self.folder = checkpoint_folder(folder, cluster)
        self.every, self.cluster = every, cluster
        self.stop_requested, self.logger = stop_requested, logger

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict) -> bool:
        stop = self.cluster.agree_stop(self.stop_requested())
        rounds = model.num_boosted_rounds()
        if self.folder.folder is not None and (stop or rounds % self.every == 0):
            path = self.folder.write(rounds, bytes(model.save_raw("ubj")))
            if stop and path is not None:
                self.logger.warning("stopping after round %d; checkpoint %s written", rounds - 1, path)
            elif stop:
                self.logger.warning("stopping after round %d (the leader writes the checkpoint)", rounds - 1)
        return stop
