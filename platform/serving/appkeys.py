"""The typed keys under which the server's shared state lives in the aiohttp application."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from ..content_registry import ContentTypeRegistry
from ..environment import ServingSettings
from ..errors import NotReadyError
from .registry import ModelRegistry
from .request_format import RequestFormats

if TYPE_CHECKING:
    from .routed import FleetClient

# The name the single model of a single-model endpoint has in the registry.
SINGLE_MODEL = "model"


@dataclass(frozen=True)
class Services:
    """What exists once the plugins are loaded: the content types, the request formats seen so
    far, and the model registry. Set once, complete, by `lifecycle`."""

    content_types: ContentTypeRegistry
    formats: RequestFormats
    registry: ModelRegistry


@dataclass
class Runtime:
    """A server process's state: its services (None until the plugins are loaded), whether
    starting has ended (successfully or not), and its counters."""

    services: Services | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0  # invocations this worker holds now
    releasing: bool = False  # a release of freed memory to the OS is under way
    released_at: float = -1e9  # when the last one started (the event loop's clock)
    # A multi-model endpoint's front worker: its link to the parent and the model hosts.
    fleet: FleetClient | None = None

    def ready(self) -> Services:
        """The services; NotReadyError (503) while the plugins are still loading."""
        if self.services is None:
            raise NotReadyError("the server is still starting")
        return self.services


SETTINGS = web.AppKey("settings", ServingSettings)
RUNTIME = web.AppKey("runtime", Runtime)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
