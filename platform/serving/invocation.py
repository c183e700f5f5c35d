"""One invocation: read the body (spooled to disk when large), decode, predict, encode.

Line-oriented bodies (CSV, JSON Lines) larger than a slice are decoded and predicted a slice of whole
lines at a time, so a 100 MB batch or a 1 GB asynchronous payload never exists as one big table.
With `record_errors`, a record that cannot be read answers an error marker on its own line while
the other records are predicted (batch transform keeps every record's place). Answers are spooled
too, so a large request's answer is written slice by slice and streamed back.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from typing import IO

import numpy as np
import orjson
import pandas as pd
from aiohttp import web

from ..content_registry import ContentTypeRegistry
from ..errors import BadRequestError, PayloadTooLargeError
from ..loaded_model import LoadedModel
from ..media_types import JSONLINES
from .outputs import PREDICTED_LABEL, predict_output

SLICE_BYTES = 2 * 1024 * 1024  # measured: peak memory grows ~80 MiB whatever the payload size
SPOOL_BYTES = 32 * 1024 * 1024
READ_CHUNK = 1024 * 1024


def _too_large(size: int, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the body has {size} bytes, over the limit of {limit}; raise SAGECRAFT_MAX_PAYLOAD_MB"
    )


def declared_length(request: web.Request, limit: int) -> int | None:
    """The request's Content-Length (None when chunked); PayloadTooLargeError when over `limit`."""
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(length, limit)
    return length


async def read_bytes(request: web.Request, limit: int) -> bytes:
    """The body in memory, for a request whose Content-Length is at most SPOOL_BYTES."""
    declared_length(request, limit)
    return await request.read()


async def read_body(request: web.Request, limit: int) -> IO[bytes]:
    """The body as a file: in memory up to SPOOL_BYTES, on disk beyond, never over `limit`."""
    length = declared_length(request, limit)
    if length is not None and length <= SPOOL_BYTES:
        return io.BytesIO(await request.read())
    body: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (returned)
    total = 0
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        total += len(chunk)
        if total > limit:
            body.close()
            raise PayloadTooLargeError(
                f"the body exceeds the limit of {limit} bytes; raise SAGECRAFT_MAX_PAYLOAD_MB"
            )
        body.write(chunk)
    body.seek(0)
    return body


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
    model: LoadedModel, types: ContentTypeRegistry, content_type: str, body: IO[bytes], output: str
) -> Iterator[np.ndarray]:
    """Predictions for consecutive slices of whole lines of a large line-oriented body."""
    first_row = 1
    for piece in _line_slices(body):
        features = types.decode(content_type, piece, model.feature_names, first_row=first_row)
        yield predict_output(model, features, output)
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
    model: LoadedModel, types: ContentTypeRegistry, content_type: str, body: bytes, accept: str, output: str
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
        predictions = predict_output(model, pd.concat(frames, ignore_index=True), output)
        answers = types.encode(accept, predictions).rstrip(b"\n").split(b"\n")
    by_line = dict(zip(good, answers, strict=True))
    return b"".join((markers.get(i) or by_line[i]) + b"\n" for i in range(len(lines)))


def encode_answer(
    model: LoadedModel, types: ContentTypeRegistry, features: pd.DataFrame, accept: str, output: str
) -> bytes:
    """The encoded answer for a decoded table."""
    return types.encode(accept, predict_output(model, features, output))


def answer(
    model: LoadedModel,
    types: ContentTypeRegistry,
    content_type: str,
    body: IO[bytes],
    accept: str,
    record_errors: bool = False,
    output: str = PREDICTED_LABEL,
) -> IO[bytes]:
    """Decode, predict and encode one request; runs in a worker thread. Returns the answer as a
    file (in memory when small) for the handler to send."""
    with body:
        line_oriented = content_type in types.line_oriented
        if record_errors and line_oriented and accept in types.line_oriented_out:
            return _spooled(_predict_records(model, types, content_type, body.read(), accept, output))
        if line_oriented and _size(body) > SLICE_BYTES:
            if accept in types.line_oriented_out:
                out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (returned)
                for predictions in _slices(model, types, content_type, body, output):
                    out.write(types.encode(accept, predictions))
                out.seek(0)
                return out
            return _spooled(
                types.encode(accept, np.concatenate(list(_slices(model, types, content_type, body, output))))
            )
        features = types.decode(content_type, body.read(), model.feature_names)
        return _spooled(encode_answer(model, types, features, accept, output))


def _size(body: IO[bytes]) -> int:
    position = body.tell()
    size = body.seek(0, io.SEEK_END)
    body.seek(position)
    return size
