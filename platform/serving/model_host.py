"""A model host: the processes that hold one model of a multi-model endpoint and answer for it.

Forked by the zygote when the model is loaded, the host loads the model folder, then forks its
replicas (SAGECRAFT_MODEL_PROCESSES, one per worker by default), which share the model's memory
copy-on-write as a single-model endpoint's workers do; each listens on a Unix socket of its own
and answers the invocations the front workers hand on (frames.py): decoding, prediction and
encoding are `invocation`'s own, so a model answers here exactly as on a single-model endpoint.
A model that crashes a process (a segfault or abort in a native library, `os._exit`, the kernel's
out-of-memory killer) takes only this model's processes with it: the first (the primary) ends
the others and dies of the same signal, which is what the parent sees. Their data is bounded by
what the memory budget had left at the load (`limit_data`): a model that allocates past it gets
a MemoryError in its own process, before the kernel would pick a process to kill.

The primary's control socket goes to the endpoint's parent (fleet.py): it says `ready` (with the
sockets) or `failed` (with the error) once the load ends, answers `stats` (requests in progress,
seconds idle, over every replica), and on `unload` has every replica finish its requests in
progress, then exits. Every process exits when the parent, or the primary, goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
import mmap
import os
import resource
import signal
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
from aiohttp import web

from ..environment import ServingSettings
from ..errors import InsufficientMemoryError, ModelLoadTimeoutError, SagecraftError
from ..loaded_model import LoadedModel
from ..plugins import PluginSet
from .appkeys import EXECUTOR, RUNTIME, SETTINGS, Runtime, Services
from .bodies import SPOOL_BYTES
from .frames import FrameProtocol, Head, connect_frames, encode
from .invocation import answer_forwarded
from .registry import ModelRegistry
from .request_format import RequestFormat, RequestFormats
from .zygote import exited_children

log = logging.getLogger(__name__)

# The kernel's out-of-memory killer picks the process with the highest score: a model host
# before the front workers and the parent, whose death would cost every model.
OOM_SCORE_ADJ = 500
# A frame's payload: a body or an answer up to SPOOL_BYTES travels in it, a larger one as a file.
MAX_FRAME_PAYLOAD = SPOOL_BYTES + 1024
REAP_S = 0.1  # how often the primary looks for a replica that has died
FLUSH_TIMEOUT_S = 10.0  # for the answers still buffered when a replica stops
# Address space a process takes beyond what its model holds, counted by RLIMIT_DATA though
# hardly touched: malloc's arenas, and a stack per thread (OpenMP's, one per core, and the
# predict threads). Measured: a small model's host and replicas grew by 20-25 MiB in all.
ARENA_ALLOWANCE = 128 << 20
DEFAULT_STACK = 8 << 20


def error_head(exc: BaseException) -> Head:
    """The frame head of an error, in the one error shape (status, type, message, headers)."""
    if isinstance(exc, SagecraftError):
        return {"status": exc.status, "kind": exc.kind, "message": str(exc), "headers": exc.headers or {}}
    return {"status": 500, "kind": "InternalError", "message": "internal error; the server log has details"}


def _raise_oom_score() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text(str(OOM_SCORE_ADJ))


def data_bytes() -> int:
    """This process's data (VmData: its heap and private writable mappings), from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def limit_data(room: int, threads_per_replica: int) -> int:
    """Bound this process and the replicas it forks to their data now plus `room` and what their
    threads take (RLIMIT_DATA, soft and hard, so that a plugin cannot lift it): past it an
    allocation fails in the process that makes it, as a MemoryError, and costs only this model.
    Called by the host before it loads; the limit set, in bytes."""
    stack, _ = resource.getrlimit(resource.RLIMIT_STACK)
    if stack == resource.RLIM_INFINITY or stack <= 0:
        stack = DEFAULT_STACK
    threads = (os.cpu_count() or 1) + threads_per_replica
    limit = data_bytes() + room + ARENA_ALLOWANCE + threads * stack
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return limit


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an error, or one it came from, is an allocation that failed (Python's MemoryError,
    or a native library's std::bad_alloc as XGBoost reports it)."""
    seen: BaseException | None = exc
    for _ in range(16):  # a chain of causes is short; never follow a cycle
        if seen is None:
            break
        if isinstance(seen, MemoryError) or "bad_alloc" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _load(folder: Path, timeout_s: float) -> LoadedModel:
    """The model, loaded in a thread bounded by `timeout_s` (a thread cannot be stopped: on a
    timeout the host reports it and exits, which ends the thread)."""
    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            outcome["model"] = LoadedModel.load(folder)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=load, name="load", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise ModelLoadTimeoutError(
            f"loading {folder} took longer than {timeout_s:g} s; raise SAGECRAFT_MODEL_LOAD_TIMEOUT "
            "if the model is that large"
        )
    if "error" in outcome:
        raise outcome["error"]
    return cast(LoadedModel, outcome["model"])


class _Counters:
    """Each replica's requests in progress and the time of its last one, in memory shared across
    the fork, so that the primary can answer `stats` for all of them."""

    def __init__(self, replicas: int) -> None:
        self._memory = mmap.mmap(-1, 16 * replicas)
        self.values = np.frombuffer(self._memory, np.float64).reshape(replicas, 2)
        self.values[:, 1] = time.monotonic()

    def stats(self) -> Head:
        return {
            "in_flight": int(self.values[:, 0].sum()),
            "idle_s": time.monotonic() - float(self.values[:, 1].max()),
        }


class _Replica:
    """One process of a model host: the model, its socket, its invocations."""

    def __init__(
        self,
        settings: ServingSettings,
        plugins: PluginSet,
        command: dict[str, Any],
        model: LoadedModel,
        counters: _Counters,
        index: int,
    ) -> None:
        self.name: str = command["name"]
        self.spool_dir: str = command["spool"]
        self.counters = counters.values[index]
        self.app = web.Application()  # holds what invocation reads; never served over HTTP
        self.app[SETTINGS] = settings
        self.app[RUNTIME] = Runtime()
        self.executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="predict")
        self.app[EXECUTOR] = self.executor
        types = plugins.content_types
        types.max_rows = settings.max_rows
        types.max_decoded_bytes = settings.max_decoded_bytes
        # The endpoint's memory budget counts every process; the parent enforces it.
        self.registry = ModelRegistry(self.executor, LoadedModel.load)
        self.registry.add_loaded(self.name, model, command["folder"])
        self.app[RUNTIME].services = Services(types, RequestFormats(types, settings), self.registry)
        self.stop = asyncio.get_running_loop().create_future()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.connections: set[FrameProtocol] = set()

    async def serve(self, listener: socket.socket) -> None:
        """Answer on `listener` until `stop` is set, then send what is still buffered: an answer
        written just before the stop must reach its front before the process exits."""
        server = await asyncio.get_running_loop().create_unix_server(self._connection, sock=listener)
        await self.stop
        server.close()
        for connection in self.connections:
            connection.close()  # a transport closes once its buffer is written
        closing = [connection.closed for connection in self.connections]
        if closing:
            await asyncio.wait(closing, timeout=FLUSH_TIMEOUT_S)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def finish(self) -> None:
        """Finish the requests in progress (new ones are answered 404)."""
        with contextlib.suppress(SagecraftError):
            await self.registry.unload(self.name)
        while self.tasks - {asyncio.current_task()}:  # answers still being written
            await asyncio.sleep(0.01)

    async def unload(self) -> None:
        await self.finish()
        self.end()

    def end(self) -> None:
        if not self.stop.done():
            self.stop.set_result(None)

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _connection(self) -> FrameProtocol:
        protocol: FrameProtocol

        def on_frame(head: Head, payload: bytes) -> None:
            self.spawn(self._answer(protocol, head, payload))

        protocol = FrameProtocol(on_frame, lambda: self.connections.discard(protocol), MAX_FRAME_PAYLOAD)
        self.connections.add(protocol)
        return protocol

    async def _answer(self, protocol: FrameProtocol, head: Head, payload: bytes) -> None:
        request_id = head.get("id")
        counters = self.counters
        counters[0] += 1
        counters[1] = time.monotonic()
        try:
            form = RequestFormat(head["content_type"], head["accept"], head.get("output"))
            body: bytes | IO[bytes] = payload
            if head.get("path"):
                body = _open_spooled(self.spool_dir, head["path"])
            result, content_type = await answer_forwarded(self.app, self.name, form, body, head["coding"])
            reply, data = self._reply(result)
            protocol.send({"id": request_id, "status": 200, "content_type": content_type, **reply}, data)
        except Exception as exc:
            if is_out_of_memory(exc):
                log.error("model '%s' ran out of memory answering a request: %r", self.name, exc)
                exc = SagecraftError(
                    f"model '{self.name}' ran out of memory answering this request: its processes may "
                    "grow by what the endpoint's memory budget had left when it loaded. Send fewer rows "
                    "a request, or unload models and load this one again"
                )
            elif not isinstance(exc, SagecraftError):
                log.exception("model '%s': an invocation failed", self.name)
            protocol.send({"id": request_id, **error_head(exc)})
        finally:
            counters[0] -= 1

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
    return open(os.path.join(spool_dir, name), "rb")


