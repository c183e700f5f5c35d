"""A multi-model endpoint's front worker: HTTP in, each invocation handed to its model's host.

A front holds no model. It reads and checks each request as a single-model endpoint does (the
limits, the headers, the body), sends the model API's calls to the parent (fleet.py), and hands
each invocation to the model's host (model_host.py) over one Unix-socket connection per model,
on which many requests are in flight at once. A body or an answer larger than SPOOL_BYTES goes
through a file in the endpoint's private spool folder instead of the socket.

When a host dies, the requests it held are answered 500, naming the model and how its process
ended; the next requests wait for the parent's reload (within their own time limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import tempfile
from functools import partial
from typing import IO, Any

from aiohttp import web

from ..environment import ServingSettings
from ..errors import (
    ForwardedError,
    ModelCrashedError,
    NotReadyError,
    OverloadedError,
    PredictionTimeoutError,
    RequestTimeoutError,
    SagecraftError,
)
from ..loaded_model import LoadedModel
from ..plugins import PluginSet
from .appkeys import EXECUTOR, RUNTIME, SETTINGS, Services
from .balanced_accept import ConnectionCounts
from .bodies import READ_CHUNK, SPOOL_BYTES, declared_length, too_large
from .content_encoding import content_coding
from .frames import FrameProtocol, Head, connect_frames
from .invocation import send_answer
from .model_host import MAX_FRAME_PAYLOAD
from .registry import ModelRegistry
from .request_format import TARGET_MODEL, RequestFormats, check_header_length

SWEEP_S = 0.1  # how often requests past their time limit are looked for
CONTROL_PAYLOAD = 1 << 20


def _forwarded(head: Head) -> ForwardedError:
    return ForwardedError(
        int(head.get("status", 500)),
        str(head.get("kind", "InternalError")),
        str(head.get("message", "internal error")),
        head.get("headers") or None,
    )


class HostLink:
    """The connections to a model's host, one per replica, carrying many requests at once; each
    request goes to the connection with the fewest in flight."""

    def __init__(self, client: FleetClient, name: str, generation: int) -> None:
        self.client = client
        self.name = name
        self.generation = generation
        self.ids = itertools.count(1)
        self.pending: dict[int, tuple[asyncio.Future[tuple[Head, bytes]], float]] = {}
        self.protocols: list[FrameProtocol] = []
        self.busy: list[int] = []  # requests in flight on each connection
        self.on: dict[int, int] = {}  # request id -> its connection
        self.lost = False

    async def connect(self, sockets: list[str]) -> None:
        loop = asyncio.get_running_loop()
        for path in sockets:
            on_lost = partial(self._on_lost, len(self.protocols))
            protocol = FrameProtocol(self._on_frame, on_lost, MAX_FRAME_PAYLOAD)
            await loop.create_unix_connection(lambda p=protocol: p, path)  # type: ignore[misc]
            self.protocols.append(protocol)
            self.busy.append(0)

    @property
    def open(self) -> bool:
        return not self.lost and bool(self.protocols)

    def request(self, head: Head, payload: bytes, deadline: float) -> asyncio.Future[tuple[Head, bytes]]:
        request_id = next(self.ids)
        answer = asyncio.get_running_loop().create_future()
        busy = self.busy
        connection = busy.index(min(busy))
        head["id"] = request_id
        if not self.protocols[connection].send(head, payload):
            answer.set_exception(NotReadyError(f"model '{self.name}' is being reloaded; retry shortly"))
            return answer
        self.pending[request_id] = (answer, deadline)
        self.on[request_id] = connection
        busy[connection] += 1
        return answer

    def _done(self, request_id: int) -> tuple[asyncio.Future[tuple[Head, bytes]], float] | None:
        waiting = self.pending.pop(request_id, None)
        connection = self.on.pop(request_id, None)
        if connection is not None:
            self.busy[connection] -= 1
        return waiting

    def _on_frame(self, head: Head, payload: bytes) -> None:
        waiting = self._done(head.get("id"))  # type: ignore[arg-type]
        if waiting is not None and not waiting[0].done():
            waiting[0].set_result((head, payload))

    def close(self) -> None:
        self.lost = True
        if self.client.links.get(self.name) is self:
            del self.client.links[self.name]
        for protocol in self.protocols:
            protocol.close()

    def _on_lost(self, connection: int) -> None:
        """One connection ended: the host is going away, so no new request comes to this link.
        Its replicas end one by one (an unload's idle ones first, a crash's all at once): the
        requests in flight on this connection are answered with what became of the host, those
        on the others still get their answers."""
        self.lost = True
        if self.client.links.get(self.name) is self:
            del self.client.links[self.name]
        gone = {rid: waiting for rid, waiting in self.pending.items() if self.on.get(rid) == connection}
        for request_id in gone:
            self._done(request_id)
        if gone:
            self.client.spawn(self._fail(gone))

    async def _fail(self, pending: dict[int, tuple[asyncio.Future[tuple[Head, bytes]], float]]) -> None:
        """The host went away with requests in flight: each is answered with what became of it."""
        try:
            message = str(
                (await self.client.call("lost", name=self.name, generation=self.generation))["message"]
            )
        except SagecraftError:
            message = f"model '{self.name}' stopped while answering this request"
        for answer, _ in pending.values():
            if not answer.done():
                answer.set_exception(ModelCrashedError(message))

    def sweep(self, now: float) -> None:
        for request_id, (answer, deadline) in list(self.pending.items()):
            if deadline <= now:
                self._done(request_id)
                if not answer.done():
                    answer.set_exception(PredictionTimeoutError(""))


class FleetClient:
    """A front's side of the endpoint: its calls to the parent, its links to the hosts."""

    def __init__(self, settings: ServingSettings, spool_dir: str, stop: asyncio.Event) -> None:
        self.settings = settings
        self.spool_dir = spool_dir
        self.stop = stop
        self.ids = itertools.count(1)
        self.calls: dict[int, asyncio.Future[Head]] = {}
        self.links: dict[str, HostLink] = {}
        self.connecting: dict[str, asyncio.Future[HostLink]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.control: FrameProtocol | None = None

    async def connect(self, control: socket.socket) -> None:
        self.control = await connect_frames(control, self._on_control, self._on_control_lost, CONTROL_PAYLOAD)
        self.spawn(self._sweep())

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def call(self, op: str, **fields: Any) -> Head:
        """A call to the parent; its result, or its error raised here."""
        call_id = next(self.ids)
        answer = asyncio.get_running_loop().create_future()
        self.calls[call_id] = answer
        if self.control is None or not self.control.send({"op": op, "id": call_id, **fields}):
            del self.calls[call_id]
            raise NotReadyError("the endpoint is stopping")
        head = await answer
        if not head.get("ok"):
            raise _forwarded(head)
        return head

    def _on_control(self, head: Head, payload: bytes) -> None:
        if "id" in head:
            answer = self.calls.pop(head["id"], None)
            if answer is not None and not answer.done():
                answer.set_result(head)
        elif head.get("op") == "forget":
            # The host finishes what it holds and closes the connection itself.
            self.links.pop(str(head.get("name")), None)

    def _on_control_lost(self) -> None:
        calls, self.calls = self.calls, {}
        for answer in calls.values():
            if not answer.done():
                answer.set_exception(NotReadyError("the endpoint is stopping"))
        self.stop.set()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_S)
            now = loop.time()
            for link in list(self.links.values()):
                link.sweep(now)

    async def link(self, name: str) -> HostLink:
        """The connection to `name`'s host: the one open, else a new one (waiting for a load or
        a reload in progress); one connection at a time is made per model."""
        link = self.links.get(name)
        if link is not None and link.open:
            return link
        connecting = self.connecting.get(name)
        if connecting is None:
            connecting = asyncio.get_running_loop().create_future()
            self.connecting[name] = connecting
            self.spawn(self._connect(name, connecting))
        return await asyncio.shield(connecting)

    async def _connect(self, name: str, connecting: asyncio.Future[HostLink]) -> None:
        try:
            where = await self.call("where", name=name)
            link = HostLink(self, name, int(where["generation"]))
            try:
                await link.connect([str(path) for path in where["sockets"]])
            except OSError:
                link.close()
                raise NotReadyError(f"model '{name}' is being reloaded; retry shortly") from None
            self.links[name] = link
            connecting.set_result(link)
        except BaseException as exc:
            connecting.set_exception(exc)
            connecting.exception()
        finally:
            self.connecting.pop(name, None)


