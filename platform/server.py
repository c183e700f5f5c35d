"""The aiohttp application: GET /ping and POST /invocations of a single-model endpoint."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from .appkeys import EXECUTOR, MODEL_SLOT, SETTINGS, ModelSlot
from .content_registry import ContentTypeRegistry
from .content_types import CSV, media_type, negotiate
from .environment import ServingSettings
from .errors import NotReadyError, PayloadTooLargeError
from .loaded_model import LoadedModel
from .middleware import error_middleware

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


async def ping(request: web.Request) -> web.Response:
    """200 once the model is loaded, 503 before: SageMaker's health check, answered from memory."""
    if request.app[MODEL_SLOT].model is None:
        raise NotReadyError("the model is still loading")
    return web.json_response({"status": "healthy"})


def _answer(model: LoadedModel, types: ContentTypeRegistry, content_type: str, body: bytes,
            accept: str) -> bytes:
    """Decode, predict and encode one request; runs in a worker thread."""
    features = types.decode(content_type, body, model.feature_names)
    return types.encode(accept, model.predict(features))


async def invocations(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    slot = request.app[MODEL_SLOT]
    model, types = slot.model, slot.content_types
    if model is None or types is None:
        raise NotReadyError("the model is still loading")
    # Absent Content-Type: CSV, the format of the R example and of SageMaker's tabular algorithms.
    content_type = media_type(request.headers.get("Content-Type")) or CSV
    types.check_decodable(content_type)
    default = settings.default_accept or (content_type if content_type in types.encoders else CSV)
    accept = negotiate(request.headers.get("Accept"), types.encoders, media_type(default) or CSV)
    if request.content_length is not None and request.content_length > settings.max_payload_bytes:
        raise PayloadTooLargeError(
            f"the body has {request.content_length} bytes, over the limit of "
            f"{settings.max_payload_bytes}; raise SAGECRAFT_MAX_PAYLOAD_MB"
        )
    body = await request.read()
    loop = asyncio.get_running_loop()
    answer = await loop.run_in_executor(
        request.app[EXECUTOR], _answer, model, types, content_type, body, accept
    )
    return web.Response(body=answer, headers={"Content-Type": accept})


async def _executor(app: web.Application) -> AsyncIterator[None]:
    executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="predict")
    app[EXECUTOR] = executor
    yield
    executor.shutdown(wait=True, cancel_futures=True)


def create_app(settings: ServingSettings) -> web.Application:
    """The application; its model slot stays empty until the caller loads a model into it."""
    app = web.Application(client_max_size=settings.max_payload_bytes,
                          middlewares=[error_middleware])
    app[SETTINGS] = settings
    app[MODEL_SLOT] = ModelSlot()
    app.cleanup_ctx.append(_executor)
    app.router.add_get("/ping", ping)
    app.router.add_post("/invocations", invocations)
    return app
