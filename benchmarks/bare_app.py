"""``python -m benchmarks.bare_app PORT``: the framework's floor, a bare aiohttp + uvloop application.

No middleware and nothing else: ``GET /noop`` answers the same fixed JSON body as the gateway's
``/_bench/noop``, and ``POST /post-json`` reads and parses a JSON body (orjson, as the gateway
does) before answering it, so a body's own cost is visible beside the lookups. The benchmarks
measure it in the same rounds, pinning and connections as the gateway: every ratio to it says
how far a route is from what aiohttp itself allows on this machine.
"""

from __future__ import annotations

import asyncio
import sys

import orjson
import uvloop
from aiohttp import web

BODY = b'{"ok":true}'


async def noop(request: web.Request) -> web.Response:
    """Do nothing: the floor."""
    return web.Response(body=BODY, content_type="application/json")


async def post_json(request: web.Request) -> web.Response:
    """Read and parse the JSON body, then answer the fixed one."""
    orjson.loads(await request.read())
    return web.Response(body=BODY, content_type="application/json")


def make_app() -> web.Application:
    """The bare application: two routes, no middleware."""
    app = web.Application()
    app.router.add_get("/noop", noop)
    app.router.add_post("/post-json", post_json)
    return app


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:``port`` until killed."""
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
