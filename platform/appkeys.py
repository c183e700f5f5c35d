"""The typed keys under which the server's shared state lives in the aiohttp application."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from .content_registry import ContentTypeRegistry
from .environment import ServingSettings
from .loaded_model import LoadedModel


@dataclass
class ModelSlot:
    """The single model of a single-model endpoint, and the content types: None until loaded."""

    model: LoadedModel | None = None
    content_types: ContentTypeRegistry | None = None


SETTINGS = web.AppKey("settings", ServingSettings)
MODEL_SLOT = web.AppKey("model_slot", ModelSlot)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
