"""What a standby answers on ``[api] listen`` (DESIGN.md §9): every JSON-RPC request gets the
error ``NOT_LEADER`` (-32010) naming the leader (``"standby, leader is a"``, ``data: {"leader":
"a"}``), so a load balancer or a bot routes to it. Over a websocket and over HTTP ``POST`` on
the same port (answered 200, as JSON-RPC over HTTP answers errors), with the intent API's auth:
``Authorization: Bearer TOKEN`` or the token as the URL path; anything else gets 401.

It is a separate, tiny server on purpose: a standby holds no book (the leader's state lives in
the journal, loaded at takeover), so nothing of the intent API runs on it, and the API's own
server needs no change. At takeover the service closes it and starts the intent API on the
same port.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from broadcaster.ha.errors import NotLeader

__all__ = ["NOT_LEADER", "StandbyApi", "StandbyServer", "refusal"]

NOT_LEADER = -32010


def refusal(request: Any, leader: str | None) -> dict[str, Any] | None:
    """The answer to one JSON-RPC request on a standby (``None`` for a notification)."""
    request_id = request.get("id") if isinstance(request, dict) else None
    if isinstance(request, dict) and "id" not in request:
        return None
    return {
        "jsonrpc": "2.0",
        "id": request_id if type(request_id) in (int, str) else None,
        "error": {
            "code": NOT_LEADER,
            "message": str(NotLeader(leader)),
            "data": {"leader": leader},
        },
    }


class StandbyApi:
    """Refuses every request, naming ``leader()`` (see the module docstring)."""

    def __init__(self, tokens: Sequence[str], leader: Callable[[], str | None]) -> None:
        self._tokens = [t.encode() for t in tokens]
        self._leader = leader

    async def serve(self, host: str, port: int) -> StandbyServer:
        app = web.Application()
        app.router.add_route("*", "/", self._handle)
        app.router.add_route("*", "/{token}", self._handle)
        # At takeover the port is needed at once: open websockets are cut, not waited for.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        server = site._server  # the asyncio.Server: its socket knows the real port
        sockets = getattr(server, "sockets", None) or []
        bound = int(sockets[0].getsockname()[1]) if sockets else port
        return StandbyServer(runner, bound)

    def authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        candidate = token.strip() if scheme.lower() == "bearer" else request.match_info.get("token")
        if not candidate:
            return False
        raw = candidate.encode()
        return any(hmac.compare_digest(raw, known) for known in self._tokens)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return web.Response(status=401, text="missing or invalid bearer token\n")
        if request.method == "POST":
            reply = self.answer(await request.read())
            return web.Response(body=reply or b"", content_type="application/json")
        ws = web.WebSocketResponse()
        if not ws.can_prepare(request).ok:
            return web.Response(status=405, text="JSON-RPC: POST, or a websocket\n")
        await ws.prepare(request)
        async for message in ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                reply = self.answer(message.data)
                if reply is not None:
                    await ws.send_str(reply.decode())
        return ws

    def answer(self, message: str | bytes) -> bytes | None:
        leader = self._leader()
        try:
            payload = orjson.loads(message)
        except orjson.JSONDecodeError:
            return orjson.dumps(refusal({"id": None}, leader))
        if payload == []:  # JSON-RPC 2.0: an empty batch is one error, not an empty answer
            return orjson.dumps(refusal({"id": None}, leader))
        if isinstance(payload, list):
            replies = [r for r in (refusal(item, leader) for item in payload) if r]
            return orjson.dumps(replies) if replies else None
        reply = refusal(payload, leader)
        return orjson.dumps(reply) if reply is not None else None


class StandbyServer:
    """The running standby server: ``port``, and ``close()``."""

    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self._runner = runner
        self.port = port

    async def close(self) -> None:
        await self._runner.cleanup()
