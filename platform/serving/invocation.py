"""One invocation, from its headers to its answer: the request path of /invocations and of a
multi-model endpoint's /models/<name>/invoke.

Two paths, chosen by the body's declared size:
- **small** (at most SMALL_BODY_BYTES, not compressed): read as bytes and decoded on the event
  loop; up to INLINE_ROWS rows are predicted there too (with other requests' rows, by the batcher,
  when the answer is the label), because a thread hop costs more than a few rows' work. A plugin
  whose `predict` must not run on the loop says so (`AlgorithmInfo.predict_in_thread`), and its
  small requests go to the pool whole.
- **large**: the body is spooled (to disk beyond SPOOL_BYTES), inflated if compressed, and decoded,
  predicted and encoded in the prediction pool. Line-oriented bodies (CSV, JSON Lines) larger than
  a slice go a slice of whole lines at a time, so a 100 MB batch or a 1 GB asynchronous payload
  never exists as one big table, and the answer is spooled and streamed back.

With `record_errors`, a record that cannot be read answers an error marker on its own line while
the other records are predicted (batch transform keeps every record's place).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import IO, Any, TypeVar

import numpy as np
import orjson
import pandas as pd
from aiohttp import HttpVersion11, web

from ..content_registry import SMALL_BODY_BYTES, ContentTypeRegistry
from ..environment import ServingSettings
from ..errors import (
    BadRequestError,
    OverloadedError,
    PredictionTimeoutError,
    RequestTimeoutError,
    SagecraftError,
)
from ..loaded_model import LoadedModel
from ..media_types import CSV, JSONLINES
from ..memory import release_memory
from .appkeys import EXECUTOR, RUNTIME, SETTINGS, Runtime, Services
from .bodies import SPOOL_BYTES, declared_length, read_body, read_bytes
from .content_encoding import IDENTITY, content_coding, inflate
from .encoders import encode_batch_lines
from .middleware import error_response
from .outputs import answer_for, labels_only
from .request_format import TARGET_MODEL, RequestFormat, check_header_length
from .tables import feature_table

T = TypeVar("T")
# A small body is predicted on the event loop when it holds at most this many rows: 16 KiB can
# hold 4,000 rows of one feature, and the loop must stay free for /ping.
INLINE_ROWS = 64
SLICE_BYTES = 2 * 1024 * 1024  # measured: peak memory grows ~80 MiB whatever the payload size
SEND_CHUNK = 1024 * 1024
# After a body of this size, memory is handed back to the OS, at most once per interval (see
# _release_soon): a release per 10,000-row request cost the serving benchmark about a tenth.
RELEASE_AFTER_BYTES = 1024 * 1024
RELEASE_INTERVAL_S = 1.0
# The answer of a batch transform (SAGEMAKER_BATCH) by a model that answers as a built-in
# algorithm: its own line format, sent as text/csv.
BATCH_LINES = "text/csv; sagecraft=batch-lines"


async def invoke(request: web.Request, model_name: str) -> web.StreamResponse:
    """Answer one invocation of `model_name`.

    A worker holds at most `max_concurrent_requests` invocations: beyond that it answers 503 with
    Retry-After at once instead of queueing without bound. Each has `request_timeout_s` to arrive
    (else 408) and be answered (else 504)."""
    settings, runtime = request.app[SETTINGS], request.app[RUNTIME]
    services = runtime.ready()
    if runtime.in_flight >= settings.max_concurrent_requests:
        raise OverloadedError(
            f"this worker is answering {runtime.in_flight} requests, its limit "
            "(SAGECRAFT_MAX_CONCURRENT_REQUESTS); retry shortly"
        )
    runtime.in_flight += 1
    try:
        deadline = asyncio.get_running_loop().time() + settings.request_timeout_s
        return await _invoke(request, model_name, settings, services, deadline)
    finally:
        runtime.in_flight -= 1


async def _invoke(
    request: web.Request, model_name: str, settings: ServingSettings, services: Services, deadline: float
) -> web.StreamResponse:
    check_header_length(TARGET_MODEL, request.headers.get(TARGET_MODEL))
    form = services.formats.of(request.headers)
    coding = content_coding(request.headers.get("Content-Encoding"))
    # A compressed body is small or large by what it inflates to, which only inflating tells.
    small = (
        request.content_length is not None
        and request.content_length <= SMALL_BODY_BYTES
        and coding == IDENTITY
    )
    # One timer for the request; what it interrupts decides the answer. None where nothing can
    # wait: the body has arrived, the model is loaded, and a small request's work runs on the
    # event loop, where a timer could not interrupt it anyway (measured: a timer costs about a
    # tenth of the single-row throughput).
    waits = not (small and request.content.is_eof() and services.registry.is_ready(model_name))
    timer = asyncio.timeout_at(deadline) if waits else contextlib.nullcontext()
    result: bytes | IO[bytes]
    answered_as = form.accept
    reading = True
    try:
        async with timer:
            if small:
                data = await read_bytes(request, settings.max_payload_bytes)
                reading = False
                result, answered_as = await _answer_small(request.app, model_name, services, form, data)
            else:
                body = await read_body(request, settings.max_payload_bytes)
                reading = False
                result, answered_as = await _answer_large(
                    request.app, model_name, services, form, body, coding
                )
    except TimeoutError:
        if reading:
            raise RequestTimeoutError(
                f"the body did not arrive within {settings.request_timeout_s:g} s (SAGECRAFT_REQUEST_TIMEOUT)"
            ) from None
        raise PredictionTimeoutError(
            f"the prediction did not finish within {settings.request_timeout_s:g} s "
            "(SAGECRAFT_REQUEST_TIMEOUT); send fewer rows per request"
        ) from None
    return await send_answer(request, result, CSV if answered_as == BATCH_LINES else answered_as)


async def answer_forwarded(
    app: web.Application,
    model_name: str,
    form: RequestFormat,
    body: bytes | IO[bytes],
    coding: str,
) -> tuple[bytes | IO[bytes], str]:
    """The answer and its content type for a body a multi-model endpoint's front worker read and
    handed on (see routed.py): the model host's half of `invoke`. Bytes of at most
    SMALL_BODY_BYTES, not compressed, take the small path, anything else the large one."""
    services = app[RUNTIME].ready()
    if isinstance(body, bytes) and len(body) <= SMALL_BODY_BYTES and coding == IDENTITY:
        result, answered_as = await _answer_small(app, model_name, services, form, body)
    else:
        spooled = io.BytesIO(body) if isinstance(body, bytes) else body
        result, answered_as = await _answer_large(app, model_name, services, form, spooled, coding)
    return result, CSV if answered_as == BATCH_LINES else answered_as


def _for_model(form: RequestFormat, model: LoadedModel, settings: ServingSettings) -> RequestFormat:
    """The request's format for this model: in a batch transform (SAGEMAKER_BATCH), a model that
    answers as a built-in algorithm answers its default one line a row, whatever Accept says, as
    that algorithm does."""
    if settings.batch_transform and model.builtin_default is not None and form.output is None:
        return RequestFormat(form.content_type, BATCH_LINES, None)
    return form


async def _answer_small(
    app: web.Application, model_name: str, services: Services, form: RequestFormat, data: bytes
) -> tuple[bytes | IO[bytes], str]:
    """The answer to a small body, decoded on the event loop and, for a few rows, predicted there
    too. Labels are predicted with other requests' rows (see batching.py). Many rows in few
    bytes, per-record errors and plugins that predict in a thread go to the pool."""
    types, registry, executor = services.content_types, services.registry, app[EXECUTOR]
    record_errors = app[SETTINGS].record_errors
    async with registry.use(model_name) as model:
        form = _for_model(form, model, app[SETTINGS])
        if record_errors or model.algorithm.info.predict_in_thread:
            answered = await _in_thread(
                executor,
                answer_bytes,
                model,
                types,
                form.content_type,
                data,
                form.accept,
                record_errors,
                form.output,
            )
            return answered, form.accept
        if app[SETTINGS].batching and labels_only(model, form.output):
            # Plain numbers skip the DataFrame: the batcher builds one for the whole batch.
            rows = types.read_numbers(form.content_type, data, model.feature_names)
            if rows is None:
                rows = types.decode(form.content_type, data, model.feature_names)
            if len(rows) <= INLINE_ROWS:
                return types.encode(
                    form.accept, await registry.batcher(model_name).predict(rows)
                ), form.accept
            features = (
                rows
                if isinstance(rows, pd.DataFrame)
                else feature_table(np.asarray(rows, dtype=np.float64), model.feature_names)
            )
        else:
            features = types.decode(form.content_type, data, model.feature_names)
        if len(features) <= INLINE_ROWS:
            return encode_answer(model, types, features, form.accept, form.output), form.accept
        answered = await _in_thread(executor, encode_answer, model, types, features, form.accept, form.output)
        return answered, form.accept


async def _answer_large(
    app: web.Application,
    model_name: str,
    services: Services,
    form: RequestFormat,
    body: IO[bytes],
    coding: str,
) -> tuple[IO[bytes], str]:
    """The answer to a large (or compressed) body, all of its work in the prediction pool."""
    executor, settings = app[EXECUTOR], app[SETTINGS]
    if coding != IDENTITY:
        body = await _in_thread(executor, inflate, body, coding, settings.max_payload_bytes)
    size = body.seek(0, io.SEEK_END)
    body.seek(0)
    async with services.registry.use(model_name) as model:
        form = _for_model(form, model, settings)
        try:
            answered = await _in_thread(
                executor,
                answer,
                model,
                services.content_types,
                form.content_type,
                body,
                form.accept,
                settings.record_errors,
                form.output,
            )
            return answered, form.accept
        finally:
            if size >= RELEASE_AFTER_BYTES:  # what it decoded to is garbage now
                _release_soon(app)


def _release_soon(app: web.Application) -> None:
    """Give freed memory back to the OS in the pool, one release at a time and at most one per
    RELEASE_INTERVAL_S (a full collection holds the GIL for about 5 ms: worth it after a body of
    megabytes now and then, not after every such request under load)."""
    runtime: Runtime = app[RUNTIME]
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


async def _in_thread(executor: Executor, function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in the prediction pool, so that the event loop keeps answering /ping."""
    return await asyncio.get_running_loop().run_in_executor(executor, function, *args)


