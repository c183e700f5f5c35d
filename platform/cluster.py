"""The hosts of a training job, as an algorithm's `fit` sees them (`FitContext.cluster`).

A job with `instance_count > 1` runs `sagecraft train` on every host. The core joins them through
XGBoost's collective (its `RabitTracker` on the first host, see `sagecraft.training.joining`), and
hands every plugin's `fit` a `Cluster`: which host this is, and the few collective operations a
plugin needs to train one model together. Every host must make the same calls in the same order:
a collective call waits until every host has made it.

A one-host job gets a `Cluster` of size 1 whose operations return at once, so a plugin can be
written once for both. XGBoost needs nothing from it beyond the stop and the checkpoints: its own
training is collective once the core has joined the hosts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .environment import MAX_MODEL_FILE_SETTING, max_model_file_bytes
from .errors import ClusterError

if TYPE_CHECKING:
    from .training.watch import Watch

__all__ = ["Cluster"]

# How long a host whose collective failed waits to learn from the hosts' watch which host is gone.
NEWS_WAIT_S = 2.0
# A piece of a byte exchange: an allreduce holds the piece twice, so this bounds the memory.
EXCHANGE_CHUNK = 64 * 1024 * 1024
# What XGBoost's messages say when the collective itself failed (a host gone, a timeout), as
# opposed to a bad parameter or label.
_COLLECTIVE_FAILURE = re.compile(
    r"/collective/|allreduce|allgather|broadcast|socket|tracker|poll|connection|EOF", re.IGNORECASE
)
_OPS = ("sum", "max", "min")


class Cluster:
    """This host's place among the job's hosts, and the collective operations between them.

    `hosts` are in SageMaker's order (resourceconfig.json); `rank` is this host's index there;
    the leader (rank 0) is the host that saves the model and writes checkpoints. `stage` says
    what the job is doing, for the message a host writes when another host fails.
    """

    def __init__(
        self,
        hosts: Sequence[str],
        current_host: str,
        *,
        collective: bool = False,
        watch: Watch | None = None,
    ) -> None:
        self.hosts = tuple(hosts)
        self.rank = self.hosts.index(current_host)
        self.stage = "while starting"
        self.stop_agreed = False
        self._collective = collective and len(self.hosts) > 1
        self._watch = watch

    @classmethod
    def single(cls, host: str = "algo-1") -> Cluster:
        """The cluster of a one-host job: every operation returns at once."""
        return cls([host], host)

    @property
    def size(self) -> int:
        return len(self.hosts)

    @property
    def current_host(self) -> str:
        return self.hosts[self.rank]

    @property
    def leader(self) -> str:
        return self.hosts[0]

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        """This host as failure messages name it: "host algo-2 of 3"."""
        return f"host {self.current_host} of {self.size}"

    def allreduce(self, values: np.ndarray, op: str = "sum") -> np.ndarray:
        """`values` combined element by element across the hosts ("sum", "max" or "min"), in
        the shape given; every host gets the result. Integer and float arrays of any size."""
        if op not in _OPS:
            raise ValueError(f"allreduce op must be one of {_OPS}, not {op!r}")
        array = np.ascontiguousarray(values)
        if not self._collective:
            return array.copy()
        from xgboost import collective

        operation = {"sum": collective.Op.SUM, "max": collective.Op.MAX, "min": collective.Op.MIN}[op]
        return self._call(lambda: collective.allreduce(array, operation)).reshape(array.shape)

    def gather(self, data: bytes) -> list[bytes]:
        """Every host's `data`, in rank order, on every host (the bytes travel as they are: no
        pickle). Large payloads travel in pieces of EXCHANGE_CHUNK bytes."""
        if not self._collective:
            return [bytes(data)]
        lengths = np.zeros(self.size, dtype=np.int64)
        lengths[self.rank] = len(data)
        lengths = self.allreduce(lengths)
        self._check_lengths(lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        total, mine = int(starts[-1]), int(starts[self.rank])
        joined = bytearray(total)
        source = np.frombuffer(data, dtype=np.uint8)
        for begin in range(0, total, EXCHANGE_CHUNK):
            end = min(total, begin + EXCHANGE_CHUNK)
            piece = np.zeros(end - begin, dtype=np.uint8)
            low, high = max(begin, mine), min(end, mine + len(data))
            if low < high:
                piece[low - begin : high - begin] = source[low - mine : high - mine]
            joined[begin:end] = self.allreduce(piece).tobytes()
        return [bytes(joined[int(starts[i]) : int(starts[i + 1])]) for i in range(self.size)]

    def _check_lengths(self, lengths: np.ndarray) -> None:
        """What the hosts say they will send, bounded before any buffer is made: the payloads are
        model files and the like, so together they stay within the model file limit."""
        limit = max_model_file_bytes()
        if (lengths >= 0).all() and int(lengths.sum()) <= limit:
            return
        worst = int(np.argmax(np.abs(lengths)))
        raise ClusterError(
            f"host {self.hosts[worst]} announced {int(lengths[worst]):,} bytes for an exchange "
            f"between the hosts (all hosts together: {int(lengths.sum()):,}), over the limit of "
            f"{limit:,} bytes ({MAX_MODEL_FILE_SETTING})"
        )

    def broadcast(self, data: bytes | None) -> bytes:
        """The leader's `data` on every host (the others pass None)."""
        if not self._collective:
            return bytes(data or b"")
        return self.gather((data or b"") if self.is_leader else b"")[0]

    def gather_json(self, value: Any) -> list[Any]:
        """Every host's JSON-able `value`, in rank order (the core's agreement rounds)."""
        if not self._collective:
            return [value]
        encoded = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        return [json.loads(part) for part in self.gather(encoded)]

    def any(self, flag: bool) -> bool:
        """True on every host when `flag` is True on any."""
        return bool(self.allreduce(np.array([int(flag)], dtype=np.int32), "max")[0])

    def agree_stop(self, requested: bool) -> bool:
        """The agreed stop: True on every host once any host was asked to stop (SIGTERM). An
        algorithm that trains in lockstep calls it once a round, so that every host stops after
        the same round; `FitContext.stop_requested()` then says True on every host too."""
        self.stop_agreed = self.stop_agreed or self.any(requested)
        return self.stop_agreed

    def lost(self, exc: BaseException) -> ClusterError | None:
        """The error to raise when `exc` (an XGBoostError, say) is the collective failing because
        another host failed or stopped answering; None when it is something else."""
        if not self._collective or isinstance(exc, ClusterError):
            return None
        if not _COLLECTIVE_FAILURE.search(str(exc)):
            return None
        departure = self._watch.wait_departure(NEWS_WAIT_S) if self._watch is not None else None
        if departure is not None:
            return ClusterError(f"{departure} ({self.describe()} lost the collective: {_first_line(exc)})")
        return ClusterError(
            f"another host of the job failed or stopped answering {self.stage} "
            f"({self.describe()} lost the collective: {_first_line(exc)}); the failing host's "
            "log and failure reason say why"
        )

    def _call(self, operation: Any) -> np.ndarray:
        from xgboost.core import XGBoostError

        try:
            return operation()
        except XGBoostError as exc:
            raise self.lost(exc) or ClusterError(f"{self.describe()}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    """The informative line of an XGBoost message (its first line is a source location)."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("[bt]", "Stack trace"))]
    return (useful[-1] if useful else str(exc))[:300]
