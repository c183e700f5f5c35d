"""A model host: the process that holds one model of a multi-model endpoint and answers for it.

Forked by the zygote when the model is loaded, it loads the model folder, listens on a Unix
socket of its own, and answers the invocations the front workers hand on (frames.py): decoding,
prediction and encoding are `invocation`'s own, so a model answers here exactly as on a
single-model endpoint. A model that crashes its process (a segfault or abort in a native
library, `os._exit`, the kernel's out-of-memory killer) takes only this process with it.

Its control socket goes to the endpoint's parent (fleet.py): the host says `ready` (or `failed`,
with the error) once the load ends, answers `stats` (requests in progress, seconds idle), and on
`unload` finishes the requests in progress, then exits. It exits too if the parent goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from ..environment import ServingSettings
from ..errors import SagecraftError
from ..loaded_model import LoadedModel
from ..plugins import PluginSet
from .appkeys import EXECUTOR, RUNTIME, SETTINGS, Runtime, Services
from .bodies import SPOOL_BYTES
from .frames import FrameProtocol, Head, connect_frames
from .invocation import answer_forwarded
from .registry import ModelRegistry
from .request_format import RequestFormat, RequestFormats

log = logging.getLogger(__name__)

# The kernel's out-of-memory killer picks the process with the highest score: a model host
# before the front workers and the parent, whose death would cost every model.
OOM_SCORE_ADJ = 500
# A frame's payload: a body or an answer up to SPOOL_BYTES travels in it, a larger one as a file.
MAX_FRAME_PAYLOAD = SPOOL_BYTES + 1024


def error_head(exc: BaseException) -> Head:
    """The frame head of an error, in the one error shape (status, type, message, headers)."""
    if isinstance(exc, SagecraftError):
        return {"status": exc.status, "kind": exc.kind, "message": str(exc), "headers": exc.headers or {}}
    return {"status": 500, "kind": "InternalError", "message": "internal error; the server log has details"}


def _raise_oom_score() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text(str(OOM_SCORE_ADJ))


class ModelHost:
    """One loaded model and its connections (see the module's docstring)."""

    def __init__(self, settings: ServingSettings, plugins: PluginSet, command: dict[str, Any]) -> None:
        self.name: str = command["name"]
        self.folder = Path(command["folder"])
        self.socket_path: str = command["socket"]
        self.spool_dir: str = command["spool"]
        self.app = web.Application()  # holds what invocation reads; never served over HTTP
        self.app[SETTINGS] = settings
        self.app[RUNTIME] = Runtime()
        self.executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="predict")
        self.app[EXECUTOR] = self.executor
        types = plugins.content_types
        types.max_rows = settings.max_rows
        types.max_decoded_bytes = settings.max_decoded_bytes
        # The endpoint's memory budget counts every process; the parent enforces it.
        self.registry = ModelRegistry(
            self.executor, LoadedModel.load, load_timeout_s=settings.model_load_timeout_s
        )
        self.app[RUNTIME].services = Services(types, RequestFormats(types, settings), self.registry)
        self.stop = asyncio.get_running_loop().create_future()
        self.tasks: set[asyncio.Task[None]] = set()
        self.control: FrameProtocol | None = None

    async def run(self, control_socket: socket.socket) -> int:
        self.control = await connect_frames(control_socket, self._on_control, self._on_control_lost, 1 << 20)
        started = time.monotonic()
        try:
            await self.registry.load(self.name, self.folder)
        except Exception as exc:
            if not isinstance(exc, SagecraftError):
                log.exception("model '%s' could not load from %s", self.name, self.folder)
            self.control.send({"op": "failed", **error_head(exc)})
            await self._flush_control()
            return 0
        server = await asyncio.get_running_loop().create_unix_server(self._connection, path=self.socket_path)
        self.control.send({"op": "ready", "seconds": time.monotonic() - started})
        await self.stop
        server.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        return 0

    async def _flush_control(self) -> None:
        if self.control is not None:
            self.control.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.control.closed, 5)

    # --- control, from the parent -------------------------------------------------------------

    def _on_control(self, head: Head, payload: bytes) -> None:
        op = head.get("op")
        if op == "stats":
            entry = self.registry.entries.get(self.name)
            idle = time.monotonic() - entry.last_used if entry else 0.0
            busy = entry.in_flight if entry else 0
            self._reply_control({"op": "stats", "in_flight": busy + len(self.tasks), "idle_s": idle})
        elif op == "unload":
            self._spawn(self._unload())

    def _reply_control(self, head: Head) -> None:
        if self.control is not None:
            self.control.send(head)

    async def _unload(self) -> None:
        with contextlib.suppress(SagecraftError):
            await self.registry.unload(self.name)  # waits for the requests in progress
        while self.tasks - {asyncio.current_task()}:  # answers still being written
            await asyncio.sleep(0.01)
        self._reply_control({"op": "unloaded"})
        if not self.stop.done():
            self.stop.set_result(None)

    def _on_control_lost(self) -> None:
        if not self.stop.done():
            self.stop.set_result(None)

    # --- invocations, from the front workers --------------------------------------------------

    def _connection(self) -> FrameProtocol:
        protocol: FrameProtocol

        def on_frame(head: Head, payload: bytes) -> None:
            self._spawn(self._answer(protocol, head, payload))

        protocol = FrameProtocol(on_frame, lambda: None, MAX_FRAME_PAYLOAD)
        return protocol

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, protocol: FrameProtocol, head: Head, payload: bytes) -> None:
        request_id = head.get("id")
        try:
            form = RequestFormat(head["content_type"], head["accept"], head.get("output"))
            body: bytes | IO[bytes] = payload
            if head.get("path"):
                body = _open_spooled(self.spool_dir, head["path"])
            result, content_type = await answer_forwarded(self.app, self.name, form, body, head["coding"])
            reply, data = self._reply(result)
            protocol.send({"id": request_id, "status": 200, "content_type": content_type, **reply}, data)
        except Exception as exc:
            if not isinstance(exc, SagecraftError):
                log.exception("model '%s': an invocation failed", self.name)
            protocol.send({"id": request_id, **error_head(exc)})

    def _reply(self, result: bytes | IO[bytes]) -> tuple[Head, bytes]:
        """An answer goes back in the frame up to SPOOL_BYTES, as a spool file beyond."""
        if isinstance(result, bytes):
            return {}, result
        with result:
            size = result.seek(0, io.SEEK_END)
            result.seek(0)
            if size <= SPOOL_BYTES:
                return {}, result.read()
            descriptor, path = tempfile.mkstemp(dir=self.spool_dir, prefix="answer-")
            with os.fdopen(descriptor, "wb") as out:
                while chunk := result.read(1 << 20):
                    out.write(chunk)
            return {"path": os.path.basename(path)}, b""


def _open_spooled(spool_dir: str, name: object) -> IO[bytes]:
    """A spooled body by its name in the spool folder (a bare name: never a path elsewhere)."""
    if not isinstance(name, str) or os.path.basename(name) != name or not name:
        raise SagecraftError("a spooled body's name is not a file name")
    handle = open(os.path.join(spool_dir, name), "rb")  # noqa: SIM115 (returned)
    return handle


def run_model_host(
    settings: ServingSettings, plugins: PluginSet, command: dict[str, Any], control: socket.socket
) -> int:
    """The zygote's `host` role: serve one model until unloaded or orphaned; the exit status."""
    from .lifecycle import run_loop

    # A SIGTERM or Ctrl-C meant for the endpoint must not kill a model mid-answer: the parent
    # stops hosts itself, once the front workers have drained.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _raise_oom_score()

    async def main() -> int:
        return await ModelHost(settings, plugins, command).run(control)

    return run_loop(main())
