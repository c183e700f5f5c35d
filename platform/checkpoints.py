"""Checkpoints in SageMaker's checkpoint folder, for any algorithm plugin.

SageMaker syncs `FitContext.checkpoint_dir` with S3 while the job runs and restores it when a
job restarts (a spot instance taken back, a retried job). `CheckpointFolder` does what every
plugin would otherwise write by hand:

- the safe write: under a hidden temporary name, then renamed, so that neither a reader nor the
  upload ever sees half a file;
- names that sort by number (`<prefix>.<step><suffix>`, step 10 after step 9), and rotation: only
  the newest `keep` are kept;
- resume discovery: the newest checkpoint that loads, skipping (with a warning) one that does not
  (an upload cut short), read as a bounded regular file like any model file;
- several hosts: only the leader writes and prunes (SageMaker syncs deletions too: a host pruning
  its own copy would delete the leader's), and every host resumes from the leader's checkpoint,
  whose bytes the leader sends to the others.

    folder = CheckpointFolder(context.checkpoint_dir, "mymodel-checkpoint", ".bin", context.cluster)
    resumed = folder.resume(load_my_model, context.logger)  # (step, model) or None
    ...
    folder.write(step, model_bytes)                          # every N steps
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from .cluster import Cluster
from .errors import ModelLoadError
from .files import read_model_file

__all__ = ["CheckpointFolder"]

T = TypeVar("T")


@dataclass(frozen=True)
class CheckpointFolder:
    """One plugin's checkpoints in `folder` (None: the job has no checkpoint configuration, and
    every method does nothing)."""

    folder: Path | None
    prefix: str
    suffix: str
    cluster: Cluster = field(default_factory=Cluster.single)
    keep: int = 3
    unit: str = "steps"  # what a step counts, for the log: "rounds", "trees", ...

    def path(self, step: int) -> Path | None:
        return None if self.folder is None else self.folder / f"{self.prefix}.{step}{self.suffix}"

    def saved(self) -> list[tuple[int, Path]]:
        """(step, path) of every checkpoint in the folder, newest first (by number)."""
        if self.folder is None or not self.folder.is_dir():
            return []
        pattern = re.compile(rf"^{re.escape(self.prefix)}\.(\d+){re.escape(self.suffix)}$")
        found = [
            (int(match.group(1)), path)
            for path in self.folder.iterdir()
            if (match := pattern.match(path.name)) and path.is_file()
        ]
        return sorted(found, reverse=True)

    def write(self, step: int, data: bytes) -> Path | None:
        """Write the checkpoint of `step` (on the leader; None elsewhere, or without a folder),
        then delete all but the newest `keep`."""
        final = self.path(step)
        if final is None or not self.cluster.is_leader:
            return None
        partial = final.with_name(f".{final.name}.partial")
        partial.write_bytes(data)
        os.replace(partial, final)
        for _, old in self.saved()[self.keep :]:
            old.unlink(missing_ok=True)
        return final

    def resume(self, load: Callable[[bytes, str, int], T], logger: logging.Logger) -> tuple[int, T] | None:
        """The newest checkpoint that loads, as (step, what `load(data, where, step)` returns),
        or None to start afresh. `load` raises ModelLoadError for a checkpoint it cannot use
        (the core then tries the next older one). On several hosts every host must call it: the
        leader chooses, and the others load the bytes it sends."""
        chosen: tuple[int, bytes, T] | None = None
        if self.cluster.is_leader:
            for step, path in self.saved():
                try:  # the folder is synced from a bucket: read and checked as any model file
                    data = read_model_file(path)
                    chosen = (step, data, load(data, str(path), step))
                except ModelLoadError as exc:
                    logger.warning(
                        "checkpoint %s does not load (an incomplete upload?): skipped: %s", path, exc
                    )
                    continue
                logger.info("resuming from checkpoint %s (%d %s done)", path, step, self.unit)
                break
        if self.cluster.size == 1:
            return None if chosen is None else (chosen[0], chosen[2])
        step = int(self.cluster.allreduce(np.array([-1 if chosen is None else chosen[0]]), "max")[0])
        data = self.cluster.broadcast(None if chosen is None else chosen[1])
        if step < 0:
            return None
        if chosen is not None:
            return chosen[0], chosen[2]
        where = f"the checkpoint sent by {self.cluster.leader}"
        logger.info("resuming from %s (%d %s done)", where, step, self.unit)
        return step, load(data, where, step)
