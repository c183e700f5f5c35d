"""The model API of a SageMaker multi-model endpoint: load, list, describe, unload, invoke."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from .appkeys import RUNTIME, SETTINGS, Runtime
from .errors import BadRequestError, ModelNotFoundError, NotReadyError
from .registry import ModelRegistry

PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


async def _registry(request: web.Request) -> ModelRegistry:
    runtime: Runtime = request.app[RUNTIME]
    await runtime.started.wait()
    if runtime.registry is None:
        raise NotReadyError("the server could not load its plugins; see the log")
    return runtime.registry


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


async def load_model(request: web.Request) -> web.Response:
    try:
        document = await request.json()
    except ValueError:
        raise BadRequestError("the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise BadRequestError('send {"model_name": "...", "url": "..."}')
    name = document.get("model_name")
    if not isinstance(name, str) or not name:
        raise BadRequestError("model_name must be a non-empty string")
    folder = model_folder(document.get("url"), request.app[SETTINGS].models_dir)
    registry = await _registry(request)
    await registry.load(name, folder, url=document["url"])
    return web.json_response({"status": f"model '{name}' loaded"})


async def list_models(request: web.Request) -> web.Response:
    registry = await _registry(request)
    try:
        limit = int(request.query.get("limit", PAGE_SIZE))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise BadRequestError(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}")
    models, token = registry.page(request.query.get("next_page_token"), limit)
    body: dict[str, object] = {"models": models}
    if token is not None:
        body["nextPageToken"] = token
    return web.json_response(body)


async def describe_model(request: web.Request) -> web.Response:
    registry = await _registry(request)
    return web.json_response(registry.describe(request.match_info["name"]))


async def unload_model(request: web.Request) -> web.Response:
    registry = await _registry(request)
    name = request.match_info["name"]
    await registry.unload(name)
    return web.json_response({"status": f"model '{name}' unloaded"})


def add_model_routes(
    app: web.Application, invoke: Callable[[web.Request, str], Awaitable[web.Response]],
    expect_handler: Callable[[web.Request], Awaitable[web.Response | None]] | None = None,
) -> None:
    async def invoke_model(request: web.Request) -> web.Response:
        await _registry(request)
        return await invoke(request, request.match_info["name"])

    app.router.add_post("/models", load_model)
    app.router.add_get("/models", list_models)
    app.router.add_post("/models/{name:.+}/invoke", invoke_model, expect_handler=expect_handler)
    app.router.add_get("/models/{name:.+}", describe_model)
    app.router.add_delete("/models/{name:.+}", unload_model)