async def _read(request: web.Request, limit: int, spool_dir: str) -> bytes | str:
    """The body: bytes up to SPOOL_BYTES, else the name of a file in the spool folder."""
    length = declared_length(request, limit)
    if length is not None and length <= SPOOL_BYTES:
        return await request.read()
    descriptor, path = tempfile.mkstemp(dir=spool_dir, prefix="body-")
    total = 0
    try:
        with os.fdopen(descriptor, "wb") as out:
            async for chunk in request.content.iter_chunked(READ_CHUNK):
                total += len(chunk)
                if total > limit:
                    raise too_large(limit)
                out.write(chunk)
    except BaseException:
        os.unlink(path)
        raise
    return os.path.basename(path)


async def routed_invoke(request: web.Request, model_name: str) -> web.StreamResponse:
    """Answer one invocation of `model_name` through its host, under the same limits as
    `invocation.invoke`: at most `max_concurrent_requests` held (503), `request_timeout_s` for
    the body to arrive (408) and for the answer (504)."""
    settings, runtime = request.app[SETTINGS], request.app[RUNTIME]
    services, fleet = runtime.ready(), runtime.fleet
    if fleet is None:
        raise NotReadyError("the server is still starting")
    if runtime.in_flight >= settings.max_concurrent_requests:
        raise OverloadedError(
            f"this worker is answering {runtime.in_flight} requests, its limit "
            "(SAGECRAFT_MAX_CONCURRENT_REQUESTS); retry shortly"
        )
    runtime.in_flight += 1
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.request_timeout_s
    spooled: str | None = None
    try:
        check_header_length(TARGET_MODEL, request.headers.get(TARGET_MODEL))
        form = services.formats.of(request.headers)
        coding = content_coding(request.headers.get("Content-Encoding"))
        try:
            # A body that has arrived whole needs no timer (a timer per request costs about a
            # tenth of the single-row throughput, see invocation.py).
            arrived = request.content.is_eof() and request.content_length is not None
            async with contextlib.nullcontext() if arrived else asyncio.timeout_at(deadline):
                body = await _read(request, settings.max_payload_bytes, fleet.spool_dir)
        except TimeoutError:
            raise RequestTimeoutError(
                f"the body did not arrive within {settings.request_timeout_s:g} s (SAGECRAFT_REQUEST_TIMEOUT)"
            ) from None
        head: Head = {
            "content_type": form.content_type,
            "accept": form.accept,
            "output": form.output,
            "coding": coding,
        }
        payload = b""
        if isinstance(body, str):
            spooled = head["path"] = body
        else:
            payload = body
        link = fleet.links.get(model_name)
        if link is None or not link.open:
            try:
                async with asyncio.timeout_at(deadline):
                    link = await fleet.link(model_name)
            except TimeoutError:
                raise PredictionTimeoutError(_late(settings)) from None
        try:
            reply, data = await link.request(head, payload, deadline)
        except PredictionTimeoutError:
            raise PredictionTimeoutError(_late(settings)) from None
        if reply.get("status") != 200:
            raise _forwarded(reply)
        result: bytes | IO[bytes] = data
        if reply.get("path"):
            result = _take_spooled(fleet.spool_dir, reply["path"])
        return await send_answer(request, result, str(reply["content_type"]))
    finally:
        runtime.in_flight -= 1
        if spooled is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(fleet.spool_dir, spooled))


