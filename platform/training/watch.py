"""The hosts' watch on each other while they train together, beside XGBoost's collective.

XGBoost's collective does not always notice that a host is gone. Measured with three hosts on one
machine (tests/test_several_hosts.py): after one host was killed mid-round, one survivor timed out
after `collective_timeout` while the other stayed blocked in XGBoost's ring allreduce for good,
its timeout not honoured there; a process that waits like that cannot be reached from Python. So
a job with several hosts also runs this watch: one TCP connection from every host to the first
host (the leader), on `cluster_port + 1`.

- Both ends of a connection send a heartbeat every second.
- A connection that closes before its host said "done" is a host that ended (killed, out of
  memory, crashed); a host failing on its own says "failed" first; nothing heard from a host for
  `collective_timeout` seconds is a host that stopped answering.
- The leader passes what it learns about one host on to every other host.
- A host that learns of a loss, or is failing itself, gives its main thread `grace` seconds to
  fail the usual way (the error raised, the collective left, output/failure written, exit 1);
  if the process is still there after that, the watch calls `end` with the error, which writes
  the failure and ends the process: its main thread may be waiting inside XGBoost for good.

A host says "done" once its part of the collective work (the fit) is over; from then on the
others' ends are none of its business, so a leader saving the model is never cut short.

What comes in is a peer's or a stranger's bytes: frames are 3 bytes (a kind and a host's rank);
a connection that does not introduce itself as a host of the job that is not yet connected is
closed, and unknown frames are ignored. (It is no authentication: a training job's hosts share a
network of their own, as XGBoost's tracker assumes too.)
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import ClusterError

log = logging.getLogger(__name__)

BEAT_S = 1.0
GRACE_S = 3.0
HELLO_TIMEOUT_S = 5.0
MAX_STRANGERS = 32  # connections not yet introduced, held at once: a flood cannot exhaust the fds
_FRAME = struct.Struct("!cH")  # kind, the rank of the host the frame is about

HELLO, BEAT, DONE, FAILED, ENDED, SILENT = b"h", b".", b"d", b"f", b"x", b"z"

Ending = Callable[[BaseException], None]


def watch_port(cluster_port: int) -> int:
    """The watch's port on the leader: the one after the tracker's (cluster_port is at most
    65534)."""
    return cluster_port + 1


@dataclass
class _Link:
    """The connection to one other host (on the leader: to a worker; on a worker: to the leader)."""

    rank: int
    sock: socket.socket | None = None
    heard: float = 0.0
    done: bool = False
    closed: bool = False
    pending: bytes = field(default=b"", repr=False)


class Watch:
    """One host's end of the watch. The leader calls `listen` before its tracker starts; every
    host calls `begin` once it has joined XGBoost's collective, `done` when its fit returned,
    `failing` when it is failing, and `close` last."""

    def __init__(
        self,
        hosts: Sequence[str],
        rank: int,
        *,
        leader_address: str,
        port: int,
        silence: float,
        end: Ending,
        grace: float = GRACE_S,
        beat: float = BEAT_S,
    ) -> None:
        self.hosts, self.rank = tuple(hosts), rank
        self._address, self._port = leader_address, port
        self._silence, self._grace, self._beat = silence, grace, beat
        self._end = end
        self._stage: Callable[[], str] = lambda: "while training"
        self._lock = threading.Lock()  # sends, and the state the main thread sets
        self._selector = selectors.DefaultSelector()
        self._server: socket.socket | None = None
        self._strangers: dict[socket.socket, tuple[float, bytes]] = {}
        self._links: dict[int, _Link] = {}
        self._departure: str | None = None
        self._news: tuple[bytes, int] | None = None  # the departure as a frame, for late comers
        self._learned = threading.Event()
        self._own_error: BaseException | None = None
        self._end_at: float | None = None
        self._done = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def departure(self) -> str | None:
        """What this host learned about another host's end (the first one), or None."""
        return self._departure

    def wait_departure(self, timeout: float) -> str | None:
        """The departure, waiting up to `timeout` seconds for news of one."""
        self._learned.wait(timeout)
        return self._departure

    def listen(self) -> None:
        """On the leader: bind the watch's port (before the tracker starts, so that the others
        find it listening). Raises ClusterError when the port is taken."""
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind((self._address, self._port))
        except OSError as exc:
            server.close()
            raise ClusterError(
                f"the hosts' watch could not listen on {self.hosts[0]} ({self._address}:{self._port}, "
                f"cluster_port + 1): {exc.strerror or exc}; is the port free?"
            ) from None
        server.listen(len(self.hosts) + MAX_STRANGERS)
        server.setblocking(False)
        self._server = server
        self._selector.register(server, selectors.EVENT_READ, self._accept)

    def begin(self, stage: Callable[[], str], deadline: float) -> None:
        """Start watching, once this host has joined the collective: a worker connects to the
        leader (trying again until `deadline`); `stage` says what the job is doing, for the
        messages. Raises ClusterError when the leader cannot be reached."""
        self._stage = stage
        now = time.monotonic()
        if self.rank == 0:
            self._links = {r: _Link(r, heard=now) for r in range(1, len(self.hosts))}
        else:
            link = _Link(0, sock=self._connect(deadline), heard=now)
            self._links = {0: link}
            self._send(link, HELLO, self.rank)
            self._selector.register(link.sock, selectors.EVENT_READ, link)  # type: ignore[arg-type]
        self._thread = threading.Thread(target=self._run, name="sagecraft-watch", daemon=True)
        self._thread.start()

    def done(self) -> None:
        """This host's collective work is over: tell the others, and stop caring about theirs."""
        with self._lock:
            self._done = True
            self._end_at = None
        for link in list(self._links.values()):
            self._send(link, DONE, self.rank)

    def failing(self, exc: BaseException) -> None:
        """This host is failing with `exc`: tell the others, and end within the grace period
        should leaving the collective never return."""
        with self._lock:
            if self._done:
                return
            self._own_error = exc
            self._arm()
        for link in list(self._links.values()):
            self._send(link, FAILED, self.rank)

    def close(self) -> None:
        """Stop watching (the job is over on this host, one way or the other)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(2 * self._beat + 1)
        for link in self._links.values():
            if link.sock is not None:
                link.sock.close()
        for sock in self._strangers:
            sock.close()
        if self._server is not None:
            self._server.close()
        self._selector.close()

    # The watch's own thread from here on.

    def _connect(self, deadline: float) -> socket.socket:
        while True:
            try:
                sock = socket.create_connection((self._address, self._port), timeout=5)
                sock.settimeout(5)  # a send never blocks for long, even to a stopped host
                return sock
            except OSError as exc:
                if time.monotonic() + 0.2 > deadline:
                    raise ClusterError(
                        f"host {self.hosts[self.rank]} could not reach the hosts' watch on "
                        f"{self.hosts[0]} ({self._address}:{self._port}, cluster_port + 1): "
                        f"{exc.strerror or exc}"
                    ) from None
                time.sleep(0.2)

    def _run(self) -> None:
        next_beat = 0.0
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=min(0.5, self._beat)):
                if isinstance(key.data, _Link):
                    self._read(key.data)
                else:
                    key.data()
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self._beat
                for link in list(self._links.values()):
                    self._send(link, BEAT, self.rank)
            self._check(now)
            with self._lock:
                due = self._end_at is not None and now >= self._end_at and not self._done
                error = self._own_error or ClusterError(self._departure or "another host failed")
            if due:
                self._end(error)
                return

    def _accept(self) -> None:
        assert self._server is not None
        try:
            sock, _ = self._server.accept()
        except OSError:
            return
        sock.settimeout(5)
        self._strangers[sock] = (time.monotonic(), b"")
        self._selector.register(sock, selectors.EVENT_READ, lambda: self._introduce(sock))
        if len(self._strangers) >= MAX_STRANGERS:
            # Stop accepting until some leave (said who they are, or timed out): the next ones
            # wait in the kernel's queue, and a host of the job retries until it is let in.
            self._selector.unregister(self._server)

    def _forget(self, sock: socket.socket) -> None:
        """A connection is no longer a stranger: accept again if the cap had stopped it."""
        self._selector.unregister(sock)
        del self._strangers[sock]
        if self._server is not None and len(self._strangers) == MAX_STRANGERS - 1:
            self._selector.register(self._server, selectors.EVENT_READ, self._accept)

    def _introduce(self, sock: socket.socket) -> None:
        """A new connection on the leader: it must say which host it is, once."""
        since, pending = self._strangers[sock]
        data = _receive(sock)
        pending += data or b""
        if data and len(pending) < _FRAME.size:
            self._strangers[sock] = (since, pending)
            return
        self._forget(sock)
        if not data:
            sock.close()
            return
        kind, rank = _FRAME.unpack(pending[: _FRAME.size])
        link = self._links.get(rank)
        if kind != HELLO or link is None or link.sock is not None or link.closed:
            log.warning("the hosts' watch: refused a connection that is not a host of the job waited for")
            sock.close()
            return
        link.sock, link.heard = sock, time.monotonic()
        link.pending = pending[_FRAME.size :]
        self._selector.register(sock, selectors.EVENT_READ, link)
        if self._news is not None and self._news[1] != rank:
            self._send(link, *self._news)  # a host that connects after the news still hears it
        self._frames(link)

    def _read(self, link: _Link) -> None:
        data = _receive(link.sock)  # type: ignore[arg-type]
        if not data:
            self._gone(link)
            return
        link.pending += data
        link.heard = time.monotonic()
        self._frames(link)

    def _frames(self, link: _Link) -> None:
        while len(link.pending) >= _FRAME.size:
            kind, subject = _FRAME.unpack(link.pending[: _FRAME.size])
            link.pending = link.pending[_FRAME.size :]
            if subject == link.rank:
                if kind == DONE:
                    link.done = True
                elif kind == FAILED:
                    self._lost(link.rank, FAILED)
            elif self.rank != 0 and kind in (FAILED, ENDED, SILENT) and 0 < subject < len(self.hosts):
                self._lost(subject, kind)  # the leader's news of another host

    def _gone(self, link: _Link) -> None:
        assert link.sock is not None
        self._selector.unregister(link.sock)
        with self._lock:
            link.sock.close()
            link.sock, link.closed = None, True
        if not link.done:
            self._lost(link.rank, ENDED)

    def _check(self, now: float) -> None:
        for link in self._links.values():
            if not link.done and not link.closed and now - link.heard > self._silence:
                link.closed = True
                self._lost(link.rank, SILENT)
        for sock, (since, _) in list(self._strangers.items()):
            if now - since > HELLO_TIMEOUT_S:
                self._forget(sock)
                sock.close()

    def _lost(self, rank: int, how: bytes) -> None:
        """Another host's end: remember the first, pass it on (the leader), end after the grace."""
        with self._lock:
            if self._done or self._departure is not None:
                return
            self._departure = self._message(rank, how)
            self._news = (how, rank)
            self._arm()
        log.error("%s", self._departure)
        self._learned.set()
        if self.rank == 0:
            for other in list(self._links.values()):
                if other.rank != rank:
                    self._send(other, how, rank)

    def _message(self, rank: int, how: bytes) -> str:
        host = f"host {self.hosts[rank]} of {len(self.hosts)}"
        stage = self._stage()
        if how == FAILED:
            return f"{host} failed {stage}; its log and failure reason say why"
        if how == SILENT:
            return (
                f"{host} stopped answering {stage}: nothing heard from it for "
                f"{self._silence:g} s (collective_timeout); was it stopped, overloaded or cut off?"
            )
        return (
            f"{host} ended {stage}: its process is gone (killed, out of memory or crashed); its log says why"
        )

    def _arm(self) -> None:
        end_at = time.monotonic() + self._grace
        self._end_at = end_at if self._end_at is None else min(self._end_at, end_at)

    def _send(self, link: _Link, kind: bytes, subject: int) -> None:
        with self._lock:
            if link.sock is None:
                return
            try:
                link.sock.sendall(_FRAME.pack(kind, subject))
            except OSError as exc:
                log.debug("the hosts' watch: sending to %s: %s", self.hosts[link.rank], exc)


def _receive(sock: socket.socket) -> bytes:
    try:
        return sock.recv(256)
    except OSError:
        return b""
