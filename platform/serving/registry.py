"""The models loaded in a serving process, by name.

All methods run on the event loop; loading runs in a worker thread so other models keep serving.
A model is used through `use(name)`, which waits for a load in progress and counts the request, so
`unload` can wait for in-flight requests before it frees the memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import (
    ModelAlreadyLoadedError,
    ModelLoadTimeoutError,
    ModelNotFoundError,
    SagecraftError,
)
from ..loaded_model import LoadedModel
from ..memory import release_memory
from .batching import PredictionBatcher

log = logging.getLogger(__name__)


async def load_within(
    loading: asyncio.Future[LoadedModel], timeout_s: float | None, folder: Path
) -> LoadedModel:
    """The result of a load running in a thread, or ModelLoadTimeoutError after `timeout_s`.

    A thread cannot be stopped: a load that times out runs on and its model is dropped when done.
    """
    try:
        return await asyncio.wait_for(asyncio.shield(loading), timeout_s)
    except TimeoutError:
        loading.add_done_callback(lambda done: done.cancelled() or done.exception())
        raise ModelLoadTimeoutError(
            f"loading {folder} took longer than {timeout_s:g} s; raise SAGECRAFT_MODEL_LOAD_TIMEOUT "
            "if the model is that large"
        ) from None


@dataclass
class ModelEntry:
    name: str
    url: str
    ready: asyncio.Future[LoadedModel]
    last_used: float = field(default_factory=time.monotonic)
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    unloading: bool = False
    batcher: PredictionBatcher | None = None


class ModelInUse:
    """What `ModelRegistry.use` returns; a class rather than a generator-based context manager,
    which costs a few microseconds more on every request."""

    __slots__ = ("entry",)

    def __init__(self, entry: ModelEntry) -> None:
        self.entry = entry

    async def __aenter__(self) -> LoadedModel:
        entry = self.entry
        ready = entry.ready
        model = ready.result() if ready.done() else await asyncio.shield(ready)
        entry.in_flight += 1
        entry.idle.clear()
        entry.last_used = time.monotonic()
        return model

    async def __aexit__(self, *exc_info: object) -> None:
        entry = self.entry
        entry.in_flight -= 1
        if entry.in_flight == 0:
            entry.idle.set()


class ModelRegistry:
    """Models by name, loaded in this process: a single-model endpoint's one model, a model
    host's (model_host.py) one model. A multi-model endpoint's budget and eviction, which count every
    process, are fleet.py's."""

    def __init__(
        self,
        executor: Executor,
        loader: Callable[[Path], LoadedModel],
        load_timeout_s: float | None = None,
    ) -> None:
        self.executor = executor
        self.loader = loader
        self.load_timeout_s = load_timeout_s
        self.entries: dict[str, ModelEntry] = {}

    def is_ready(self, name: str) -> bool:
        entry = self.entries.get(name)
        return entry is not None and entry.ready.done() and entry.ready.exception() is None

    async def load(self, name: str, folder: Path, url: str | None = None) -> ModelEntry:
        """Load `folder` under `name`; 409 if the name is taken."""
        if name in self.entries:
            raise ModelAlreadyLoadedError(f"model '{name}' is already loaded")
        loop = asyncio.get_running_loop()
        entry = ModelEntry(name, url or str(folder), loop.create_future())
        entry.idle.set()
        self.entries[name] = entry
        try:
            model = await load_within(
                loop.run_in_executor(self.executor, self.loader, folder), self.load_timeout_s, folder
            )
        except BaseException as exc:
            self.entries.pop(name, None)
            entry.ready.set_exception(exc if isinstance(exc, Exception) else SagecraftError(str(exc)))
            entry.ready.exception()  # mark retrieved: waiters got it already
            release_memory()
            raise
        entry.ready.set_result(model)
        log.info("model '%s' loaded from %s", name, folder)
        return entry

    def add_loaded(self, name: str, model: LoadedModel, url: str) -> None:
        """Register a model loaded elsewhere (a worker process inherits its parent's model)."""
        entry = ModelEntry(name, url, asyncio.get_running_loop().create_future())
        entry.idle.set()
        entry.ready.set_result(model)
        self.entries[name] = entry

    async def unload(self, name: str) -> None:
        """Forget the model once its in-flight requests finish, and give its memory back."""
        entry = self.entries.get(name)
        if entry is None or entry.unloading:
            raise ModelNotFoundError(f"model '{name}' is not loaded")
        entry.unloading = True
        with contextlib.suppress(Exception):  # a failed load has already removed itself
            await asyncio.shield(entry.ready)
        await entry.idle.wait()
        self.entries.pop(name, None)
        del entry
        await asyncio.get_running_loop().run_in_executor(self.executor, release_memory)
        log.info("model '%s' unloaded", name)

    def batcher(self, name: str) -> PredictionBatcher:
        """The model's request batcher (the model must be loaded: call inside `use`)."""
        entry = self.entries[name]
        if entry.batcher is None:
            entry.batcher = PredictionBatcher(entry.ready.result())
        return entry.batcher

    def use(self, name: str) -> ModelInUse:
        """`async with registry.use(name) as model`: the model, once loaded (requests during a
        load wait for that load), counted as in use until the block ends."""
        entry = self.entries.get(name)
        if entry is None or entry.unloading:
            raise ModelNotFoundError(f"model '{name}' is not loaded")
        return ModelInUse(entry)
