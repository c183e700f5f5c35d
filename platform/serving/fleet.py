"""The parent of a multi-model endpoint: its front workers, its model hosts, and its model API.

The design (measured and argued in the README's multi-model section):
- **front workers** (SAGEMAKER_MODEL_SERVER_WORKERS, one per core by default) take the HTTP
  connections in turn, as a single-model endpoint's workers do, read and check each request, and
  hand each invocation to the model's host over a Unix socket (routed.py);
- **one model host per model** (model_host.py) loads the model and answers for it in as many
  processes as there are workers (sharing its memory), so a model that kills its process kills
  nothing else;
- **this parent** owns the model API's state: it starts a host per load (forked by the zygote,
  zygote.py), tells the fronts where each model is, counts the memory of every process against
  the budget, evicts idle models, replaces a front or a host that dies and, for a host, reloads its
  model (marked failed after MAX_CRASHES deaths within CRASH_WINDOW_S).

The fronts send the model API's calls (load, unload, describe, list) and their questions (where a
model is, why its host went away) to the parent as frames on their control sockets; every call is
answered by a frame with the call's id, `ok`, and the result or the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import itertools
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from ..environment import ServingSettings
from ..errors import (
    ForwardedError,
    InsufficientMemoryError,
    ModelAlreadyLoadedError,
    ModelCrashedError,
    ModelLoadTimeoutError,
    ModelNotFoundError,
    SagecraftError,
)
from ..flat_trees import compile_walk
from ..memory import container_memory_bytes, folder_bytes, rss_bytes
from ..plugins import installed_plugins
from .balanced_accept import ConnectionCounts
from .frames import FrameProtocol, Head, connect_frames
from .model_host import error_head, run_model_host
from .zygote import MAX_MESSAGE, Role, start_zygote

log = logging.getLogger(__name__)

MAX_CRASHES = 3
CRASH_WINDOW_S = 60.0
# In memory a model takes a few times its folder's size (skops files are compressed), and its
# process what it writes to the pages it shares with the zygote (measured: 15-25 MiB).
LOAD_SIZE_FACTOR = 3
HOST_BYTES = 16 << 20
CONTROL_PAYLOAD = 1 << 20
STATS_TIMEOUT_S = 2.0
# How long a front asking why a host went away waits for its exit status.
EXIT_WAIT_S = 2.0
ENDED_KEPT = 256
RESIGNAL_S = 1.0


def memory_budget(settings: ServingSettings) -> int:
    """The endpoint's memory budget: as configured, else 85% of the container's memory."""
    if settings.memory_budget_bytes is not None:
        return settings.memory_budget_bytes
    return int(container_memory_bytes() * 0.85)


def pss_bytes(pid: int) -> int:
    """A process's proportional memory (shared pages divided among their sharers), from /proc:
    the sum over processes counts memory shared copy-on-write once. 0 for a process gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return rss_bytes(pid)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except OSError:
        return []


def describe_exit(info: dict[str, int]) -> str:
    """How a process ended, in words: 'killed by SIGSEGV', 'exited with status 3'."""
    if "signal" in info:
        number = info["signal"]
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        text = f"killed by {name}"
        if number == signal.SIGKILL:
            text += " (as the kernel's out-of-memory killer does when memory runs out)"
        return text
    return f"exited with status {info.get('code')}"


@dataclass(eq=False)
class Host:
    """One model host process, from its start to its exit."""

    name: str
    generation: int
    socket_path: str
    ready: asyncio.Future[Head]
    exited: asyncio.Future[dict[str, int]]
    pid: int = 0
    link: FrameProtocol | None = None
    stats: list[asyncio.Future[Head]] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)  # one per replica, once ready

    def pids(self) -> list[int]:
        """The host's processes: the primary and its replicas."""
        return [self.pid, *_children(self.pid)] if self.pid and not self.exited.done() else []

    def memory(self) -> int:
        return sum(pss_bytes(pid) for pid in self.pids())

    def kill(self) -> None:
        if self.pid and not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


