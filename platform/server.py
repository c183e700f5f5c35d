"""The aiohttp application: /ping, /invocations, /execution-parameters and /openapi.json, plus the
model API of a multi-model endpoint (see multi_model.py)."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import IO, Any, TypeVar

import numpy as np
import pandas as pd
from aiohttp import HttpVersion11, web

from .environment import ServingSettings
from .errors import (
    BadRequestError,
    NotReadyError,
    OverloadedError,
    PredictionTimeoutError,
    RequestTimeoutError,
    SagecraftError,
)
from .memory import release_memory
from .serving.appkeys import EXECUTOR, RUNTIME, SETTINGS, SINGLE_MODEL, Runtime
from .serving.codecs import feature_table
from .serving.content_encoding import IDENTITY, content_coding, inflate
from .serving.invocation import answer, declared_length, encode_answer, read_body, read_bytes
from .serving.middleware import error_middleware, error_response
from .serving.multi_model import add_model_routes
from .serving.openapi import add_openapi_route
from .serving.outputs import PREDICTED_LABEL
from .serving.request_format import TARGET_MODEL, RequestFormat, check_header_length

T = TypeVar("T")
SEND_CHUNK = 1024 * 1024
# Bodies up to this size are decoded on the event loop (measured: about 100 rows of 20 features
# take well under a millisecond), and predicted there when they hold at most INLINE_ROWS rows:
# 16 KiB can hold 4,000 rows of one feature, and the loop must stay free for /ping.
INLINE_BYTES = 16 * 1024
INLINE_ROWS = 64
# After a body of this size, memory is handed back to the OS, at most once per interval (see
# _release_soon): a release per 10,000-row request cost that benchmark about a tenth.
RELEASE_AFTER_BYTES = 1024 * 1024
RELEASE_INTERVAL_S = 1.0


async def ping(request: web.Request) -> web.Response:
    """SageMaker's health check, from memory: a single-model endpoint is healthy once its model is
    loaded; a multi-model endpoint, which starts empty, as soon as it runs."""
    settings, runtime = request.app[SETTINGS], request.app[RUNTIME]
    if not settings.multi_model and not (
        runtime.registry is not None and runtime.registry.is_ready(SINGLE_MODEL)
    ):
        raise NotReadyError("the model is still loading")
    return web.json_response({"status": "healthy"})


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


async def invoke(request: web.Request, model_name: str) -> web.StreamResponse:
    """Answer one invocation of `model_name`; shared by /invocations and /models/<name>/invoke.

    A worker holds at most `max_concurrent_requests` invocations: beyond that it answers 503 with
    Retry-After at once instead of queueing without bound. Each has `request_timeout_s` to arrive
    (else 408) and be answered (else 504)."""
    settings, runtime = request.app[SETTINGS], request.app[RUNTIME]
    if runtime.registry is None or runtime.formats is None:
        raise NotReadyError("the server is still starting")
    if runtime.in_flight >= settings.max_concurrent_requests:
        raise OverloadedError(
            f"this worker is answering {runtime.in_flight} requests, its limit "
            "(SAGECRAFT_MAX_CONCURRENT_REQUESTS); retry shortly"
        )
    runtime.in_flight += 1
    try:
        deadline = asyncio.get_running_loop().time() + settings.request_timeout_s
        return await _invoke(request, model_name, settings, runtime, deadline)
    finally:
        runtime.in_flight -= 1


async def _invoke(
    request: web.Request, model_name: str, settings: ServingSettings, runtime: Runtime, deadline: float
) -> web.StreamResponse:
    types, formats, registry = runtime.content_types, runtime.formats, runtime.registry
    assert types is not None and formats is not None and registry is not None
    check_header_length(TARGET_MODEL, request.headers.get(TARGET_MODEL))
    form = formats.of(request.headers)
    coding = content_coding(request.headers.get("Content-Encoding"))
    # A compressed body is small or large by what it inflates to, which only inflating tells.
    small = (
        request.content_length is not None and request.content_length <= INLINE_BYTES and coding == IDENTITY
    )
    # One timer for the request; what it interrupts decides the answer. None where nothing can
    # wait: the body has arrived, the model is loaded, and a small request's work runs on the
    # event loop, where a timer could not interrupt it anyway (measured: a timer costs about a
    # tenth of the single-row throughput).
    waits = not (small and request.content.is_eof() and registry.is_ready(model_name))
    timer = asyncio.timeout_at(deadline) if waits else contextlib.nullcontext()
    result: bytes | IO[bytes]
    reading = True
    try:
        async with timer:
            if small:
                data = await read_bytes(request, settings.max_payload_bytes)
                reading = False
                result = await _answer_small(model_name, settings, runtime, form, data, request.app[EXECUTOR])
            else:
                body = await read_body(request, settings.max_payload_bytes)
                reading = False
                if coding != IDENTITY:
                    body = await _in_thread(
                        request.app[EXECUTOR], inflate, body, coding, settings.max_payload_bytes
                    )
                size = body.seek(0, io.SEEK_END)
                body.seek(0)
                async with registry.use(model_name) as model:
                    try:
                        result = await _in_thread(
                            request.app[EXECUTOR],
                            answer,
                            model,
                            types,
                            form.content_type,
                            body,
                            form.accept,
                            settings.record_errors,
                            form.output,
                        )
                    finally:
                        if size >= RELEASE_AFTER_BYTES:  # what it decoded to is garbage now
                            _release_soon(request.app)
    except TimeoutError:
        if reading:
            raise RequestTimeoutError(
                f"the body did not arrive within {settings.request_timeout_s:g} s (SAGECRAFT_REQUEST_TIMEOUT)"
            ) from None
        raise PredictionTimeoutError(
            f"the prediction did not finish within {settings.request_timeout_s:g} s "
            "(SAGECRAFT_REQUEST_TIMEOUT); send fewer rows per request"
        ) from None
    return await _send(request, result, form.accept)


def _release_soon(app: web.Application) -> None:
    """Give freed memory back to the OS in the pool, one release at a time and at most one per
    RELEASE_INTERVAL_S (a full collection holds the GIL for about 5 ms: worth it after a body of
    megabytes now and then, not after every such request under load)."""
    runtime = app[RUNTIME]
    now = asyncio.get_running_loop().time()
    if runtime.releasing or now - runtime.released_at < RELEASE_INTERVAL_S:
        return
    runtime.releasing, runtime.released_at = True, now

    def release() -> None:
        try:
            release_memory()
        finally:
            runtime.releasing = False

    asyncio.get_running_loop().run_in_executor(app[EXECUTOR], release)


async def _answer_small(
    model_name: str,
    settings: ServingSettings,
    runtime: Runtime,
    form: RequestFormat,
    data: bytes,
    executor: Executor,
) -> bytes | IO[bytes]:
    """The answer to a small body, decoded on the event loop and, for a few rows, predicted there
    too: a thread hop costs more than a few rows' work. Labels are predicted with other requests'
    rows (see batching.py). Many rows in few bytes, and per-record errors, go to the pool."""
    types, registry = runtime.content_types, runtime.registry
    assert types is not None and registry is not None
    async with registry.use(model_name) as model:
        if settings.record_errors:
            return await _in_thread(
                executor,
                answer,
                model,
                types,
                form.content_type,
                io.BytesIO(data),
                form.accept,
                True,
                form.output,
            )
        if settings.batching and form.output == PREDICTED_LABEL:
            # Plain numbers skip the DataFrame: the batcher builds one for the whole batch.
            rows = types.read_numbers(form.content_type, data, model.feature_names)
            if rows is None:
                rows = types.decode(form.content_type, data, model.feature_names)
            if len(rows) <= INLINE_ROWS:
                return types.encode(form.accept, await registry.batcher(model_name).predict(rows))
            features = (
                rows
                if isinstance(rows, pd.DataFrame)
                else feature_table(np.asarray(rows, dtype=np.float64), model.feature_names)
            )
        else:
            features = types.decode(form.content_type, data, model.feature_names)
        if len(features) <= INLINE_ROWS:
            return encode_answer(model, types, features, form.accept, form.output)
        return await _in_thread(executor, encode_answer, model, types, features, form.accept, form.output)


async def _in_thread(executor: Executor, function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in the prediction pool, so that the event loop keeps answering /ping."""
    return await asyncio.get_running_loop().run_in_executor(executor, function, *args)


