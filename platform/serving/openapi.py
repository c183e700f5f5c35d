"""The OpenAPI description of the HTTP API, shipped in the package and served at /openapi.json."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from aiohttp import web

MULTI_MODEL_PREFIX = "/models"


def api_description(multi_model: bool) -> dict[str, Any]:
    """The document for this server: the /models routes only on a multi-model endpoint."""
    document = json.loads(resources.files("sagecraft.serving").joinpath("openapi.json").read_text("utf-8"))
    if not multi_model:
        document["paths"] = {
            path: item for path, item in document["paths"].items() if not path.startswith(MULTI_MODEL_PREFIX)
        }
    return document


def add_openapi_route(app: web.Application, multi_model: bool) -> None:
    body = json.dumps(api_description(multi_model)).encode()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app.router.add_get("/openapi.json", openapi)