async def send_answer(
    request: web.Request, result: bytes | IO[bytes], content_type: str
) -> web.StreamResponse:
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
    settings, services = request.app[SETTINGS], request.app[RUNTIME].services
    try:
        declared_length(request, settings.max_payload_bytes)
        content_coding(request.headers.get("Content-Encoding"))
        if services is not None:
            services.formats.of(request.headers)
    except SagecraftError as exc:
        response = error_response(exc.status, exc.kind, str(exc))
        response.force_close()
        return response
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer's own size counts from here, as aiohttp does
    return None


# --- the work, in the prediction pool (or, for a few rows, on the event loop) ----------------


def encode_answer(
    model: LoadedModel, types: ContentTypeRegistry, features: pd.DataFrame, accept: str, output: str | None
) -> bytes:
    """The encoded answer for a decoded table."""
    return _encode(types, accept, answer_for(model, features, output, accept))


def _encode(types: ContentTypeRegistry, accept: str, predictions: np.ndarray) -> bytes:
    return encode_batch_lines(predictions) if accept == BATCH_LINES else types.encode(accept, predictions)


def answer_bytes(
    model: LoadedModel,
    types: ContentTypeRegistry,
    content_type: str,
    data: bytes,
    accept: str,
    record_errors: bool = False,
    output: str | None = None,
) -> bytes:
    """Decode, predict and encode a body held in memory."""
    if _per_record(types, content_type, accept, record_errors):
        return _predict_records(model, types, content_type, data, accept, output)
    return encode_answer(model, types, types.decode(content_type, data, model.feature_names), accept, output)


