"""A JSON-RPC endpoint on 127.0.0.1 in front of anvil that records every raw transaction it is
sent, and may misbehave: the service's ``[[rpcs]]`` entry in the signer and RPC fault suites.

``mode``: ``honest`` forwards everything; ``stall`` never answers; ``5xx`` answers 503;
``txpool`` answers every ``eth_sendRawTransaction`` with the next txpool error string of
``broadcaster/rpc/error_table.py`` (reads are forwarded); ``liar`` answers ``already known`` without
forwarding the transaction (reads are forwarded).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from broadcaster.dev.local_http import serve_post
from broadcaster.rpc.error_table import MESSAGE_RULES


class RecordingRpc:
    def __init__(self, upstream: str, mode: str = "honest") -> None:
        self.upstream = upstream
        self.mode = mode
        self.raws: list[bytes] = []  # every raw tx received, in order
        self.served: list[str] = []  # txpool strings answered
        self.requests = 0
        self._strings = itertools.cycle([pattern for pattern, _ in MESSAGE_RULES])
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def __aenter__(self) -> RecordingRpc:
        self._session = aiohttp.ClientSession(headers={"content-type": "application/json"})
        self._runner, self.port = await serve_post(self._handle, shutdown_timeout=0.5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        calls = orjson.loads(body)
        for call in calls if isinstance(calls, list) else [calls]:
            if call.get("method") == "eth_sendRawTransaction":
                self.raws.append(bytes.fromhex(call["params"][0][2:]))
        if self.mode == "stall":
            await asyncio.Event().wait()  # never answers (cancelled at teardown)
        if self.mode == "5xx":
            return web.Response(status=503, text="upstream unavailable")
        if (
            self.mode in ("txpool", "liar")
            and isinstance(calls, dict)
            and calls.get("method") == "eth_sendRawTransaction"
        ):
            message = next(self._strings) if self.mode == "txpool" else "already known"
            self.served.append(message)
            reply: Any = {
                "jsonrpc": "2.0",
                "id": calls.get("id"),
                "error": {"code": -32000, "message": message},
            }
            return web.Response(body=orjson.dumps(reply), content_type="application/json")
        assert self._session is not None
        async with self._session.post(self.upstream, data=body) as upstream:
            data = await upstream.read()
        return web.Response(body=data, status=upstream.status, content_type="application/json")
