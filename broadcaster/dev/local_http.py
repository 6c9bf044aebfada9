"""A JSON-RPC-over-HTTP endpoint on 127.0.0.1 for the dev tools and test doubles (the demo's
builder, the tests' builder double and RPC fakes): one aiohttp app answering ``POST /``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = ["serve_post"]


async def serve_post(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], **runner: Any
) -> tuple[web.AppRunner, int]:
    """Start an app whose ``POST /`` is ``handler`` on a free port of 127.0.0.1; returns the
    runner (``cleanup()`` stops it) and the port. ``runner``: more ``web.AppRunner`` options
    (e.g. ``shutdown_timeout``)."""
    app = web.Application()
    app.router.add_post("/", handler)
    app_runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    return app_runner, int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
