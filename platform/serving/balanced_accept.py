"""Worker processes share one listening socket; this spreads its connections evenly among them.

Left to the event loop, workers race for each new connection and the one that wakes first takes
every connection waiting (uvloop accepts until the queue is empty). A client that opens its
keep-alive connections at once (SageMaker's front end, a load generator) then finds them split
14 to 2 as often as 8 to 8, and a busy worker next to an idle one (measured on 2 workers, 16
connections of single-row requests: 10,300 requests/s for 11 to 5 against 12,400 for 8 to 8).

Here each worker accepts a connection only while it holds no more than the least busy worker,
so the counts stay within about one of each other. A connection that has waited MAX_WAIT_S for a
less busy worker (stopped, or stuck in a long computation) is taken by any worker, so a
stalled worker can never keep the endpoint from accepting.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import mmap
import select
import socket

import numpy as np
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

MAX_WAIT_S = 0.005
RETRY_S = 0.001
# Out of descriptors (EMFILE): wait this long before the next accept, and say so once a minute.
ACCEPT_ERROR_RETRY_S = 0.1
ACCEPT_ERROR_LOG_S = 60.0
REFRESH_S = 0.05
ABSENT = np.iinfo(np.int32).max  # a slot whose worker is not running: never the least busy


class _HalfCloseTolerant(RequestHandler):
    """aiohttp's protocol for one connection, except that a client which half-closes after
    sending its whole request (shutdown(SHUT_WR)) still gets its answer: aiohttp's eof_received
    returns None, which makes asyncio close the connection before the answer is written. The
    connection closes once that answer is sent."""

    __slots__ = ()

    def eof_received(self) -> bool:  # type: ignore[override]  # True: keep the transport open
        bodies = [payload for _, payload in self._messages]
        if self._current_request is not None:
            bodies.append(self._current_request.content)
        # Nothing to answer (an idle connection closing: aiohttp's loop waits for a request, as
        # its keep-alive check tells), or a body that can never arrive whole: close now, as
        # aiohttp does (an idle one must leave the worker's count at once).
        idle = not self._messages and self._waiter is not None and not self._waiter.done()
        if idle or not all(body.is_eof() for body in bodies):
            return False
        self.close()  # once the request in progress is answered
        return True


def _half_close_tolerant(server: web.Server) -> RequestHandler:
    # What web.Server() does, with the class above.
    return _HalfCloseTolerant(server, loop=server._loop, **server._kwargs)


class ConnectionCounts:
    """Each worker's number of open connections, by slot, in memory shared across fork."""

    def __init__(self, slots: int) -> None:
        self._memory = mmap.mmap(-1, 4 * slots)  # anonymous and shared: children see writes
        self.counts = np.frombuffer(self._memory, np.int32)
        self.counts[:] = ABSENT

    def least(self) -> int:
        return int(self.counts.min())


class BalancedSite(web.BaseSite):
    """An aiohttp site on a listening socket shared with other workers, accepting in turn."""

    __slots__ = (
        "_accept_errors",
        "_accepting",
        "_connecting",
        "_counts",
        "_last_error_log",
        "_name",
        "_refresher",
        "_resume",
        "_slot",
        "_sock",
        "_waiting_since",
    )

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        counts: ConnectionCounts | None = None,
        slot: int = 0,
    ) -> None:
        """`counts` and `slot`: the workers' shared counts and this worker's place in them; none
        for a server of one process (it then takes every connection, through the same code)."""
        super().__init__(runner)
        self._sock = sock
        self._counts = counts or ConnectionCounts(1)
        self._slot = slot
        self._accepting = False
        self._accept_errors = 0
        self._last_error_log = -ACCEPT_ERROR_LOG_S
        self._waiting_since: float | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._refresher: asyncio.TimerHandle | None = None
        self._connecting: set[asyncio.Task[object]] = set()  # (a task nobody holds may vanish)
        host, port = sock.getsockname()[:2]
        self._name = f"http://{host}:{port}"

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        self._sock.setblocking(False)
        loop = asyncio.get_running_loop()
        self._refresh(loop)
        self._accepting = True
        loop.add_reader(self._sock.fileno(), self._on_readable)

    def stop_accepting(self) -> None:
        """Take no new connection (the other workers take them); the open ones carry on. The
        first step of a drain on SIGTERM."""
        self._accepting = False
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        self._counts.counts[self._slot] = ABSENT

    async def stop(self) -> None:
        self.stop_accepting()
        if self._refresher is not None:
            self._refresher.cancel()
        await super().stop()

    def _publish_count(self) -> int:
        """Write this worker's open connections to the shared counts and return the number:
        those aiohttp holds, and those accepted but not yet handed to it (a burst of accepts
        happens before any of them reaches aiohttp)."""
        server = self._runner.server
        assert server is not None
        mine = len(server.connections) + sum(not task.done() for task in self._connecting)
        self._counts.counts[self._slot] = mine
        return mine

    def _refresh(self, loop: asyncio.AbstractEventLoop) -> None:
        # Connections close without a word to this site: unrefreshed, a worker whose clients
        # left still looks busy to the others when the next burst comes, and the worker that
        # wakes first takes most of it.
        self._publish_count()
        self._refresher = loop.call_later(REFRESH_S, self._refresh, loop)

    def _on_readable(self) -> None:
        loop = asyncio.get_running_loop()
        mine = self._publish_count()
        if mine > self._counts.least():
            now = loop.time()
            if self._waiting_since is None:
                self._waiting_since = now
            if now - self._waiting_since < MAX_WAIT_S:
                self._pause(loop)  # a less busy worker takes it
                return
        try:
            connection, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):  # another worker took it
            self._waiting_since = None
            return
        except OSError as exc:  # out of descriptors, say: try again shortly, and say so rarely
            self._accept_errors += 1
            if loop.time() - self._last_error_log >= ACCEPT_ERROR_LOG_S:
                log.warning(
                    "cannot accept connections: %s (%d time(s) since the last report); retrying every %g s",
                    exc.strerror or exc,
                    self._accept_errors,
                    ACCEPT_ERROR_RETRY_S,
                )
                self._last_error_log, self._accept_errors = loop.time(), 0
            self._pause(loop, ACCEPT_ERROR_RETRY_S)
            return
        self._waiting_since = None
        self._counts.counts[self._slot] = mine + 1
        connection.setblocking(False)
        server = self._runner.server
        assert server is not None
        task = loop.create_task(
            loop.connect_accepted_socket(functools.partial(_half_close_tolerant, server), connection)
        )
        self._connecting.add(task)
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[object]) -> None:
        self._connecting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("a connection failed as it was set up: %s", task.exception())

    def _pause(self, loop: asyncio.AbstractEventLoop, wait_s: float = RETRY_S) -> None:
        loop.remove_reader(self._sock.fileno())
        self._resume = loop.call_later(wait_s, self._listen_again, loop)

    def _listen_again(self, loop: asyncio.AbstractEventLoop) -> None:
        self._resume = None
        if not self._accepting:
            return
        if not select.select([self._sock], [], [], 0)[0]:
            self._waiting_since = None  # the connection it waited for was taken
        loop.add_reader(self._sock.fileno(), self._on_readable)
