"""The fork server of a multi-model endpoint: every front worker and model host is forked from it.

Forked from the endpoint's parent process once the plugins are imported and before the parent
starts its event loop, it holds no model, no thread and no loop, so each child it forks starts
clean and shares the imported libraries' memory copy-on-write. It takes commands on a
SOCK_SEQPACKET socket (one JSON message each, with the child's control socket passed along as a
file descriptor), answers each with the child's pid, and reports each child's exit status.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

import orjson

log = logging.getLogger(__name__)

MAX_MESSAGE = 64 * 1024
# A child's entry point: the command that started it and its control socket; returns the exit status.
Role = Callable[[dict[str, Any], socket.socket], int]


def _exit_status(status: int) -> dict[str, int]:
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status)}
    return {"code": os.waitstatus_to_exitcode(status)}


def exited_children() -> Iterator[tuple[int, int]]:
    """Each child that has exited, as (pid, wait status), reaped without waiting for the others."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


def _reap(commands: socket.socket) -> None:
    for pid, status in exited_children():
        with contextlib.suppress(OSError):
            commands.send(orjson.dumps({"exited": pid, **_exit_status(status)}))


def _fork(
    command: dict[str, Any], control: socket.socket, roles: dict[str, Role], commands: socket.socket
) -> int:
    pid = os.fork()
    if pid:
        control.close()
        return pid
    code = 1
    try:
        commands.close()
        signal.set_wakeup_fd(-1)  # the zygote's wake-up pipe is not the child's
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        code = roles[command["role"]](command, control)
    except BaseException:
        log.exception("%s process failed", command.get("role"))
    finally:
        logging.shutdown()
        os._exit(code)


def serve_forks(commands: socket.socket, roles: dict[str, Role]) -> None:
    """The zygote's loop, until the parent closes `commands`: fork a child per command, report
    exits. Ignores SIGTERM and SIGINT: it ends with its parent, never before."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A byte on this pipe wakes the loop when a child exits.
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    while True:
        ready, _, _ = select.select([commands.fileno(), wake_read], [], [], 1.0)
        if wake_read in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_read, 4096)
        _reap(commands)
        if commands.fileno() not in ready:
            continue
        try:
            message, fds, _, _ = socket.recv_fds(commands, MAX_MESSAGE, 1)
        except (ConnectionError, OSError):
            return
        if not message:
            return  # the parent is gone
        command = orjson.loads(message)
        if not fds:
            continue
        control = socket.socket(fileno=fds[0])
        pid = _fork(command, control, roles, commands)
        commands.send(orjson.dumps({"spawned": command["tag"], "pid": pid}))


def start_zygote(roles: dict[str, Role]) -> tuple[int, socket.socket]:
    """Fork the zygote; returns its pid and the parent's end of its command socket."""
    parent_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid:
        zygote_end.close()
        return pid, parent_end
    code = 0
    try:
        parent_end.close()
        serve_forks(zygote_end, roles)
    except BaseException:
        log.exception("the fork server failed")
        code = 1
    finally:
        # Its children were told to stop by the parent; wait so none is left a zombie.
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, 0)[0]:
                pass
        logging.shutdown()
        os._exit(code)
