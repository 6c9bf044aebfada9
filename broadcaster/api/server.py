"""The intent API: JSON-RPC 2.0 over a websocket, bearer-token auth (DESIGN.md §7).

Methods: ``broadcaster_sendIntent``, ``broadcaster_getIntent``, ``broadcaster_cancelIntent``,
``broadcaster_subscribe`` / ``broadcaster_unsubscribe`` (status notifications as
``broadcaster_subscription`` messages), and the Ethereum methods a web3.py
``AsyncWeb3(WebSocketProvider(url))`` bot uses: ``eth_chainId``, ``eth_blockNumber``,
``eth_sendTransaction`` (we sign), ``eth_sendRawTransaction`` (signed elsewhere: tracked and
rebroadcast byte for byte). A few read-only ``eth_`` methods are passed through to an RPC so
such a bot can fill in gas and fees unchanged; anything else answers ``-32601``.

Auth: ``Authorization: Bearer <token>`` on the websocket handshake (``401`` otherwise).
Limits: a message over ``max_message_bytes`` gets a ``-32600`` answer and the connection stays
up (beyond 4x the limit the websocket layer closes it with 1009); each token has a token bucket
(``-32005`` when empty). Errors follow JSON-RPC 2.0: ``-32700`` parse error, ``-32600`` invalid
request, ``-32601`` method not found, ``-32602`` invalid params (the message names the field).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from broadcaster.api.intents import (
    IntentDefaults,
    ParamError,
    checksum_address,
    intent_json,
    parse_data,
    parse_intent,
    parse_quantity,
)
from broadcaster.api.subscriptions import Subscriptions
from broadcaster.errors import BroadcasterError
from broadcaster.rpc.chain_reader import ChainReadError, NodeError
from broadcaster.tx.manager import TxManager
from nonce import AttemptReason, Intent, TxRecord
from nonce.errors import DuplicateIdempotencyKey, InvalidIntent, NonceError, NonceInUse
from signer_client.errors import TransactionError
from signer_client.signing import signed_from_raw

__all__ = ["ApiLimits", "IntentApi", "intent_json"]

log = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # the intent could not be carried out (signer refused, ...)
RATE_LIMITED = -32005  # as Infura/Alchemy answer "limit exceeded"

# Read-only methods passed through to an RPC so unchanged web3.py bots can fill gas and fees.
PASS_THROUGH = frozenset(
    {
        "eth_estimateGas",
        "eth_maxPriorityFeePerGas",
        "eth_gasPrice",
        "eth_feeHistory",
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_getTransactionCount",
        "eth_getTransactionReceipt",
        "eth_getTransactionByHash",
        "eth_getBalance",
        "eth_call",
        "net_version",
        "web3_clientVersion",
    }
)


_TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")


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
    notify_queue: int = 4096  # notifications buffered per connection before dropping
    pipeline: int = 1024  # messages of one connection being handled at once


def _hex(n: int) -> str:
    return hex(n)


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


class _Client:
    """One websocket connection: its token, subscriptions and outgoing notification queue."""

    def __init__(self, ws: ServerConnection, token: str, limits: ApiLimits) -> None:
        self.ws = ws
        self.token = token
        self.subscriptions: dict[str, frozenset[str] | None] = {}
        self.outbox: asyncio.Queue[bytes] = asyncio.Queue(limits.notify_queue)
        self.dropped = 0
        # Messages are handled concurrently (a bot may pipeline requests), but intents are
        # admitted (given nonces) one at a time, in the order they arrived: FIFO lock.
        self.admission = asyncio.Lock()
        self.in_flight = asyncio.Semaphore(limits.pipeline)


class IntentApi:
    """Serves the API for one :class:`TxManager`."""

    def __init__(
        self,
        manager: TxManager,
        *,
        chain_id: int,
        accounts: Sequence[str],
        tokens: Sequence[str],
        limits: ApiLimits | None = None,
        tip_number: Callable[[], int | None] = lambda: None,
        passthrough: Callable[..., Awaitable[Any]] | None = None,
        on_intent: Callable[[str], None] = lambda status: None,
        priority_fee: int = 1_000_000_000,
        subscriptions: Subscriptions | None = None,
    ) -> None:
        if not tokens:
            raise ValueError("the API needs at least one token")
        self.manager = manager
        self.chain_id = chain_id
        self.accounts = [a.lower() for a in accounts]
        self._tokens = [t.encode() for t in tokens]
        self.limits = limits or ApiLimits()
        self._tip_number = tip_number
        self._passthrough = passthrough
        self._on_intent = on_intent
        self._priority_fee = priority_fee  # [fees] priority_fee_wei: the tip of intents without one
        self._buckets: dict[str, _TokenBucket] = {}
        # Built by the service before the manager (its observers notify there); or our own.
        self.subscriptions = subscriptions if subscriptions is not None else Subscriptions()
        self._methods: dict[str, Callable[[_Client, Any], Awaitable[Any]]] = {
            "broadcaster_sendIntent": self._send_intent,
            "broadcaster_getIntent": self._get_intent,
            "broadcaster_cancelIntent": self._cancel_intent,
            "broadcaster_subscribe": self._subscribe,
            "broadcaster_unsubscribe": self._unsubscribe,
            "eth_chainId": self._chain_id,
            "eth_blockNumber": self._block_number,
            "eth_sendTransaction": self._eth_send_transaction,
            "eth_sendRawTransaction": self._eth_send_raw_transaction,
            "eth_accounts": self._eth_accounts,
        }

    # -- server ----------------------------------------------------------------------------------

    async def serve(self, host: str, port: int) -> Server:
        """Start listening; the caller owns the returned server (``async with`` / ``close()``)."""
        return await serve(
            self._handle,
            host,
            port,
            process_request=self._authorize,
            max_size=4 * self.limits.max_message_bytes,
            compression=None,
        )

    def _authorize(self, connection: ServerConnection, request: Request) -> Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token:
            candidate = token.strip().encode()
            for known in self._tokens:
                if hmac.compare_digest(candidate, known):
                    connection.token = token.strip()  # type: ignore[attr-defined]
                    return None
        self._on_intent("unauthorized")
        response = connection.respond(HTTPStatus.UNAUTHORIZED, "missing or invalid bearer token\n")
        response.headers["WWW-Authenticate"] = 'Bearer realm="broadcaster"'
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        token: str = getattr(ws, "token", "")
        client = _Client(ws, token, self.limits)
        self.subscriptions.add(client)
        try:
            async with asyncio.TaskGroup() as group:
                writer = group.create_task(self._write_notifications(client))
                try:
                    async for message in ws:
                        # Pipelined: each message in its own task, started in arrival order
                        # (the admission lock keeps intents' nonces in that order); a bounded
                        # number at once, so a flood waits here instead of piling up tasks.
                        await client.in_flight.acquire()
                        group.create_task(self._answer(client, message))
                except ConnectionClosed:
                    pass
                finally:
                    writer.cancel()
        finally:
            self.subscriptions.discard(client)

    async def _answer(self, client: _Client, message: str | bytes) -> None:
        try:
            reply = await self.handle_message(client, message)
            if reply is not None:
                await client.ws.send(reply.decode())
        except ConnectionClosed:
            pass
        finally:
            client.in_flight.release()

    async def _write_notifications(self, client: _Client) -> None:
        try:
            while True:
                await client.ws.send((await client.outbox.get()).decode())
        except ConnectionClosed:
            return

    # -- messages --------------------------------------------------------------------------------

    async def handle_message(self, client: _Client, message: str | bytes) -> bytes | None:
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
            # Concurrently, started in order: intents are admitted in batch order.
            answers = await asyncio.gather(*(self._one(client, item) for item in payload))
            replies = [r for r in answers if r]
            return orjson.dumps(replies) if replies else None
        reply = await self._one(client, payload)
        return orjson.dumps(reply) if reply is not None else None

    async def _one(self, client: _Client, request: Any) -> dict[str, Any] | None:
        if not isinstance(request, dict):
            return _error(None, INVALID_REQUEST, "a request must be a JSON object")
        request_id = request.get("id")
        if type(request_id) not in (int, str, type(None)):
            return _error(None, INVALID_REQUEST, "id must be a string, an integer or null")
        if request.get("jsonrpc") != "2.0":
            return _error(request_id, INVALID_REQUEST, 'expected "jsonrpc": "2.0"')
        if not isinstance(request.get("method"), str):
            return _error(request_id, INVALID_REQUEST, "expected a method name (a string)")
        bucket = self._buckets.get(client.token)
        if bucket is None:
            bucket = self._buckets[client.token] = _TokenBucket(
                self.limits.rate_per_second, self.limits.burst
            )
        if not bucket.take():
            return _error(
                request_id,
                RATE_LIMITED,
                f"rate limit exceeded for this token ({self.limits.rate_per_second:g} requests/s, "
                f"bursts of {self.limits.burst}): retry shortly",
            )
        method = request["method"]
        params = request.get("params", [])
        handler = self._methods.get(method)
        try:
            if handler is not None:
                result = await handler(client, params)
            elif method in PASS_THROUGH and self._passthrough is not None:
                result = await self._pass(method, params if isinstance(params, list) else [])
            else:
                raise RpcError(
                    METHOD_NOT_FOUND, f"the method {method:.100} does not exist/is not available"
                )
        except ParamError as exc:
            self._on_intent("invalid") if method.startswith(
                ("broadcaster_send", "eth_send")
            ) else None
            return _error(request_id, INVALID_PARAMS, f"invalid params: {exc}")
        except RpcError as exc:
            return _error(request_id, exc.code, exc.message, exc.data)
        except Exception:
            log.exception("API method %s failed", method)
            return _error(request_id, INTERNAL_ERROR, "internal error")
        if "id" not in request:
            return None  # a notification: no answer
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    # -- methods ---------------------------------------------------------------------------------

    async def _pass(self, method: str, params: list[Any]) -> Any:
        """``method`` answered by the node (``passthrough`` is called as ``ChainReader.call``:
        ``(method, *params)``)."""
        assert self._passthrough is not None
        try:
            return await self._passthrough(method, *params)
        except NodeError as exc:  # the node's own answer (a revert, a bad parameter): pass it on
            raise RpcError(exc.code, exc.message, exc.data) from exc
        except ChainReadError as exc:
            raise RpcError(SERVER_ERROR, f"{method}: no node answered ({exc})") from exc

    def _defaults(self) -> IntentDefaults:
        return IntentDefaults(
            chain_id=self.chain_id,
            accounts=self.accounts,
            base_fee=self.manager.base_fee,
            priority_fee=self._priority_fee,
        )

    async def _submit(self, client: _Client, intent: Intent) -> TxRecord:
        try:
            async with client.admission:
                record = await self.manager.admit(intent)
            await self.manager.complete(record)
        except DuplicateIdempotencyKey as exc:
            self._on_intent("duplicate")
            return exc.record
        except InvalidIntent as exc:
            self._on_intent("rejected")
            raise RpcError(INVALID_PARAMS, f"invalid params: {exc}") from exc
        except NonceError as exc:
            raise RpcError(SERVER_ERROR, str(exc)) from exc
        except RuntimeError as exc:  # shutting down
            raise RpcError(SERVER_ERROR, str(exc)) from exc
        self._on_intent("accepted")
        if record.state.value == "failed":
            raise RpcError(
                SERVER_ERROR,
                f"intent failed: {record.state_reason}",
                intent_json(record),
            )
        return record

    async def _send_intent(self, client: _Client, params: Any) -> dict[str, Any]:
        record = await self._submit(client, parse_intent(params, self._defaults()))
        out = intent_json(record)
        return {k: out[k] for k in ("id", "from", "nonce", "hash", "status")}

    async def _record(self, params: Any) -> TxRecord:
        if isinstance(params, list):
            if len(params) != 1:
                raise ParamError("params", "expected [id]")
            params = params[0]
        if isinstance(params, dict):
            params = params.get("id")
        if type(params) is not str or not params:
            raise ParamError("id", "expected the intent id string")
        record = await self.manager.find(params)  # memory, then the journal on disk
        if record is None and _TX_HASH.fullmatch(params):
            # Any attempt's transaction hash names its intent too (what eth_sendTransaction
            # gave the bot), while the record is in memory.
            record = self.manager.book.by_hash(bytes.fromhex(params[2:]))
        if record is None:
            raise RpcError(
                INVALID_PARAMS, f"invalid params: id: no intent {params!r:.100} is known here"
            )
        return record

    async def _get_intent(self, client: _Client, params: Any) -> dict[str, Any]:
        return intent_json(await self._record(params))

    async def _cancel_intent(self, client: _Client, params: Any) -> dict[str, Any]:
        record = await self._record(params)
        try:
            await self.manager.cancel(record)
        except NonceError as exc:
            raise RpcError(SERVER_ERROR, str(exc), intent_json(record)) from exc
        return intent_json(record)

    async def _subscribe(self, client: _Client, params: Any) -> str:
        ids: frozenset[str] | None = None
        if isinstance(params, list) and params:
            wanted = params[0]
            if isinstance(wanted, str):
                wanted = [wanted]
            if not isinstance(wanted, list) or not all(isinstance(i, str) for i in wanted):
                raise ParamError("params", "expected [] (all intents) or [[intent ids]]")
            if not wanted:  # would silently match nothing, forever
                raise ParamError("params[0]", "no intent ids: pass [] to follow all intents")
            ids = frozenset(wanted)
        if len(client.subscriptions) >= self.limits.max_subscriptions:
            raise RpcError(
                SERVER_ERROR,
                f"too many subscriptions on this connection (at most "
                f"{self.limits.max_subscriptions}): broadcaster_unsubscribe one first",
            )
        sub_id = self.subscriptions.next_id()
        client.subscriptions[sub_id] = ids
        return sub_id

    async def _unsubscribe(self, client: _Client, params: Any) -> bool:
        sub_id = params[0] if isinstance(params, list) and params else params
        return client.subscriptions.pop(sub_id, 0) != 0 if isinstance(sub_id, str) else False

    async def _chain_id(self, client: _Client, params: Any) -> str:
        return _hex(self.chain_id)

    async def _block_number(self, client: _Client, params: Any) -> str:
        tip = self._tip_number()
        if tip is None and self._passthrough is not None:
            # No new head since start (an idle chain): ask the node rather than fail the bot.
            number = await self._pass("eth_blockNumber", [])
            if isinstance(number, str):
                return number
        if tip is None:
            raise RpcError(SERVER_ERROR, "no block seen yet: the node has not sent a head")
        return _hex(tip)

    async def _eth_accounts(self, client: _Client, params: Any) -> list[str]:
        return [checksum_address(a) for a in self.accounts]

    async def _eth_send_transaction(self, client: _Client, params: Any) -> str:
        tx = params[0] if isinstance(params, list) and len(params) == 1 else params
        if not isinstance(tx, Mapping):
            raise ParamError("params", "expected [transaction object]")
        tx = dict(tx)
        tx.pop("nonce", None)  # nonces are the broadcaster's to allocate
        if "gas" not in tx:
            if self._passthrough is None:
                raise ParamError("gas", "required")
            # Name a bad field before asking the node; estimate what will actually be signed.
            draft = parse_intent(tx, self._defaults(), require_gas=False)
            call: dict[str, Any] = {"from": draft.sender, "value": _hex(draft.value)}
            if draft.to is not None:
                call["to"] = draft.to
            if draft.data:
                call["data"] = "0x" + draft.data.hex()
            reason = "no estimate"
            try:
                estimate = await self._passthrough("eth_estimateGas", call)
            except NodeError as exc:  # the node's own answer: a revert, a bad parameter
                estimate, reason = None, exc.message
            except ChainReadError as exc:
                raise RpcError(SERVER_ERROR, f"eth_estimateGas: no node answered ({exc})") from exc
            if estimate is None:
                raise ParamError(
                    "gas",
                    f"not given, and the node could not estimate it ({reason}: the transaction "
                    "would probably revert); pass gas explicitly",
                )
            tx["gas"] = parse_quantity(estimate, "gas")
        record = await self._submit(client, parse_intent(tx, self._defaults()))
        latest = record.latest
        if latest is None:
            raise RpcError(
                SERVER_ERROR,
                f"intent {record.intent.id} accepted but not signed yet (the signer is "
                "unavailable; signing is retried): follow it with broadcaster_getIntent",
                intent_json(record),
            )
        return "0x" + latest.hash.hex()

    async def _eth_send_raw_transaction(self, client: _Client, params: Any) -> str:
        if not isinstance(params, list) or len(params) != 1:
            raise ParamError("params", "expected [signed transaction as 0x-hex bytes]")
        raw = parse_data(params[0], "params[0]")
        try:
            fields, signed = signed_from_raw(raw)
        except TransactionError as exc:
            raise ParamError("params[0]", f"not a signed transaction: {exc}") from exc
        if fields.chain_id not in (None, self.chain_id):
            raise ParamError("chainId", f"this broadcaster serves chain {self.chain_id}")
        sender = signed.sender.lower()
        existing = self.manager.book.by_hash(signed.hash)
        if existing is not None:
            return "0x" + signed.hash.hex()  # already tracked: "already known"
        intent = Intent(
            id=f"raw-{signed.hash.hex()}",
            sender=sender,
            to="0x" + fields.to.hex() if fields.to else None,
            value=fields.value,
            data=fields.data,
            gas=fields.gas,
            max_fee_per_gas=fields.fee_cap,
            max_priority_fee_per_gas=fields.tip_cap,
            chain_id=self.chain_id,
            tx_type=fields.type,
            external=True,
        )
        try:
            await self.manager.submit_raw(intent, fields.nonce, signed)
        except InvalidIntent as exc:
            raise RpcError(INVALID_PARAMS, f"invalid params: {exc}") from exc
        except NonceInUse as exc:
            raise RpcError(
                SERVER_ERROR,
                f"nonce {exc.nonce} of {checksum_address(sender)} is already taken by intent "
                f"{exc.occupant} (a replacement signed elsewhere is not accepted)",
            ) from exc
        except NonceError as exc:
            raise RpcError(SERVER_ERROR, str(exc)) from exc
        self._on_intent("accepted")
        return "0x" + signed.hash.hex()

    # -- notifications ---------------------------------------------------------------------------

    def notify(self, record: TxRecord, event: str) -> None:
        """Queue a status notification for every subscription that wants ``record`` (sync)."""
        self.subscriptions.notify(record, event)


def _error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


_ = AttemptReason  # status events name attempt reasons too (resent)