async def _serve_replica(replica_args: tuple[Any, ...], listener: socket.socket, primary_alive: int) -> int:
    """A replica other than the first: serves until told to unload (SIGUSR1) or orphaned."""
    loop = asyncio.get_running_loop()
    replica = _Replica(*replica_args)
    loop.add_signal_handler(signal.SIGUSR1, lambda: replica.spawn(replica.unload()))
    loop.add_reader(primary_alive, replica.end)  # readable only at EOF: the primary is gone
    await replica.serve(listener)
    return 0


class _Primary:
    """The first replica's other duties: the control socket and the other replicas."""

    def __init__(
        self, replica: _Replica, counters: _Counters, others: list[int], settings: ServingSettings
    ) -> None:
        self.replica = replica
        self.counters = counters
        self.others = set(others)
        self.settings = settings
        self.unloading = False
        self.control: FrameProtocol | None = None

    async def run(self, control: socket.socket, listener: socket.socket) -> int:
        self.control = await connect_frames(control, self._on_control, self.replica.end, 1 << 20)
        self.replica.spawn(self._watch())
        await self.replica.serve(listener)
        for pid in self.others:  # the parent went away: so do they (they see the pipe close too)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return 0

    def _on_control(self, head: Head, payload: bytes) -> None:
        if head.get("op") == "stats" and self.control is not None:
            self.control.send({"op": "stats", **self.counters.stats()})
        elif head.get("op") == "unload" and not self.unloading:
            self.unloading = True
            self.replica.spawn(self._unload())

    async def _unload(self) -> None:
        for pid in self.others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + self.settings.request_timeout_s + self.settings.shutdown_timeout_s
        await self.replica.finish()
        while self.others and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for pid in self.others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.control is not None:
            self.control.send({"op": "unloaded"})
        self.replica.end()

    async def _watch(self) -> None:
        # uvloop keeps SIGCHLD for itself: the replicas are looked at in turn instead.
        while self.others:
            self._reap()
            await asyncio.sleep(REAP_S)

    def _reap(self) -> None:
        for pid, status in exited_children():
            self.others.discard(pid)
            if not self.unloading:
                self._die_like(status)

    def _die_like(self, status: int) -> None:
        """A replica crashed: end the others, then die of the same signal (or exit with the
        same status), so that the parent sees how the model's process ended."""
        for pid in self.others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        logging.shutdown()
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            signal.signal(number, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {number})
            os.kill(os.getpid(), number)
        os._exit(os.waitstatus_to_exitcode(status) or 1)


