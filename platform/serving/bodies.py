"""Reading a request's body, never past the payload limit: in memory when small, spooled to disk
when large. `too_large` is the one 413 answer for a body over SAGECRAFT_MAX_PAYLOAD_MB, however
that was found out (declared, counted while arriving, or expanded while inflating)."""

from __future__ import annotations

import io
import tempfile
from typing import IO

from aiohttp import web

from ..errors import PayloadTooLargeError

SPOOL_BYTES = 32 * 1024 * 1024
READ_CHUNK = 1024 * 1024


def too_large(limit: int, *, size: int | None = None, coding: str | None = None) -> PayloadTooLargeError:
    """The error for a body over `limit` bytes: `size` when its Content-Length declared one,
    `coding` when it was its inflated size that passed the limit."""
    if size is not None:
        what = f"the body has {size} bytes, over the limit of {limit}"
    elif coding is not None:
        what = f"the body expands to more than the limit of {limit} bytes (Content-Encoding: {coding})"
    else:
        what = f"the body exceeds the limit of {limit} bytes"
    return PayloadTooLargeError(f"{what}; raise SAGECRAFT_MAX_PAYLOAD_MB")


def declared_length(request: web.Request, limit: int) -> int | None:
    """The request's Content-Length (None when chunked); PayloadTooLargeError when over `limit`."""
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(limit, size=length)
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
            raise too_large(limit)
        body.write(chunk)
    body.seek(0)
    return body
