"""A long fit's progress in the job's log: each tenth of its steps with the time left.

Shared by the built-in plugins (XGBoost's rounds, the forest's trees) and open to any plugin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = [
    "QUIET_S",
    "FitProgress",
]

QUIET_S = 5.0  # fits shorter than this log no progress


class FitProgress:
    """Call `advance(done)` after each step of `total` (rounds, trees): once the fit has run
    `quiet_s`, each tenth is logged as `<unit> 60 of 200 (30%), 6 s so far, about 14 s left`;
    short fits stay quiet."""

    def __init__(
        self,
        total: int,
        unit: str,
        logger: logging.Logger,
        quiet_s: float = QUIET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.unit, self.logger, self.quiet_s, self.clock = (total, unit, logger, quiet_s, clock)
        self.started = clock()
        self.next_tenth = 1

    def advance(self, done: int) -> None:
        if done * 10 < self.next_tenth * self.total:
            return
        self.next_tenth = done * 10 // self.total + 1
        elapsed = self.clock() - self.started
        if elapsed >= self.quiet_s and done < self.total:
            left = elapsed / done * (self.total - done)
            self.logger.info(
                "%s %d of %d (%d%%), %.0f s so far, about %.0f s left",
                self.unit,
                done,
                self.total,
                done * 100 // self.total,
                elapsed,
                left,
            )
