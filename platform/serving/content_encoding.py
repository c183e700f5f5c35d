"""Request bodies sent with `Content-Encoding: gzip` or `deflate`, inflated in a worker thread and
never past the payload limit.

aiohttp would inflate a body on the event loop as its bytes arrive, each read at once: the rest of
a 1 MB gzip bomb (1 GB of zeros) held /ping for 1.4 s. So the server reads the body as sent and
`inflate` expands it here, in slices, stopping as soon as the expanded size passes the limit: a
body is large or small by what it expands to, not by what it weighs.
"""

from __future__ import annotations

import tempfile
import zlib
from typing import IO

from ..errors import BadRequestError, UnsupportedMediaTypeError
from .bodies import SPOOL_BYTES, too_large

IDENTITY = "identity"
# zlib's window bits: gzip framing, zlib framing (HTTP's "deflate"); raw deflate as sent by some
# clients for "deflate" is tried when the zlib header is absent.
_WINDOW_BITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}
SLICE_BYTES = 1024 * 1024


def content_coding(header: str | None) -> str:
    """The body's coding from its Content-Encoding header: identity, gzip or deflate;
    UnsupportedMediaTypeError (415) for any other, or for several."""
    coding = (header or IDENTITY).strip().lower()
    if coding == IDENTITY or coding in _WINDOW_BITS:
        return coding
    raise UnsupportedMediaTypeError(
        f"Content-Encoding '{coding[:40]}' is not supported; send gzip, deflate or identity"
    )


def inflate(body: IO[bytes], coding: str, limit: int) -> IO[bytes]:
    """The expanded body as a file (in memory up to SPOOL_BYTES); `body` is closed. Raises
    PayloadTooLargeError once the expanded size passes `limit`, BadRequestError for a body that
    is not what its coding says."""
    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (returned)
    bits = _WINDOW_BITS[coding]
    inflater = zlib.decompressobj(bits)
    total = 0
    try:
        with body:
            first = True
            while chunk := body.read(SLICE_BYTES):
                if first and bits == 15 and chunk[:1] and (chunk[0] & 0x0F) != 8:
                    inflater = zlib.decompressobj(-15)  # raw deflate, without zlib's header
                first = False
                while chunk:
                    # At most what the limit still allows, plus one byte to know it was passed.
                    piece = inflater.decompress(chunk, limit - total + 1)
                    total += len(piece)
                    if total > limit:
                        raise too_large(limit, coding=coding)
                    out.write(piece)
                    chunk = inflater.unconsumed_tail
            if not inflater.eof:
                raise BadRequestError(f"the {coding} body ends before its compressed data does")
    except zlib.error as exc:
        out.close()
        raise BadRequestError(f"the body is not valid {coding} data: {exc}") from None
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out
