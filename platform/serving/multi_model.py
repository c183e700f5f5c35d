"""The model API of a SageMaker multi-model endpoint: load, list, describe, unload, invoke.

These routes run in the front workers: each call is checked here (the name, the folder) and then
made to the endpoint's parent (fleet.py), which owns the models; an invocation goes to the model's
host (routed.py)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from ..errors import BadRequestError, ModelNotFoundError, NotReadyError
from .appkeys import RUNTIME, SETTINGS, Runtime
from .invocation import expect_continue
from .routed import FleetClient, routed_invoke

PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


async def _fleet(request: web.Request) -> FleetClient:
    runtime: Runtime = request.app[RUNTIME]
    await runtime.started.wait()
    if runtime.fleet is None:
        raise NotReadyError("the server could not start; see the log")
    return runtime.fleet


def model_folder(url: object, models_dir: Path) -> Path:
    """The folder SageMaker unpacked the model into, confined to `models_dir`.

    The name is never used to build a path. The url, and every file under it, must resolve inside
    `models_dir` once `..` and symbolic links are followed: a model cannot make the server read
    another model's files or anything else on the machine."""
    if not isinstance(url, str) or not url or "\x00" in url:
        raise BadRequestError('send {"model_name": "...", "url": "/opt/ml/models/<name>/model"}')
    try:
        root = models_dir.resolve()
        folder = Path(url).resolve()
        if not folder.is_relative_to(root) or folder == root:
            raise BadRequestError(f"url {url} is outside the models folder {models_dir}")
        if not folder.is_dir():
            raise ModelNotFoundError(f"model folder {url} does not exist")
        for path in folder.rglob("*"):
            if not path.resolve().is_relative_to(root):
                raise BadRequestError(
                    f"{path} links to {path.resolve()}, outside the models folder {models_dir}"
                )
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop
        raise BadRequestError(f"url {url} cannot be followed: {exc}") from None
    return folder


MAX_NAME_CHARS = 1024  # SageMaker's TargetModel
# The longest name, percent-encoded, that leaves room in aiohttp's 8190-byte request line for
# `DELETE /models/` ... `/invoke HTTP/1.1`.
MAX_ENCODED_NAME = 8000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_model_name(name: object) -> str:
    """The name, if every route can reach it (`/models/<name>/invoke`, `GET` and `DELETE
    /models/<name>`, the name percent-encoded, slashes too): BadRequestError saying why not.
    Any printable name is a key (never a path); a name with a control character, one that is not
    valid Unicode, or one too long for a request line once encoded could be loaded but never
    invoked or deleted."""
    if not isinstance(name, str) or not name:
        raise BadRequestError("model_name must be a non-empty string")
    problem = None
    if len(name) > MAX_NAME_CHARS:
        problem = f"it has {len(name)} characters, over {MAX_NAME_CHARS}"
    elif _CONTROL.search(name):
        problem = "it holds a control character"
    else:
        try:
            encoded = len(quote(name.encode("utf-8"), safe=""))
        except UnicodeEncodeError:
            encoded = None
        if encoded is None:
            problem = "it is not valid Unicode text"
        elif encoded > MAX_ENCODED_NAME:
            problem = (
                f"percent-encoded it takes {encoded} bytes, too long for a request line "
                f"(at most {MAX_ENCODED_NAME})"
            )
    if problem:
        raise BadRequestError(f"model_name {name[:60]!a} cannot be used: {problem}")
    return name


async def load_model(request: web.Request) -> web.Response:
    try:
        document = await request.json()
    except ValueError:
        raise BadRequestError("the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise BadRequestError('send {"model_name": "...", "url": "..."}')
    name = check_model_name(document.get("model_name"))
    folder = model_folder(document.get("url"), request.app[SETTINGS].models_dir)
    fleet = await _fleet(request)
    await fleet.call("load", name=name, folder=str(folder), url=document["url"])
    return web.json_response({"status": f"model '{name}' loaded"})


async def list_models(request: web.Request) -> web.Response:
    fleet = await _fleet(request)
    try:
        limit = int(request.query.get("limit", PAGE_SIZE))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise BadRequestError(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}")
    page = await fleet.call("list", token=request.query.get("next_page_token"), limit=limit)
    body: dict[str, object] = {"models": page["models"]}
    if page.get("token") is not None:
        body["nextPageToken"] = page["token"]
    return web.json_response(body)


async def describe_model(request: web.Request) -> web.Response:
    fleet = await _fleet(request)
    described = await fleet.call("describe", name=request.match_info["name"])
    return web.json_response(described["model"])


async def unload_model(request: web.Request) -> web.Response:
    fleet = await _fleet(request)
    name = request.match_info["name"]
    await fleet.call("unload", name=name)
    return web.json_response({"status": f"model '{name}' unloaded"})


def add_model_routes(app: web.Application) -> None:
    """The model API's routes, on a multi-model endpoint's application."""

    async def invoke_model(request: web.Request) -> web.StreamResponse:
        await _fleet(request)
        return await routed_invoke(request, request.match_info["name"])

    app.router.add_post("/models", load_model)
    app.router.add_get("/models", list_models)
    app.router.add_post("/models/{name:.+}/invoke", invoke_model, expect_handler=expect_continue)
    app.router.add_get("/models/{name:.+}", describe_model)
    app.router.add_delete("/models/{name:.+}", unload_model)
