"""Process memory: what we use (RSS), what the container allows (cgroup), and giving memory back."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os
from pathlib import Path

from .environment import TRAINING_MEMORY_SETTING, TRAINING_MEMORY_SHARE, training_memory_bytes
from .errors import DataTooLargeError

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
_UNLIMITED = 1 << 60


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process (this one by default), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
        return int(fields[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _own_cgroup_limits() -> list[Path]:
    """The limit files of this process's own cgroup (from /proc/self/cgroup), for a process
    placed in a cgroup below the one the mount shows (no cgroup namespace: a job started in a
    limited cgroup of its own, as the training benchmark does)."""
    found = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        relative = path.strip().lstrip("/")
        if not relative or ".." in relative.split("/"):
            continue
        if controllers == "":
            found.append(Path("/sys/fs/cgroup") / relative / "memory.max")
        elif "memory" in controllers.split(","):
            found.append(Path("/sys/fs/cgroup/memory") / relative / "memory.limit_in_bytes")
    return found


def container_memory_bytes() -> int:
    """The container's memory limit from its cgroup (this process's own, else the mount's
    root: a container's), else the machine's RAM."""
    for path in (*_own_cgroup_limits(), *_CGROUP_LIMITS):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < _UNLIMITED:
            return int(text)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


@functools.cache  # find_library runs ldconfig in a subprocess: once per process, not per request
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _malloc_trim() -> None:
    libc = _libc()
    with contextlib.suppress(AttributeError):  # not glibc: nothing to trim
        if libc is not None:
            libc.malloc_trim(0)


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc and Arrow's allocator keep
    them otherwise: a 20,000-column Parquet body left 1.7 GB in a worker)."""
    gc.collect()
    with contextlib.suppress(ImportError):
        import pyarrow

        pyarrow.default_memory_pool().release_unused()
    _malloc_trim()


STREAM_OR_SCALE = (
    "Stream the channels from the scratch disk instead (streaming=true, for algorithms that take "
    "batches such as xgboost), or train on an instance with more memory, on more instances, or on "
    "fewer rows or features"
)


class MemoryGuard:
    """What a training job's data may take as it is read: SAGECRAFT_TRAINING_MEMORY_MB, else
    half the container's memory (cgroup limit). Readers `charge` what they hold (or are about to
    make) and get DataTooLargeError, with the size, the limit and what to do, past it."""

    def __init__(self, limit: int, source: str, advice: str = STREAM_OR_SCALE) -> None:
        self.limit = limit
        self.source = source
        self.advice = advice  # what the user may do, the message's last sentence
        self.used = 0

    @classmethod
    def for_training(cls) -> MemoryGuard:
        configured = training_memory_bytes()
        if configured is not None:
            return cls(configured, TRAINING_MEMORY_SETTING)
        container = container_memory_bytes()
        return cls(
            int(container * TRAINING_MEMORY_SHARE),
            f"half the container's {container / 2**30:.1f} GiB; {TRAINING_MEMORY_SETTING} sets it",
        )

    def remaining(self) -> int:
        return max(self.limit - self.used, 0)

    def charge(self, nbytes: int, what: str) -> None:
        """Count `nbytes` more as held; DataTooLargeError naming `what` when the total passes."""
        self.used += nbytes
        if self.used > self.limit:
            raise DataTooLargeError(
                f"{what}: the training data would take {self.used / 2**20:,.0f} MiB, over the "
                f"{self.limit / 2**20:,.0f} MiB this job's data may use ({self.source}). {self.advice}"
            )


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