def _late(settings: ServingSettings) -> str:
    return (
        f"the prediction did not finish within {settings.request_timeout_s:g} s "
        "(SAGECRAFT_REQUEST_TIMEOUT); send fewer rows per request"
    )


def _take_spooled(spool_dir: str, name: object) -> IO[bytes]:
    """A host's spooled answer, opened and unlinked (it lives on while open)."""
    if not isinstance(name, str) or not name or os.path.basename(name) != name:
        raise SagecraftError("a model host answered with a spool file that is not a file name")
    path = os.path.join(spool_dir, name)
    handle = open(path, "rb")  # noqa: SIM115 (returned)
    os.unlink(path)
    return handle


def run_front(
    settings: ServingSettings,
    listener: socket.socket,
    plugins: PluginSet,
    counts: ConnectionCounts,
    spool_dir: str,
    command: dict[str, Any],
    control: socket.socket,
) -> int:
    """The zygote's `front` role: serve HTTP on the shared listener until SIGTERM or until the
    parent goes away; the exit status."""
    from .lifecycle import run_app, run_loop

    slot = int(command["slot"])

    async def main() -> int:
        stop = asyncio.Event()
        client = FleetClient(settings, spool_dir, stop)

        async def start(app: web.Application) -> None:
            await client.connect(control)
            types = plugins.content_types
            types.max_rows = settings.max_rows
            types.max_decoded_bytes = settings.max_decoded_bytes
            # A front holds no model: its registry stays empty.
            registry = ModelRegistry(app[EXECUTOR], LoadedModel.load)
            app[RUNTIME].fleet = client
            app[RUNTIME].services = Services(types, RequestFormats(types, settings), registry)

        return await run_app(settings, listener, start, stop=stop, balance=(counts, slot))

    return run_loop(main())