def answer(
    model: LoadedModel,
    types: ContentTypeRegistry,
    content_type: str,
    body: IO[bytes],
    accept: str,
    record_errors: bool = False,
    output: str | None = None,
) -> IO[bytes]:
    """Decode, predict and encode a spooled body, slice by slice when it is line-oriented and
    large. Returns the answer as a file (in memory when small) for the handler to send."""
    with body:
        sliced = content_type in types.line_oriented and not _per_record(
            types, content_type, accept, record_errors
        )
        if sliced and _size(body) > SLICE_BYTES:
            if accept in types.line_oriented_out or accept == BATCH_LINES:
                out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (returned)
                for predictions in _slices(model, types, content_type, body, output, accept):
                    out.write(_encode(types, accept, predictions))
                out.seek(0)
                return out
            slices = _slices(model, types, content_type, body, output, accept)
            return _spooled(_encode(types, accept, np.concatenate(list(slices))))
        return _spooled(answer_bytes(model, types, content_type, body.read(), accept, record_errors, output))


def _per_record(types: ContentTypeRegistry, content_type: str, accept: str, record_errors: bool) -> bool:
    """Whether each line gets its own answer (or error marker): with `record_errors`, when both
    the body and the answer are one record per line."""
    return record_errors and content_type in types.line_oriented and accept in types.line_oriented_out


