"""The files of a training channel: every regular file under its folder, and a check that none
changed while it was read."""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from ..errors import DataError
from ..files import describe_kind

log = logging.getLogger(__name__)


def channel_files(channel_dir: Path) -> list[Path]:
    """Every data file under `channel_dir`, nested ones and linked folders included, in a stable
    order. Only regular files are data: a FIFO would block the reader, a device be read without
    end. Entries that are skipped for that (or are dangling links, or links that lead back to a
    folder already read) are named in the log; names starting with `.` or `_` are skipped
    quietly, as SageMaker's own algorithms do."""
    files: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def walk(folder: Path) -> None:
        status = folder.stat()
        if (status.st_dev, status.st_ino) in seen:
            log.warning("%s leads back to a folder already read (a link loop): skipped", folder)
            return
        seen.add((status.st_dev, status.st_ino))
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.name.startswith((".", "_")):
                continue
            path = Path(entry.path)
            try:
                mode = path.stat().st_mode  # through links
            except FileNotFoundError:
                log.warning("%s is a link to nothing: skipped", path)
                continue
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    log.warning("%s is a link that leads back to itself: skipped", path)
                else:
                    log.warning("%s cannot be read (%s): skipped", path, exc.strerror)
                continue
            if stat.S_ISDIR(mode):
                walk(path)
            elif stat.S_ISREG(mode):
                files.append(path)
            else:
                log.warning("%s is %s, not a regular file: skipped", path, describe_kind(mode))

    walk(channel_dir)
    return files


def signature(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


def check_unchanged(path: Path, before: tuple[int, int]) -> None:
    """A file written to while we read it would train on a mix of old and new rows."""
    after = signature(path)
    if after != before:
        raise DataError(
            f"{path} changed while it was being read (size {before[0]} -> {after[0]} bytes); "
            "something is still writing to the channel. Start training once the data is complete"
        )
