"""What a failed job leaves behind: output/failure, whose first 1024 characters SageMaker shows
as the job's FailureReason, and the message for a model that could not be written."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from ..environment import SageMakerPaths
from ..errors import SagecraftError

log = logging.getLogger(__name__)

FAILURE_LIMIT = 1024


_WRITE_HINTS = {
    errno.ENOSPC: "the disk is full: raise the training job's VolumeSizeInGB",
    errno.EDQUOT: "the disk quota is exhausted: raise the training job's VolumeSizeInGB",
    errno.EROFS: "the folder is on a read-only file system",
    errno.EACCES: "the process may not write there",
    errno.EFBIG: "a file grew over the size limit set for the process",
}


def write_failure_message(folder: Path, exc: OSError) -> str:
    hint = _WRITE_HINTS.get(exc.errno or 0, "check the folder and the space left on its disk")
    reason = exc.strerror or str(exc)
    if exc.filename and Path(exc.filename) != folder:
        reason += f" ({exc.filename})"
    return f"could not write the model to {folder}: {reason}; {hint}"


def failure_text(exc: BaseException) -> str:
    """The failure file: the message first (SageMaker shows 1024 characters), then the type."""
    message = str(exc) if isinstance(exc, SagecraftError) else f"internal error: {exc}"
    if isinstance(exc, SagecraftError) and exc.where:
        message = f"{exc.where}: {message}"
    suffix = f"\n\nError type: {type(exc).__name__}"
    room = FAILURE_LIMIT - len(suffix)
    if len(message) > room:
        message = message[: room - 3] + "..."
    return message + suffix


def write_failure(paths: SageMakerPaths, exc: BaseException) -> Path | None:
    try:
        paths.failure_file.parent.mkdir(parents=True, exist_ok=True)
        paths.failure_file.write_text(failure_text(exc), encoding="utf-8")
    except OSError:
        log.exception("could not write %s", paths.failure_file)
        return None
    return paths.failure_file