@dataclass(eq=False)
class Model:
    """A model of the endpoint: loading, ready, reloading (its host died), failed, unloading."""

    name: str
    url: str
    folder: Path
    state: str = "loading"
    host: Host | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # set unless loading/reloading
    load_seconds: float | None = None
    crashes: list[float] = field(default_factory=list)
    failure: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "modelName": self.name,
            "modelUrl": self.url,
            "state": self.state,
            "loadSeconds": self.load_seconds,
            "memoryBytes": self.host.memory() if self.host else 0,
            "crashes": len(self.crashes),
            **({"failure": self.failure} if self.failure else {}),
        }


@dataclass(eq=False)
class Front:
    slot: int
    pid: int
    link: FrameProtocol


class Fleet:
    """The parent's state and the model API's rules (see the module's docstring)."""

    def __init__(
        self, settings: ServingSettings, zygote_pid: int, zygote: socket.socket, spool_dir: str
    ) -> None:
        self.settings = settings
        self.budget = memory_budget(settings)
        self.zygote_pid = zygote_pid
        self.zygote = zygote
        self.spool_dir = spool_dir
        self.models: dict[str, Model] = {}
        self.fronts: dict[int, Front] = {}
        self.processes: dict[int, Host | int] = {}  # pid -> host, or a front's slot
        self.hosts: dict[int, Host] = {}  # by generation, while alive
        # How the last hosts ended, by generation: a front may ask after the exit was handled.
        self.ended: dict[int, str] = {}
        self.spawning: dict[int, asyncio.Future[int]] = {}
        # Exits reported before the coroutine that spawned the process had registered its pid.
        self.unclaimed: dict[int, dict[str, int]] = {}
        self.tags = itertools.count(1)
        self.generations = itertools.count(1)
        self.stopping = False
        self.lost_zygote = asyncio.get_running_loop().create_future()
        self.tasks: set[asyncio.Task[Any]] = set()

    # --- processes ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.zygote.setblocking(False)
        asyncio.get_running_loop().add_reader(self.zygote.fileno(), self._on_zygote)
        await asyncio.gather(*(self._start_front(slot) for slot in range(self.settings.workers)))

    async def _spawn(self, role: str, **fields: Any) -> tuple[int, socket.socket]:
        """Have the zygote fork a `role` process; its pid and the parent's end of its socket."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        tag = next(self.tags)
        started = asyncio.get_running_loop().create_future()
        self.spawning[tag] = started
        try:
            message = orjson.dumps({"role": role, "tag": tag, **fields})
            socket.send_fds(self.zygote, [message], [theirs.fileno()])
        finally:
            theirs.close()
        return await started, mine

    def _on_zygote(self) -> None:
        while True:
            try:
                message = self.zygote.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:
                asyncio.get_running_loop().remove_reader(self.zygote.fileno())
                if not self.lost_zygote.done():
                    self.lost_zygote.set_result(None)
                return
            report = orjson.loads(message)
            if "spawned" in report:
                self.spawning.pop(report["spawned"]).set_result(report["pid"])
            elif "exited" in report:
                info = {k: v for k, v in report.items() if k in ("signal", "code")}
                self._on_exit(report["exited"], info)

    async def _start_front(self, slot: int) -> None:
        pid, sock = await self._spawn("front", slot=slot)
        link = await connect_frames(sock, partial(self._on_front_frame, slot), lambda: None, CONTROL_PAYLOAD)
        self.fronts[slot] = Front(slot, pid, link)
        self._claim(pid, slot)

    def _claim(self, pid: int, what: Host | int) -> None:
        """Register a process just spawned (its exit may already have been reported)."""
        self.processes[pid] = what
        if pid in self.unclaimed:
            self._on_exit(pid, self.unclaimed.pop(pid))

    def _on_exit(self, pid: int, info: dict[str, int]) -> None:
        if pid not in self.processes:
            self.unclaimed[pid] = info
            return
        what = self.processes.pop(pid)
        if isinstance(what, int):
            front = self.fronts.pop(what, None)
            if front is not None:
                front.link.close()
            if not self.stopping:
                log.warning("front worker %d %s; starting a new one", pid, describe_exit(info))
                self._task(self._start_front(what))
        elif isinstance(what, Host):
            self._host_exited(what, info)

    def _task(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _broadcast(self, head: Head) -> None:
        for front in self.fronts.values():
            front.link.send(head)

    def memory(self) -> int:
        """The proportional memory of every process of the endpoint."""
        pids = [
            os.getpid(),
            self.zygote_pid,
            *(p for p, what in self.processes.items() if isinstance(what, int)),
        ]
        return sum(pss_bytes(pid) for pid in pids) + sum(host.memory() for host in self.hosts.values())

    # --- hosts ----------------------------------------------------------------------------------

    async def _start_host(self, model: Model) -> Host:
        """Start a host for `model` and wait for its load: the host, ready; else the load's error
        (the host is then gone)."""
        loop = asyncio.get_running_loop()
        generation = next(self.generations)
        host = Host(
            model.name,
            generation,
            os.path.join(self.spool_dir, f"host-{generation}.sock"),
            loop.create_future(),
            loop.create_future(),
        )
        # What the budget has left bounds how far the model's processes may grow (the host sets
        # it as their data limit): a model that allocates past it fails alone with a MemoryError
        # instead of waking the kernel's out-of-memory killer, which may take other processes too.
        room = max(self.budget - self.memory(), HOST_BYTES)
        model.host = host
        self.hosts[generation] = host
        pid, sock = await self._spawn(
            "host",
            name=model.name,
            folder=str(model.folder),
            socket=host.socket_path,
            spool=self.spool_dir,
            room=room,
            budget=self.budget,
        )
        host.pid = pid
        self.processes[pid] = host
        host.link = await connect_frames(
            sock, partial(self._on_host_frame, host), lambda: None, CONTROL_PAYLOAD
        )
        # The host bounds its own load; this bounds a host that hangs without answering.
        limit = self.settings.model_load_timeout_s + 10
        try:
            ready = await asyncio.wait_for(asyncio.shield(host.ready), limit)
        except BaseException as exc:
            host.kill()
            await asyncio.shield(host.exited)
            if isinstance(exc, TimeoutError):
                raise ModelLoadTimeoutError(
                    f"loading {model.folder} took longer than {limit:g} s; raise "
                    "SAGECRAFT_MODEL_LOAD_TIMEOUT if the model is that large"
                ) from None
            raise
        model.load_seconds = round(float(ready.get("seconds", 0.0)), 3)
        host.sockets = [str(path) for path in ready.get("sockets", [])]
        return host

    def _on_host_frame(self, host: Host, head: Head, payload: bytes) -> None:
        op = head.get("op")
        if op == "ready" and not host.ready.done():
            host.ready.set_result(head)
        elif op == "failed" and not host.ready.done():
            host.ready.set_exception(
                ForwardedError(head["status"], head["kind"], head["message"], head.get("headers"))
            )
            host.ready.exception()  # retrieved by _start_host; never "never retrieved"
        elif op == "stats" and host.stats:
            waiter = host.stats.pop(0)
            if not waiter.done():
                waiter.set_result(head)

    def _host_exited(self, host: Host, info: dict[str, int]) -> None:
        host.exited.set_result(info)
        self.hosts.pop(host.generation, None)
        how = self.ended[host.generation] = describe_exit(info)
        while len(self.ended) > ENDED_KEPT:
            del self.ended[next(iter(self.ended))]
        for path in host.sockets:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if not host.ready.done():
            self._task(self._died_loading(host, how))
            return
        if host.link is not None:
            host.link.close()
        model = self.models.get(host.name)
        if model is None or model.host is not host or model.state != "ready" or self.stopping:
            return  # unloaded, replaced, or the endpoint stopping: an exit that was asked for
        now = time.monotonic()
        model.crashes = [t for t in model.crashes if now - t < CRASH_WINDOW_S] + [now]
        self._broadcast({"op": "forget", "name": model.name})
        if len(model.crashes) >= MAX_CRASHES:
            model.state = "failed"
            model.failure = (
                f"model '{model.name}' is marked failed: its process was {how}, {len(model.crashes)} "
                f"crashes within {CRASH_WINDOW_S:g} s. Unload it and load it again"
            )
            log.error("%s", model.failure)
            return
        log.error("model '%s': its process %d was %s; reloading it", model.name, host.pid, how)
        model.state = "reloading"
        model.settled.clear()
        self._task(self._reload(model, how))

    async def _died_loading(self, host: Host, how: str) -> None:
        """A host that exits while loading may have said why first (`failed`): its control
        socket is read to the end before its death is taken as the reason."""
        if host.link is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(host.link.closed), EXIT_WAIT_S)
            host.link.close()
        if not host.ready.done():
            log.error("model '%s': its process %d was %s while loading", host.name, host.pid, how)
            host.ready.set_exception(
                ModelCrashedError(f"model '{host.name}' could not load: its process was {how}")
            )
            host.ready.exception()

    async def _reload(self, model: Model, how: str) -> None:
        try:
            await self._start_host(model)
        except SagecraftError as exc:
            if model.state == "reloading":
                model.state = "failed"
                model.failure = (
                    f"model '{model.name}' could not be reloaded after its process was {how}: {exc}"
                )
                log.error("%s", model.failure)
        else:
            if model.state == "reloading":
                model.state = "ready"
                log.info("model '%s' reloaded in %.2f s", model.name, model.load_seconds or 0.0)
        finally:
            model.settled.set()

    async def _stats(self, host: Host) -> Head | None:
        if host.link is None or host.exited.done():
            return None
        waiter = asyncio.get_running_loop().create_future()
        host.stats.append(waiter)
        host.link.send({"op": "stats"})
        try:
            return await asyncio.wait_for(waiter, STATS_TIMEOUT_S)
        except TimeoutError:
            return None

    # --- the model API ----------------------------------------------------------------------

    def _model(self, name: str) -> Model:
        model = self.models.get(name)
        if model is None or model.state == "unloading":
            raise ModelNotFoundError(f"model '{name}' is not loaded")
        return model

    async def load(self, name: str, folder: Path, url: str) -> None:
        """Load `folder` under `name`: 409 if the name is taken, 507 past the budget, 500 naming
        the signal if the load kills its process."""
        if name in self.models:
            raise ModelAlreadyLoadedError(f"model '{name}' is already loaded")
        model = Model(name, url, folder)
        self.models[name] = model
        try:
            await self._make_room(folder_bytes(folder) * LOAD_SIZE_FACTOR + HOST_BYTES)
            host = await self._start_host(model)
            used = self.memory()
            if used > self.budget:
                if host.link is not None:
                    host.link.close()  # the host exits when its control socket closes
                await asyncio.shield(host.exited)
                raise InsufficientMemoryError(
                    f"model '{name}' did not fit in the {self.budget >> 20} MiB budget "
                    f"(the endpoint's processes used {used >> 20} MiB with it)"
                )
        except BaseException:
            if self.models.get(name) is model:
                del self.models[name]
            model.state = "failed"
            raise
        finally:
            model.settled.set()
        if model.state == "loading":
            model.state = "ready"
        log.info(
            "model '%s' loaded from %s in %.2f s: %d MiB (process %d)",
            name,
            folder,
            model.load_seconds or 0.0,
            host.memory() >> 20,
            host.pid,
        )

    async def _make_room(self, needed: int) -> None:
        while (used := self.memory()) + needed > self.budget:
            victim = await self._idle_victim() if self.settings.evict_idle_models else None
            if victim is None:
                raise InsufficientMemoryError(
                    f"loading this model needs about {needed >> 20} MiB; the endpoint's processes use "
                    f"{used >> 20} MiB of its {self.budget >> 20} MiB budget. Unload a model first"
                )
            victim_name, idle_s = victim
            host = self.models[victim_name].host
            log.info(
                "evicting idle model '%s' to make room (%d MiB, idle %.0f s)",
                victim_name,
                (host.memory() if host else 0) >> 20,
                idle_s,
            )
            await self.unload(victim_name)

    async def _idle_victim(self) -> tuple[str, float] | None:
        """The ready model idle the longest, with no request in progress, and its idle seconds."""
        ready = [m for m in self.models.values() if m.state == "ready" and m.host is not None]
        stats = await asyncio.gather(*(self._stats(m.host) for m in ready if m.host))
        idle = [(s["idle_s"], m.name) for m, s in zip(ready, stats, strict=True) if s and s["in_flight"] == 0]
        if not idle:
            return None
        seconds, name = max(idle)
        return name, float(seconds)

    async def unload(self, name: str) -> None:
        """Forget the model once its requests in progress are answered; its process has exited,
        and its memory is back, when this returns."""
        model = self._model(name)
        model.state = "unloading"
        await model.settled.wait()  # a load in progress ends first
        host = model.host
        before = host.memory() if host else 0
        if host is not None and not host.exited.done() and host.link is not None:
            host.link.send({"op": "unload"})
            await asyncio.shield(host.exited)
        if self.models.get(name) is model:
            del self.models[name]
        self._broadcast({"op": "forget", "name": name})
        log.info(
            "model '%s' unloaded: %d MiB freed (process %d exited)",
            name,
            before >> 20,
            host.pid if host else 0,
        )

    async def where(self, name: str) -> Head:
        """Where to send the model's invocations; waits for a load or reload in progress."""
        model = self._model(name)
        while model.state in ("loading", "reloading"):
            await model.settled.wait()
            model = self._model(name)
        if model.state == "failed":
            raise ModelCrashedError(model.failure or f"model '{name}' failed")
        host = model.host
        if host is None:
            raise ModelNotFoundError(f"model '{name}' is not loaded")
        return {"sockets": host.sockets, "generation": host.generation}

    async def lost(self, name: str, generation: int) -> Head:
        """Why a front's connection to a model's host ended: the host's exit, once known."""
        host = self.hosts.get(generation)
        model = self.models.get(name)
        if host is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(host.exited), EXIT_WAIT_S)
        if host is not None and host.exited.done():
            how = describe_exit(host.exited.result())
        elif generation in self.ended:
            how = self.ended[generation]
        else:
            how = "unreachable"
        then = "; it is being reloaded" if model is not None and model.state == "reloading" else ""
        if model is not None and model.state == "failed":
            then = "; it is marked failed"
        return {
            "message": f"model '{name}' stopped while answering this request: its process was {how}{then}"
        }

    def page(self, token: str | None, limit: int) -> Head:
        names = sorted(n for n, m in self.models.items() if m.state != "unloading")
        if token:
            names = [n for n in names if n > token]
        page = names[:limit]
        models = [{"modelName": n, "modelUrl": self.models[n].url} for n in page]
        return {"models": models, "token": page[-1] if len(names) > limit else None}

    # --- the fronts' calls --------------------------------------------------------------------

    def _on_front_frame(self, slot: int, head: Head, payload: bytes) -> None:
        self._task(self._answer_front(slot, head))

    async def _answer_front(self, slot: int, head: Head) -> None:
        try:
            result = await self._call(head)
            reply = {"id": head.get("id"), "ok": True, **result}
        except Exception as exc:
            if not isinstance(exc, SagecraftError):
                log.exception("the model API call %s failed", head.get("op"))
            reply = {"id": head.get("id"), "ok": False, **error_head(exc)}
        front = self.fronts.get(slot)
        if front is not None:
            front.link.send(reply)

    async def _call(self, head: Head) -> Head:
        op, name = head.get("op"), str(head.get("name", ""))
        if op == "load":
            await self.load(name, Path(head["folder"]), str(head["url"]))
            return {}
        if op == "unload":
            await self.unload(name)
            return {}
        if op == "describe":
            return {"model": self._model(name).describe()}
        if op == "list":
            return self.page(head.get("token"), int(head.get("limit", 100)))
        if op == "where":
            return await self.where(name)
        if op == "lost":
            return await self.lost(name, int(head.get("generation", 0)))
        raise SagecraftError(f"unknown control call {op!r}")

    # --- stopping -----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Drain the fronts (SIGTERM: each answers what it holds), then stop the hosts."""
        self.stopping = True
        deadline = time.monotonic() + self.settings.shutdown_timeout_s + 5
        signalled = 0.0
        while self.fronts and time.monotonic() < deadline and not self.lost_zygote.done():
            # Again each second: a front forked just before the stop has not yet replaced the
            # zygote's SIG_IGN with its handler, and would lose the first (a drain in progress
            # takes another as the same request).
            if time.monotonic() - signalled >= RESIGNAL_S:
                signalled = time.monotonic()
                for front in list(self.fronts.values()):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(front.pid, signal.SIGTERM)
            await asyncio.sleep(0.05)
        for front in self.fronts.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(front.pid, signal.SIGKILL)
        hosts = list(self.hosts.values())
        for host in hosts:
            if host.link is not None:
                host.link.close()  # a host exits when its control socket closes
        deadline = time.monotonic() + 5
        while self.hosts and time.monotonic() < deadline and not self.lost_zygote.done():
            await asyncio.sleep(0.05)
        for host in hosts:
            host.kill()


