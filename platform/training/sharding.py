"""Which rows of a channel each host of a multi-host job trains on.

From the channel's `S3DistributionType` in inputdataconfig.json:
- `ShardedByS3Key`: SageMaker gave each host its own objects; a host trains on all of its files
  (a host given none still joins the job, with no rows).
- `FullyReplicated`: every host holds every file, so the hosts divide them: each file goes to one
  host, largest first to the host with the fewest bytes so far (the same listing on every host
  gives the same assignment). With fewer files than hosts, every host reads the files and keeps
  its contiguous block of the rows.
So the work is really divided, and each row is trained on (and evaluated) once. One host: all of
it, as ever.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path

FULLY_REPLICATED = "FullyReplicated"
SHARDED = "ShardedByS3Key"


@dataclass(frozen=True)
class Share:
    """One host's share of one channel."""

    rank: int
    size: int
    distribution: str = FULLY_REPLICATED

    @property
    def whole(self) -> bool:
        """Whether this host reads the channel's rows as they are (one host, or its own shard)."""
        return self.size == 1 or self.distribution == SHARDED

    def files(self, files: list[Path]) -> list[Path]:
        """The files this host reads, in their listing order."""
        if self.whole or len(files) < self.size:
            return files
        sizes = [path.stat().st_size for path in files]
        hosts = [(0, 0, rank) for rank in range(self.size)]  # (bytes, files, rank): a heap
        mine = set()
        for index in sorted(range(len(files)), key=lambda i: (-sizes[i], i)):
            load, count, rank = heapq.heappop(hosts)
            if rank == self.rank:
                mine.add(index)
            heapq.heappush(hosts, (load + sizes[index], count + 1, rank))
        return [path for index, path in enumerate(files) if index in mine]

    def splits_rows(self, file_count: int) -> bool:
        """Whether the hosts divide the rows rather than the files (fewer files than hosts)."""
        return not self.whole and file_count < self.size

    def rows(self, count: int) -> slice:
        """This host's contiguous block of `count` rows."""
        return slice(count * self.rank // self.size, count * (self.rank + 1) // self.size)

    def describe(self) -> str:
        if self.size == 1:
            return ""
        if self.distribution == SHARDED:
            return " (this host's shard: ShardedByS3Key)"
        return f" (this host's share, {self.rank + 1} of {self.size}: FullyReplicated, divided)"