def _size(body: IO[bytes]) -> int:
    position = body.tell()
    size = body.seek(0, io.SEEK_END)
    body.seek(position)
    return size


def _line_slices(body: IO[bytes]) -> Iterator[bytes]:
    """Consecutive pieces of whole lines, about SLICE_BYTES each."""
    carry = b""
    while True:
        block = body.read(SLICE_BYTES)
        if not block:
            break
        block = carry + block
        cut = block.rfind(b"\n")
        if cut < 0:
            carry = block
            continue
        carry = block[cut + 1 :]
        yield block[: cut + 1]
    if carry:
        yield carry


def _slices(
    model: LoadedModel,
    types: ContentTypeRegistry,
    content_type: str,
    body: IO[bytes],
    output: str | None,
    accept: str,
) -> Iterator[np.ndarray]:
    """Predictions for consecutive slices of whole lines of a large line-oriented body."""
    first_row = 1
    for piece in _line_slices(body):
        features = types.decode(content_type, piece, model.feature_names, first_row=first_row)
        yield answer_for(model, features, output, accept)
        first_row += len(features)
    if first_row == 1:
        raise BadRequestError("the request body is empty")


def _spooled(data: bytes) -> IO[bytes]:
    if len(data) <= SPOOL_BYTES:
        return io.BytesIO(data)
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (returned)
    out.write(data)
    out.seek(0)
    return out


def _error_marker(accept: str, message: str) -> bytes:
    if accept == JSONLINES:
        return orjson.dumps({"error": message})
    return orjson.dumps(f"error: {message}")  # a quoted CSV field


def _predict_records(
    model: LoadedModel,
    types: ContentTypeRegistry,
    content_type: str,
    body: bytes,
    accept: str,
    output: str | None,
) -> bytes:
    """One output line per input line; unreadable lines get an error marker instead."""
    lines = body.strip(b"\r\n").split(b"\n")
    good: list[int] = []
    frames = []
    markers: dict[int, bytes] = {}
    for index, line in enumerate(lines):
        if not line.strip():
            markers[index] = _error_marker(accept, f"row {index + 1} is empty")
            continue
        try:
            frames.append(types.decode(content_type, line, model.feature_names, first_row=index + 1))
            good.append(index)
        except BadRequestError as exc:
            markers[index] = _error_marker(accept, str(exc))
    answers: list[bytes] = []
    if frames:
        predictions = answer_for(model, pd.concat(frames, ignore_index=True), output, accept)
        answers = types.encode(accept, predictions).rstrip(b"\n").split(b"\n")
    by_line = dict(zip(good, answers, strict=True))
    return b"".join((markers.get(i) or by_line[i]) + b"\n" for i in range(len(lines)))
