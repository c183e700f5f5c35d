"""The aiohttp application: /ping, /invocations, /execution-parameters and /openapi.json, plus the
model API of a multi-model endpoint (`serving.multi_model`). It only routes: an invocation is
answered by `serving.invocation`, and `serving.lifecycle` fills the Runtime and runs the app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from .environment import ServingSettings
from .errors import BadRequestError, NotReadyError
from .serving.appkeys import EXECUTOR, RUNTIME, SETTINGS, SINGLE_MODEL, Runtime
from .serving.invocation import expect_continue, invoke
from .serving.middleware import error_middleware
from .serving.multi_model import add_model_routes
from .serving.openapi import add_openapi_route
from .serving.request_format import TARGET_MODEL
from .serving.routed import routed_invoke


async def ping(request: web.Request) -> web.Response:
    """SageMaker's health check, from memory: a single-model endpoint is healthy once its model is
    loaded; a multi-model endpoint, which starts empty, as soon as it runs."""
    if not request.app[SETTINGS].multi_model and not _single_model_ready(request.app[RUNTIME]):
        raise NotReadyError("the model is still loading")
    return web.json_response({"status": "healthy"})


def _single_model_ready(runtime: Runtime) -> bool:
    return runtime.services is not None and runtime.services.registry.is_ready(SINGLE_MODEL)


async def execution_parameters(request: web.Request) -> web.Response:
    """What a batch transform job asks before it sends mini-batches."""
    settings = request.app[SETTINGS]
    return web.json_response(
        {
            "MaxConcurrentTransforms": settings.workers,
            "BatchStrategy": settings.batch_strategy or "MULTI_RECORD",
            "MaxPayloadInMB": max(1, settings.max_payload_bytes // (1024 * 1024)),
        }
    )


async def invocations(request: web.Request) -> web.StreamResponse:
    """POST /invocations: the single model, or on a multi-model endpoint the one its
    X-Amzn-SageMaker-Target-Model header names."""
    if request.app[SETTINGS].multi_model:
        target = request.headers.get(TARGET_MODEL)
        if not target:
            raise BadRequestError(f"a multi-model endpoint needs the {TARGET_MODEL} header")
        return await routed_invoke(request, target)
    if not _single_model_ready(request.app[RUNTIME]):
        raise NotReadyError("the model is still loading")
    return await invoke(request, SINGLE_MODEL)


async def _executor(app: web.Application) -> AsyncIterator[None]:
    executor = ThreadPoolExecutor(max_workers=app[SETTINGS].workers, thread_name_prefix="predict")
    app[EXECUTOR] = executor
    yield
    executor.shutdown(wait=True, cancel_futures=True)


def create_app(settings: ServingSettings) -> web.Application:
    """The application; `serving.lifecycle` sets its Runtime's services once the plugins are
    loaded (until then /ping and /invocations answer 503)."""
    app = web.Application(client_max_size=settings.max_payload_bytes, middlewares=[error_middleware])
    app[SETTINGS] = settings
    app[RUNTIME] = Runtime()
    app.cleanup_ctx.append(_executor)
    app.router.add_get("/ping", ping)
    app.router.add_post("/invocations", invocations, expect_handler=expect_continue)
    app.router.add_get("/execution-parameters", execution_parameters)
    add_openapi_route(app, settings.multi_model)
    if settings.multi_model:
        add_model_routes(app)
    return app
