"""What a standby answers on ``[api] listen`` (DESIGN.md §9): every JSON-RPC request gets the
error ``NOT_LEADER`` (-32010) naming the leader (``"standby, leader is a"``, ``data: {"leader":
"a"}``), so a load balancer or a bot routes to it. Same auth as the intent API (a bearer token
from ``[api] tokens``): no one learns anything without one.

It is a separate, tiny server on purpose: a standby holds no book (the leader's state lives in
the journal, loaded at takeover), so nothing of the intent API runs on it. At takeover the
service closes it and starts the real API on the same port.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from broadcaster.ha.errors import NotLeader

__all__ = ["NOT_LEADER", "StandbyApi", "refusal"]

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

    async def serve(self, host: str, port: int) -> Server:
        return await serve(
            self._handle, host, port, process_request=self._authorize, compression=None
        )

    def _authorize(self, connection: ServerConnection, request: Request) -> Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            candidate = token.strip().encode()
            if any(hmac.compare_digest(candidate, known) for known in self._tokens):
                return None
        return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or invalid bearer token\n")

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            async for message in ws:
                reply = self.answer(message)
                if reply is not None:
                    await ws.send(reply.decode())
        except ConnectionClosed:
            return

    def answer(self, message: str | bytes) -> bytes | None:
        leader = self._leader()
        try:
            payload = orjson.loads(message)
        except orjson.JSONDecodeError:
            return orjson.dumps(refusal({"id": None}, leader))
        if isinstance(payload, list):
            replies = [r for r in (refusal(item, leader) for item in payload) if r]
            return orjson.dumps(replies) if replies else None
        reply = refusal(payload, leader)
        return orjson.dumps(reply) if reply is not None else None
