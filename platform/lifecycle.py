"""Run the server: listen at once, load the model in the background, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path

from aiohttp import web

from .appkeys import EXECUTOR, RUNTIME, SINGLE_MODEL
from .environment import ServingSettings
from .errors import SagecraftError
from .loaded_model import LoadedModel
from .memory import container_memory_bytes
from .plugins import installed_plugins
from .registry import ModelRegistry
from .server import create_app

log = logging.getLogger(__name__)


async def _serve(settings: ServingSettings, model_dir: Path, listener: socket.socket) -> int:
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        shutdown_timeout=settings.shutdown_timeout_s,
        access_log=logging.getLogger("aiohttp.access") if settings.log_requests else None,
    )
    await runner.setup()
    site = web.SockSite(runner, listener)
    await site.start()
    log.info("listening on %s:%d (body limit %d bytes)", settings.host, settings.port,
             settings.max_payload_bytes)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    exit_code = 0

    async def start() -> None:
        nonlocal exit_code
        runtime = app[RUNTIME]
        try:
            plugins = await loop.run_in_executor(None, installed_plugins)
            runtime.content_types = plugins.content_types
            runtime.registry = ModelRegistry(
                app[EXECUTOR], LoadedModel.load, memory_budget(settings), settings.evict_idle_models
            )
            runtime.started.set()
            if settings.multi_model:
                log.info("multi-model endpoint ready; memory budget %s",
                         f"{runtime.registry.memory_budget >> 20} MiB")
                return
            await runtime.registry.load(SINGLE_MODEL, model_dir)
            log.info("ready")
        except SagecraftError as exc:
            log.error("cannot serve: %s", exc)
            exit_code = 1
            stop.set()
        except Exception:
            log.exception("cannot serve: loading the model failed")
            exit_code = 1
            stop.set()
        finally:
            runtime.started.set()

    loading = asyncio.create_task(start())
    await stop.wait()
    log.info("stopping: draining requests for up to %.0f s", settings.shutdown_timeout_s)
    loading.cancel()
    await runner.cleanup()
    log.info("stopped")
    return exit_code


def memory_budget(settings: ServingSettings) -> int | None:
    """The multi-model memory budget: as configured, else 85% of the container's memory."""
    if settings.memory_budget_bytes is not None:
        return settings.memory_budget_bytes
    return int(container_memory_bytes() * 0.85) if settings.multi_model else None


def run_server(settings: ServingSettings, model_dir: Path, listener: socket.socket) -> int:
    """`sagecraft serve`: serves until SIGTERM; the exit status is 1 if the model cannot load.

    `listener` is already listening, so connections queue while this module's imports run.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(settings, model_dir, listener))
    return uvloop.run(_serve(settings, model_dir, listener))