def run_model_host(
    settings: ServingSettings, plugins: PluginSet, command: dict[str, Any], control: socket.socket
) -> int:
    """The zygote's `host` role: load the model, fork the replicas, serve until unloaded or
    orphaned; the exit status."""
    from .lifecycle import run_loop

    # A SIGTERM or Ctrl-C meant for the endpoint must not kill a model mid-answer: the parent
    # stops hosts itself, once the front workers have drained.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _raise_oom_score()
    room = int(command["room"])
    limit_data(room, settings.workers)
    started = time.monotonic()
    try:
        model = _load(Path(command["folder"]), settings.model_load_timeout_s)
    except Exception as exc:
        if is_out_of_memory(exc):
            exc = InsufficientMemoryError(
                f"model '{command['name']}' ran out of memory as it loaded: its processes may grow by "
                f"{room >> 20} MiB, what the endpoint's {int(command['budget']) >> 20} MiB budget had "
                "left. Unload a model, or raise SAGECRAFT_MEMORY_BUDGET_MB if the container has the memory"
            )
        elif not isinstance(exc, SagecraftError):
            log.exception("model '%s' could not load from %s", command["name"], command["folder"])
        control.sendall(encode({"op": "failed", **error_head(exc)}))
        return 0
    loaded_s = time.monotonic() - started
    replicas = max(1, settings.model_processes or settings.workers)
    listeners = []
    for index in range(replicas):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(f"{command['socket']}-{index}")
        listener.listen(128)
        listeners.append(listener)
    counters = _Counters(replicas)
    gc.freeze()  # the model never changes: keep the collector from copying its pages
    # Unloads are signalled: until its event loop handles SIGUSR1, a replica must not die of it.
    signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    primary_alive, primary_holds = os.pipe()
    others = []
    for index in range(1, replicas):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(primary_holds)
                control.close()
                arguments = (settings, plugins, command, model, counters, index)
                code = run_loop(_serve_replica(arguments, listeners[index], primary_alive))
            finally:
                logging.shutdown()
                os._exit(code)
        others.append(pid)
    os.close(primary_alive)
    sockets = [listener.getsockname() for listener in listeners]
    control.sendall(encode({"op": "ready", "seconds": loaded_s, "sockets": sockets}))

    async def main() -> int:
        replica = _Replica(settings, plugins, command, model, counters, 0)
        return await _Primary(replica, counters, others, settings).run(control, listeners[0])

    return run_loop(main())
