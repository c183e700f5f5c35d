"""One error path: typed errors become the JSON error shape; anything else a short 500."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from .appkeys import SETTINGS
from .errors import PayloadTooLargeError, SagecraftError

log = logging.getLogger(__name__)


def error_response(status: int, kind: str, message: str) -> web.Response:
    body = orjson.dumps({"code": status, "type": kind, "message": message})
    return web.Response(status=status, body=body, content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SagecraftError as exc:
        if exc.status >= 500 and exc.status != 503:  # 503: still loading, expected at start
            log.error("%s %s: %s", request.method, request.path, exc)
        return error_response(exc.status, exc.kind, str(exc))
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_payload_bytes
        exc = PayloadTooLargeError(
            f"the body exceeds the limit of {limit} bytes; raise SAGECRAFT_MAX_PAYLOAD_MB"
        )
        return error_response(exc.status, exc.kind, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, type(exc).__name__.removeprefix("HTTP"), exc.reason)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "InternalError", "internal error; the server log has details")
