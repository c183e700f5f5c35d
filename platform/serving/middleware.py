"""One error path: typed errors become the JSON error shape; anything else a short 500."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import SagecraftError
from .appkeys import SETTINGS
from .bodies import too_large

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 1000


def error_response(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    # Messages may quote what the client sent: undecodable bytes (kept by aiohttp as surrogates)
    # are escaped, and the quote is cut so that the answer stays short.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    body = orjson.dumps({"code": status, "type": kind, "message": message})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _unread_body_closes(request: web.Request, response: web.Response) -> web.Response:
    """An error answered before the body was read whole (413, 408) closes the connection after
    the answer: keeping it open would mean reading, and inflating, the rest of a body nobody wants
    (measured: the rest of a 1 MB gzip bomb held the event loop, and /ping, for 1.4 s)."""
    if request.body_exists and not request.content.is_eof():
        response.force_close()
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SagecraftError as exc:
        if exc.status >= 500 and exc.status != 503:  # 503: still loading, expected at start
            log.error("%s %s: %s", request.method, request.path, exc)
        return _unread_body_closes(
            request, error_response(exc.status, exc.kind, str(exc), exc.headers or None)
        )
    except web.HTTPRequestEntityTooLarge:
        too = too_large(request.app[SETTINGS].max_payload_bytes)
        return _unread_body_closes(request, error_response(too.status, too.kind, str(too)))
    except ConnectionResetError as exc:  # aiohttp's ClientConnectionResetError too
        # The client went away (its answer has nowhere to go): one line, not an ERROR.
        log.info(
            "%s %s: the client closed the connection before its answer (%s)",
            request.method,
            request.path,
            exc,
        )
        return error_response(400, "ClientDisconnected", "the connection was closed")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # 405 must say which methods the route has (RFC 9110): keep aiohttp's Allow header.
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, type(exc).__name__.removeprefix("HTTP"), exc.reason, allow)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "InternalError", "internal error; the server log has details")
