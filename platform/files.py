"""Reading files that come from outside (model folders, manifests, input/config) as regular files
of bounded size.

A model folder is whatever the user's archive or bucket held: a FIFO named `manifest.json` would
block the thread that opens it forever, and a device such as `/dev/zero` would be read without
end. (Training channels are filtered to regular files as they are listed: training.channel_files.)
`read_regular` opens without blocking, refuses anything but a regular
file, and reads no more than its limit, whatever the file claims.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .environment import MAX_MODEL_FILE_SETTING, max_model_file_bytes
from .errors import ModelLoadError, SagecraftError

__all__ = [
    "MAX_MODEL_FILE_SETTING",
    "describe_kind",
    "max_model_file_bytes",
    "read_model_file",
    "read_regular",
]

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def describe_kind(mode: int) -> str:
    """'a FIFO', 'a folder', ... for a file's st_mode; 'a regular file' for one."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def read_regular(path: Path, limit: int, error: type[SagecraftError], setting: str) -> bytes:
    """The bytes of `path`, which must be a regular file (a link to one will do) of at most `limit`
    bytes. Otherwise raises `error` naming the file, what it is and, for size, the `setting` that
    raises the limit; FileNotFoundError passes through for the caller to word."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path} is {describe_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise error(f"{path} is {info.st_size:,} bytes, over the limit of {limit:,} ({setting})")
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 24, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew while it was read
                raise error(f"{path} is over the limit of {limit:,} bytes ({setting})")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_model_file(path: Path) -> bytes:
    """The bytes of a file in a model folder, for a plugin's `load_model`: ModelLoadError when it
    is missing, not a regular file, or larger than SAGECRAFT_MAX_MODEL_FILE_MB."""
    try:
        return read_regular(path, max_model_file_bytes(), ModelLoadError, MAX_MODEL_FILE_SETTING)
    except FileNotFoundError:
        raise ModelLoadError(f"{path} is missing") from None
    except OSError as exc:
        raise ModelLoadError(f"{path} cannot be read: {exc.strerror}") from None
