"""The HTTP floor: aiohttp answering a constant, one process per core sharing the port."""

from __future__ import annotations

import os
import sys

from aiohttp import web


async def constant(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b"0\n", content_type="text/csv")


def main() -> None:
    port, processes = int(sys.argv[1]), int(sys.argv[2])
    for _ in range(processes - 1):
        if os.fork() == 0:
            break
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/invocations", constant)
    app.router.add_get("/ping", lambda request: web.Response(text="ok"))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=port, reuse_port=True, print=None, access_log=None)


if __name__ == "__main__":
    main()
