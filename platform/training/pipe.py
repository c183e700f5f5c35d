"""Pipe mode channels: SageMaker streams a channel into a FIFO, `input/data/<channel>_<epoch>`, one
FIFO an epoch, each read once from start to end.

The in-memory readers need a channel they can look at twice (a CSV header is sniffed before the
file is parsed, gzip is recognised by its first bytes), so the first epoch is copied as it arrives
to the job's scratch folder and read from there like a File mode channel, then removed. One epoch
is all an in-memory fit reads. With `RecordWrapperType: RecordIO`, SageMaker wraps each S3 object
of the channel (CSV or libsvm text) in a RecordIO record: the records are unwrapped as they are
copied, a few megabytes at a time; RecordIO-protobuf channels are kept as they are.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from ..environment import SageMakerPaths
from ..errors import DataError, DataTooLargeError
from ..recordio import RecordIOError, unwrap

log = logging.getLogger(__name__)

CHUNK_BYTES = 4 << 20
# Left free on the scratch folder's disk while copying: the model and checkpoints need room too.
DISK_RESERVE_BYTES = 256 << 20


def copy_first_epoch(paths: SageMakerPaths, channel: str, *, record_wrapped: bool) -> Path:
    """The channel's first epoch as a file in a folder of its own under the scratch folder;
    DataError when the FIFO is missing or is not a FIFO, DataTooLargeError when the disk would
    fill. The caller removes the folder once it has read it (`remove_copy`)."""
    fifo = paths.pipe(channel, 0)
    check_fifo(fifo, channel)
    folder = paths.scratch_dir / f"pipe-{channel}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    target = folder / "epoch-0"
    copied = 0
    with fifo.open("rb", buffering=0) as source, target.open("wb") as out:
        log.info("channel '%s': reading epoch 0 from %s", channel, fifo)
        pieces = (
            unwrap(source, CHUNK_BYTES) if record_wrapped else iter(lambda: source.read(CHUNK_BYTES), b"")
        )
        try:
            for piece in pieces:
                _check_room(folder, len(piece), channel, copied)
                out.write(piece)
                copied += len(piece)
        except RecordIOError as exc:
            raise DataError(
                f"the '{channel}' channel (Pipe mode, RecordWrapperType RecordIO): {exc}"
            ) from None
    log.info("channel '%s': %d bytes read from its pipe", channel, copied)
    return folder


def check_fifo(fifo: Path, channel: str) -> None:
    """DataError unless `fifo` is the FIFO SageMaker makes for a Pipe mode channel's epoch."""
    try:
        mode = fifo.stat().st_mode
    except FileNotFoundError:
        raise DataError(
            f"the '{channel}' channel is in Pipe mode, but SageMaker's FIFO {fifo} does not exist"
        ) from None
    if not stat.S_ISFIFO(mode):
        raise DataError(f"the '{channel}' channel is in Pipe mode, but {fifo} is not a FIFO")


class Unwrapped(io.RawIOBase):
    """A FIFO of RecordIO-wrapped objects (RecordWrapperType RecordIO) read as the bytes they
    wrap, a record piece at a time; DataError naming the channel for a broken record."""

    def __init__(self, fifo: Path, channel: str) -> None:
        self._source = fifo.open("rb", buffering=0)
        self._pieces = unwrap(self._source, CHUNK_BYTES)
        self._held = b""
        self._channel = channel

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._held:
            try:
                self._held = next(self._pieces, b"")
            except RecordIOError as exc:
                raise DataError(
                    f"the '{self._channel}' channel (Pipe mode, RecordWrapperType RecordIO): {exc}"
                ) from None
            if not self._held:
                return 0
        count = min(len(buffer), len(self._held))
        buffer[:count] = self._held[:count]
        self._held = self._held[count:]
        return count

    def close(self) -> None:
        self._source.close()
        super().close()


def _check_room(folder: Path, size: int, channel: str, copied: int) -> None:
    free = shutil.disk_usage(folder).free
    if free - size < DISK_RESERVE_BYTES:
        raise DataTooLargeError(
            f"the '{channel}' channel (Pipe mode) does not fit the scratch disk: {copied / 2**20:,.0f} MiB "
            f"copied, {free / 2**20:,.0f} MiB free on {folder}. Raise the job's VolumeSizeInGB"
        )


def remove_copy(folder: Path) -> None:
    """Remove a copy made by copy_first_epoch (and the scratch folder, once empty)."""
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty, or already gone
        os.rmdir(folder.parent)
