"""Run the server: listen at once, load in the background, fork workers, drain on SIGTERM.

A single-model endpoint with more than one worker loads its model once, in a parent process that
answers /ping with 503 meanwhile, then forks the workers: they share the model's memory
copy-on-write and each runs its own event loop on the same listening socket. The parent replaces a
worker that dies and, on SIGTERM, lets each drain its requests. Either runs below a supervisor
(supervisor.py) that names the signal, and the model folder, when a load kills the server. A
multi-model endpoint runs front workers and processes per model (fleet.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from ..environment import ServingSettings
from ..errors import SagecraftError
from ..loaded_model import LoadedModel
from ..plugins import PluginSet, installed_plugins
from ..server import create_app
from .appkeys import EXECUTOR, RUNTIME, SINGLE_MODEL, Services
from .balanced_accept import ABSENT, BalancedSite, ConnectionCounts
from .registry import ModelRegistry, load_within
from .request_format import RequestFormats
from .supervisor import mark_loaded, supervise

T = TypeVar("T")
log = logging.getLogger(__name__)

Prepared = tuple[PluginSet, LoadedModel]


async def run_app(
    settings: ServingSettings,
    listener: socket.socket,
    start: Callable[[web.Application], Awaitable[None]],
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    balance: tuple[ConnectionCounts, int] | None = None,
) -> int:
    """Serve `listener` until SIGTERM (or `stop`); `start` fills the app's runtime meanwhile.
    Returns 1 when `start` fails. With `handle_signals` off, the caller's handlers stay. With
    `balance` (the workers' connection counts and this worker's slot), connections are taken in
    turn with the other workers (see balanced_accept.py)."""
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        shutdown_timeout=settings.shutdown_timeout_s,
        # Compressed bodies are inflated by invocation.py, in a worker thread and up to the
        # payload limit: aiohttp would inflate them on the event loop as they arrive.
        auto_decompress=False,
        # aiohttp's default is an hour. The same clock closes a connection that has not sent a
        # whole request line and headers by then (its count starts when the connection opens).
        keepalive_timeout=settings.keepalive_timeout_s,
        access_log=logging.getLogger("aiohttp.access") if settings.log_requests else None,
    )
    await runner.setup()
    # Our own accept loop, also for one process: it shares connections among workers, backs off
    # (and logs once a minute) when descriptors run out, and lets a half-closed request finish.
    site = BalancedSite(runner, listener, *(balance or ()))
    await site.start()
    if balance is not None:
        log.info("worker %d accepting connections", os.getpid())
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    previous = (
        {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
        if handle_signals
        else {}
    )
    for signum in previous:
        loop.add_signal_handler(signum, stop.set)
    exit_code = 0

    async def starting() -> None:
        nonlocal exit_code
        try:
            await start(app)
        except SagecraftError as exc:
            log.error("cannot serve: %s", exc)
            exit_code = 1
            stop.set()
        except Exception:
            log.exception("cannot serve: loading the model failed")
            exit_code = 1
            stop.set()
        finally:
            app[RUNTIME].started.set()

    task = asyncio.create_task(starting())
    try:
        await stop.wait()
        task.cancel()
        await _drain(site, app, settings.shutdown_timeout_s)
        await runner.cleanup()
    finally:
        # Put back the handlers found: a closed loop's handler would swallow a later SIGTERM.
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)
    return exit_code


async def _drain(site: BalancedSite, app: web.Application, timeout_s: float) -> None:
    """Stop taking connections, then wait (up to `timeout_s`) for the invocations in progress,
    those still receiving their body included, before aiohttp's cleanup: aiohttp's shutdown drops
    every byte that arrives after it begins, so a body still arriving would never be answered."""
    site.stop_accepting()
    runtime = app[RUNTIME]
    deadline = asyncio.get_running_loop().time() + timeout_s
    if runtime.in_flight:
        log.info("draining %d request(s) in progress", runtime.in_flight)
    while runtime.in_flight and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)


def _registry(app: web.Application, plugins: PluginSet, settings: ServingSettings) -> ModelRegistry:
    types = plugins.content_types
    types.max_rows = settings.max_rows
    types.max_decoded_bytes = settings.max_decoded_bytes
    registry = ModelRegistry(
        app[EXECUTOR],
        LoadedModel.load,
        load_timeout_s=settings.model_load_timeout_s,
    )
    app[RUNTIME].services = Services(types, RequestFormats(types, settings), registry)
    return registry


async def _serve_one_process(settings: ServingSettings, model_dir: Path, listener: socket.socket) -> int:
    async def start(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        plugins = await loop.run_in_executor(None, installed_plugins)
        registry = _registry(app, plugins, settings)
        await registry.load(SINGLE_MODEL, model_dir)
        mark_loaded()
        log.info("ready")

    log.info(
        "listening on %s:%d (body limit %d bytes)", settings.host, settings.port, settings.max_payload_bytes
    )
    code = await run_app(settings, listener, start)
    log.info("stopped")
    return code


# --- several worker processes ----------------------------------------------------------------


async def _load_in_parent(
    settings: ServingSettings,
    model_dir: Path,
    listener: socket.socket,
    loading: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]],
) -> Prepared | int:
    """Load plugins and model while a temporary app answers /ping with 503. Returns what was
    loaded, or the exit status: 1 when the load failed, 0 when it was stopped. The parent's own
    signal handler stays installed and stops this app through `loading`."""
    prepared: list[Prepared] = []
    done = asyncio.Event()
    loading.append((asyncio.get_running_loop(), done))

    async def start(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        plugins = await loop.run_in_executor(None, installed_plugins)
        model = await load_within(
            loop.run_in_executor(None, LoadedModel.load, model_dir), settings.model_load_timeout_s, model_dir
        )
        prepared.append((plugins, model))
        done.set()

    # A duplicate descriptor: closing this temporary site must not close the real listener.
    code = await run_app(settings, listener.dup(), start, stop=done, handle_signals=False)
    loading.clear()
    return prepared[0] if code == 0 and prepared else code


@dataclass(frozen=True)
class WorkerPlan:
    """What every forked worker of a single-model endpoint serves, loaded once in the parent."""

    settings: ServingSettings
    listener: socket.socket
    prepared: Prepared
    model_dir: Path


async def _worker(plan: WorkerPlan, balance: tuple[ConnectionCounts, int]) -> int:
    plugins, model = plan.prepared

    async def start(app: web.Application) -> None:
        _registry(app, plugins, plan.settings).add_loaded(SINGLE_MODEL, model, str(plan.model_dir))

    return await run_app(plan.settings, plan.listener, start, balance=balance)


def _start_worker(plan: WorkerPlan, balance: tuple[ConnectionCounts, int]) -> int:
    # Blocked across the fork: the child must not run the parent's handler before it has its own.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
        return pid
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
    code = 1
    try:
        code = run_loop(_worker(plan, balance))
    finally:
        logging.shutdown()
        os._exit(code)


def _serve_workers(settings: ServingSettings, model_dir: Path, listener: socket.socket) -> int:
    # Each worker gets its share of the cores: OpenMP's threads (XGBoost's, scikit-learn's) would
    # otherwise spin on the cores the other workers use. Set before the libraries load.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // settings.workers)))
    workers: dict[int, int] = {}  # pid -> slot
    stopping: list[float] = []

    def stop_workers() -> None:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    loading: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def on_stop(signum: int, frame: object) -> None:
        if not stopping:
            stopping.append(time.monotonic())
            stop_workers()
        for loop, done in loading:  # the model is still loading: abandon it
            with contextlib.suppress(RuntimeError):  # that loop has just closed
                loop.call_soon_threadsafe(done.set)

    # One handler for the parent's whole life: Python runs it whatever the event loops are doing,
    # so a SIGTERM at any moment (during the load, just after it, among the forks) is never lost.
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    prepared = run_loop(_load_in_parent(settings, model_dir, listener, loading))
    if stopping:
        log.info("stopped before the workers started")
        return 0
    if isinstance(prepared, int):
        return prepared
    mark_loaded()
    # Objects loaded so far never change: keep the collector from touching (and so copying) them.
    gc.freeze()
    counts = ConnectionCounts(settings.workers)
    plan = WorkerPlan(settings, listener, prepared, model_dir)
    for slot in range(settings.workers):
        if stopping:
            break
        workers[_start_worker(plan, (counts, slot))] = slot
    if stopping:
        stop_workers()  # those forked after the signal came
    else:
        log.info("ready: %d worker processes on %s:%d", len(workers), settings.host, settings.port)
    while workers:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            if stopping and time.monotonic() - stopping[0] > settings.shutdown_timeout_s + 5:
                for straggler in workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(straggler, signal.SIGKILL)
            time.sleep(0.05)
            continue
        if pid not in workers:
            continue
        slot = workers.pop(pid)
        counts.counts[slot] = ABSENT  # the others must not wait for it
        if not stopping:
            log.warning("worker %d exited (status %d); starting a new one", pid, status)
            workers[_start_worker(plan, (counts, slot))] = slot
    log.info("stopped")
    return 0


def run_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """`coroutine` run to its end on uvloop where installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def run_server(settings: ServingSettings, model_dir: Path, listener: socket.socket) -> int:
    """`sagecraft serve`: serves until SIGTERM; the exit status is 1 if the model cannot load.

    `listener` is already listening, so connections queue while this module's imports run.
    """
    if settings.multi_model:
        from .fleet import serve_fleet

        return serve_fleet(settings, listener)
    if settings.workers <= 1:
        return supervise(
            lambda: run_loop(_serve_one_process(settings, model_dir, listener)), model_dir, listener
        )
    return supervise(lambda: _serve_workers(settings, model_dir, listener), model_dir, listener)