async def _run_parent(
    settings: ServingSettings, zygote_pid: int, zygote: socket.socket, spool_dir: str
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    fleet = Fleet(settings, zygote_pid, zygote, spool_dir)
    await fleet.start()
    log.info(
        "multi-model endpoint ready: %d front workers on %s:%d, %d processes per model; memory budget %d MiB",
        settings.workers,
        settings.host,
        settings.port,
        max(1, settings.model_processes or settings.workers),
        fleet.budget >> 20,
    )
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([stopped, fleet.lost_zygote], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if fleet.lost_zygote.done() and not stop.is_set():
        log.error("the fork server of the endpoint died; stopping")
        code = 1
    await fleet.stop()
    stopped.cancel()
    return code


def serve_fleet(settings: ServingSettings, listener: socket.socket) -> int:
    """`sagecraft serve` for a multi-model endpoint, until SIGTERM; 1 if the plugins cannot load."""
    from .lifecycle import run_loop
    from .routed import run_front

    if settings.workers > 1:
        # As for a single-model endpoint's workers: OpenMP's threads would spin on the cores the
        # other processes use. Set before the libraries load.
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // settings.workers)))
    try:
        plugins = installed_plugins()
    except SagecraftError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    compile_walk()  # once, here, rather than in every host's first load
    # Every host is a fresh fork: what a built-in plugin imports on its first load (skops for the
    # forest, 0.7 s) is imported here once instead of in each model's processes.
    with contextlib.suppress(ImportError):
        importlib.import_module("skops.io")
    gc.freeze()  # what is loaded so far never changes: keep the collector from copying it
    counts = ConnectionCounts(settings.workers)
    spool_dir = tempfile.mkdtemp(prefix="sagecraft-mme-")
    roles: dict[str, Role] = {
        "front": partial(run_front, settings, listener, plugins, counts, spool_dir),
        "host": partial(run_model_host, settings, plugins),
    }
    zygote_pid, zygote = start_zygote(roles)
    try:
        return run_loop(_run_parent(settings, zygote_pid, zygote, spool_dir))
    finally:
        zygote.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(zygote_pid, 0)
        shutil.rmtree(spool_dir, ignore_errors=True)
        log.info("stopped")
