"""A single-model endpoint's first process: it runs the server in a child and says how it ended.

A model whose load kills the process (a segfault or abort in a plugin's native library, the
out-of-memory killer) would otherwise end `sagecraft serve` with a bare exit status. The first
process forks the server, passes SIGTERM and SIGINT on to it, and when a signal kills it, logs
which one and, if the model had not finished loading, names the model folder, then exits 1. The
server tells it the load is done through a pipe (`mark_loaded`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
_loaded_pipe: list[int] = []  # in the server: the pipe's writing end, until the load is done


def mark_loaded() -> None:
    """Called by the server once its model is loaded (a no-op when not supervised)."""
    while _loaded_pipe:
        descriptor = _loaded_pipe.pop()
        with contextlib.suppress(OSError):
            os.write(descriptor, b"1")
            os.close(descriptor)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def supervise(serve: Callable[[], int], model_dir: Path, listener: socket.socket) -> int:
    """`serve()` in a child process; its exit status, or 1 (with a message) when a signal ended it."""
    loaded_read, loaded_write = os.pipe()
    # Blocked across the fork: a SIGTERM must reach the server, not end this process first.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(loaded_read)
            _loaded_pipe.append(loaded_write)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            code = serve()
        finally:
            logging.shutdown()
            os._exit(code)
    os.close(loaded_write)
    listener.close()  # the server holds it

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    _, status = os.waitpid(pid, 0)
    loaded = os.read(loaded_read, 1) == b"1"
    os.close(loaded_read)
    if not os.WIFSIGNALED(status):
        return os.waitstatus_to_exitcode(status)
    name = _signal_name(os.WTERMSIG(status))
    if loaded:
        log.error("the server was killed by %s", name)
    else:
        log.error(
            "cannot serve: loading the model in %s killed the server (%s); the model's plugin or "
            "its native library crashed on this model file",
            model_dir,
            name,
        )
    return 1
