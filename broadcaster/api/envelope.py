"""The JSON-RPC 2.0 envelope of the intent API: codes, limits, the per-connection state and the
dispatch of one message (single request or batch) to a method table (pure of any transport).

JSON-RPC 2.0 (jsonrpc.org/specification): ``-32700`` parse error, ``-32600`` invalid request,
``-32601`` method not found, ``-32602`` invalid params, ``-32603`` internal error; ``-32000``
to ``-32099`` are the server's own: ``-32000`` could not be carried out, ``-32005`` limit
exceeded (as Infura and Alchemy answer it), ``-32010`` not accepting intents (a standby).
A batch is answered item by item in order; notifications (no ``id``) get no answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from broadcaster.api.access import FULL_ACCESS, Access
from broadcaster.api.intents import ParamError
from broadcaster.api.rawtx import RawTxRefused
from broadcaster.api.subscriptions import Outgoing
from broadcaster.errors import BroadcasterError

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "NOT_ACCEPTING",
    "PARSE_ERROR",
    "RATE_LIMITED",
    "SERVER_ERROR",
    "ApiLimits",
    "Connection",
    "Dispatcher",
    "RpcError",
]

log = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # the intent could not be carried out (signer refused, ...)
RATE_LIMITED = -32005  # as Infura/Alchemy answer "limit exceeded"
NOT_ACCEPTING = -32010  # this instance takes no intents now (a standby: the message names why)


class RpcError(BroadcasterError):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass(frozen=True, slots=True)
class ApiLimits:
    max_message_bytes: int = 128 * 1024
    rate_per_second: float = 10_000.0  # per token
    burst: int = 20_000
    max_subscriptions: int = 64  # per connection
    notify_queue: int = 4096  # events buffered per connection before dropping
    pipeline: int = 1024  # messages of one connection being handled at once
    max_connections_per_token: int = 256  # connections (websocket or HTTP, idle ones too)
    disk_lookups: int = 2  # journal lookups of ids not in memory, at once (the rest wait)
    max_batch: int = 1000  # requests in one batch (geth's BatchRequestLimit default)


class _TokenBucket:
    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Connection:
    """One connection (a websocket; or one HTTP request): who it is, its subscriptions and
    outgoing notification queue."""

    def __init__(
        self,
        ws: Any,
        token: str,
        limits: ApiLimits,
        access: Access = FULL_ACCESS,
        transport: str = "websocket",
    ) -> None:
        self.ws = ws
        self.token = token
        self.access = access
        self.transport = transport
        self.subscriptions: dict[str, frozenset[str] | None] = {}
        self.outbox: asyncio.Queue[Outgoing] = asyncio.Queue(limits.notify_queue)
        self.dropped = 0
        self.overflowed = asyncio.Event()  # set on the first notification dropped (queue full)
        # Messages are handled concurrently (a bot may pipeline requests), but intents are
        # admitted (given nonces) one at a time, in the order they arrived: FIFO lock.
        self.admission = asyncio.Lock()
        self.in_flight = asyncio.Semaphore(limits.pipeline)


Method = Callable[[Connection, Any], Awaitable[Any]]


class Dispatcher:
    """Answers messages from a table of methods; subclasses fill ``_methods`` and may answer
    names outside it in :meth:`_other`. ``_on_intent`` counts refusals (metrics)."""

    def __init__(self, limits: ApiLimits, on_intent: Callable[[str], None]) -> None:
        self.limits = limits
        self._on_intent = on_intent
        self._buckets: dict[str, _TokenBucket] = {}
        self._methods: dict[str, Method] = {}

    async def _other(self, client: Connection, method: str, params: Any) -> Any:
        raise RpcError(
            METHOD_NOT_FOUND, f"the method {method:.100} does not exist/is not available"
        )

    # -- messages --------------------------------------------------------------------------------

    async def handle_message(self, client: Connection, message: str | bytes) -> bytes | None:
        """The reply to one websocket message (``None`` for notifications-only batches)."""
        # The limit is in bytes (a text frame arrives decoded: its UTF-8 may be up to 4x longer).
        size = len(message)
        if type(message) is str and 4 * size > self.limits.max_message_bytes:
            size = len(message.encode("utf-8", "surrogatepass"))
        if size > self.limits.max_message_bytes:
            return orjson.dumps(
                _error(
                    None,
                    INVALID_REQUEST,
                    f"message of {size} bytes exceeds the limit of "
                    f"{self.limits.max_message_bytes} bytes",
                )
            )
        try:
            payload = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            return orjson.dumps(_error(None, PARSE_ERROR, f"parse error: {exc}"))
        if isinstance(payload, list):
            if not payload:
                return orjson.dumps(
                    _error(None, INVALID_REQUEST, "empty batch: send at least one request")
                )
            if len(payload) > self.limits.max_batch:
                # 64k one-byte items fit in a message: answering them stalls the event loop
                # (the reaction path) for a second and builds a 6 MB answer.
                self._on_intent("rate_limited")
                return orjson.dumps(
                    _error(
                        None,
                        INVALID_REQUEST,
                        f"batch of {len(payload)} requests exceeds the limit of "
                        f"{self.limits.max_batch}: split it",
                    )
                )
            # Concurrently, started in order: intents are admitted in batch order.
            answers = await asyncio.gather(*(self._one(client, item) for item in payload))
            replies = [r for r in answers if r]
            return orjson.dumps(replies) if replies else None
        reply = await self._one(client, payload)
        return orjson.dumps(reply) if reply is not None else None

    async def _one(self, client: Connection, request: Any) -> dict[str, Any] | None:
        # Every item costs a token, malformed ones too (else they would be free to flood with).
        bucket = self._buckets.get(client.token)
        if bucket is None:
            bucket = self._buckets[client.token] = _TokenBucket(
                self.limits.rate_per_second, self.limits.burst
            )
        if not bucket.take():
            self._on_intent("rate_limited")
            request_id = request.get("id") if isinstance(request, dict) else None
            return _error(
                request_id if type(request_id) in (int, str) else None,
                RATE_LIMITED,
                f"rate limit exceeded for this token ({self.limits.rate_per_second:g} requests/s, "
                f"bursts of {self.limits.burst}): retry shortly",
            )
        if not isinstance(request, dict):
            return _error(None, INVALID_REQUEST, "a request must be a JSON object")
        request_id = request.get("id")
        if type(request_id) not in (int, str, type(None)):
            return _error(None, INVALID_REQUEST, "id must be a string, an integer or null")
        if request.get("jsonrpc") != "2.0":
            return _error(request_id, INVALID_REQUEST, 'expected "jsonrpc": "2.0"')
        if not isinstance(request.get("method"), str):
            return _error(request_id, INVALID_REQUEST, "expected a method name (a string)")
        method = request["method"]
        params = request.get("params", [])
        handler = self._methods.get(method)
        try:
            if handler is not None:
                result = await handler(client, params)
            else:
                result = await self._other(client, method, params)
        except ParamError as exc:
            if method.startswith(("broadcaster_send", "eth_send")):
                self._on_intent("invalid")
            return _error(request_id, INVALID_PARAMS, f"invalid params: {exc}")
        except RawTxRefused as exc:
            self._on_intent("rejected")
            return _error(request_id, INVALID_PARAMS, f"invalid params: params[0]: {exc}")
        except RpcError as exc:
            return _error(request_id, exc.code, exc.message, exc.data)
        except Exception:
            log.exception("API method %s failed", method)
            return _error(request_id, INTERNAL_ERROR, "internal error")
        if "id" not in request:
            return None  # a notification: no answer
        return {"jsonrpc": "2.0", "id": request_id, "result": result}


def _error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}