async def _send(request: web.Request, result: bytes | IO[bytes], content_type: str) -> web.StreamResponse:
    """Small answers in one piece; large ones streamed from their spool file."""
    if isinstance(result, bytes):
        return web.Response(body=result, headers={"Content-Type": content_type})
    with result:
        size = result.seek(0, io.SEEK_END)
        result.seek(0)
        if size <= SEND_CHUNK:
            return web.Response(body=result.read(), headers={"Content-Type": content_type})
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.content_length = size
        await response.prepare(request)
        while chunk := result.read(SEND_CHUNK):
            await response.write(chunk)
        await response.write_eof()
        return response


async def expect_continue(request: web.Request) -> web.Response | None:
    """`Expect: 100-continue`: the client waits for a word before it sends the body. Say continue
    only for a body this endpoint would read: a 413 (too large by Content-Length), 415, 406 or 400
    (headers it cannot serve) goes back instead, and the connection closes, so that the client
    never sends a body only to have it refused (aiohttp's own handler says continue to any)."""
    expect = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect[:100]}")
    settings, runtime = request.app[SETTINGS], request.app[RUNTIME]
    try:
        declared_length(request, settings.max_payload_bytes)
        content_coding(request.headers.get("Content-Encoding"))
        if runtime.formats is not None:
            runtime.formats.of(request.headers)
    except SagecraftError as exc:
        response = error_response(exc.status, exc.kind, str(exc))
        response.force_close()
        return response
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer's own size counts from here, as aiohttp does
    return None


async def invocations(request: web.Request) -> web.Response:
    if request.app[SETTINGS].multi_model:
        target = request.headers.get(TARGET_MODEL)
        if not target:
            raise BadRequestError(f"a multi-model endpoint needs the {TARGET_MODEL} header")
        return await invoke(request, target)
    if not request.app[RUNTIME].registry or not request.app[RUNTIME].registry.is_ready(SINGLE_MODEL):
        raise NotReadyError("the model is still loading")
    return await invoke(request, SINGLE_MODEL)


async def _executor(app: web.Application) -> AsyncIterator[None]:
    executor = ThreadPoolExecutor(max_workers=app[SETTINGS].workers, thread_name_prefix="predict")
    app[EXECUTOR] = executor
    yield
    executor.shutdown(wait=True, cancel_futures=True)


def create_app(settings: ServingSettings) -> web.Application:
    """The application; the caller fills its Runtime once the plugins are loaded."""
    app = web.Application(client_max_size=settings.max_payload_bytes, middlewares=[error_middleware])
    app[SETTINGS] = settings
    app[RUNTIME] = Runtime()
    app.cleanup_ctx.append(_executor)
    app.router.add_get("/ping", ping)
    app.router.add_post("/invocations", invocations, expect_handler=expect_continue)
    app.router.add_get("/execution-parameters", execution_parameters)
    add_openapi_route(app, settings.multi_model)
    if settings.multi_model:
        add_model_routes(app, invoke, expect_continue)
    return app
