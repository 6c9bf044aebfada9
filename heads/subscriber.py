"""One client's ``newHeads`` subscription over a websocket, kept alive forever.

The pure part is :func:`parse_frame` (raw bytes in, one of three small values out); the rest is a
thin layer over ``websockets.asyncio``: connect, ``eth_subscribe ["newHeads"]`` (JSON-RPC 2.0 /
geth's pub-sub API), and hand each head to a :class:`HeadSink` *synchronously* together with the
``time.perf_counter_ns()`` taken when its bytes were read from the socket (the reorg reaction is
measured from there). A message that arrives in one websocket frame (every node sends heads so)
is handled inside the connection's ``data_received``, the moment the event loop reads the
socket: no hop through websockets' message queue and the reading task, which under load could
sit behind other ready tasks. A fragmented message takes the ordinary ``recv()`` path. Backfill
requests (``eth_getBlockByHash(hash, false)``) go out on the same socket; their responses are
matched by ``id``.

Failure handling:

* any disconnect (refused, reset, closed, handshake error, subscribe error) -> reconnect after a
  delay from the injected :func:`backoff` generator (full jitter, exponential, capped); the
  generator restarts after a session that delivered a head;
* a socket that stays open but delivers no head for ``watchdog`` seconds is dead: close it and
  reconnect;
* a malformed frame is counted by reason (``invalid`` in :class:`ClientState`) and skipped.

``run()`` never returns: a subscription that ends is a failure (CONVENTIONS.md 7). Cancel it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn, Protocol

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidURI, WebSocketException
from websockets.uri import parse_uri

from heads.connection import HeadsConnection
from heads.errors import ChainIdMismatch, SubscribeFailed, WatchdogExpired

__all__ = [
    "ClientState",
    "HeadFrame",
    "HeadSink",
    "InvalidFrame",
    "ResponseFrame",
    "Subscription",
    "SubscriptionOptions",
    "backoff",
    "parse_frame",
]

log = logging.getLogger(__name__)

# Reasons for invalid_messages_total{client,reason}.
MALFORMED_JSON: Final = "malformed_json"
NOT_NOTIFICATION: Final = "not_notification"
MISSING_FIELDS: Final = "missing_fields"
OVERSIZED: Final = "oversized"
WRONG_BLOCK: Final = "wrong_block"  # a backfill reply that is not the block asked for
CHAIN_ID_MISMATCH: Final = "chain_id_mismatch"  # eth_chainId is not the configured chain
INVALID_REASONS: Final = (
    MALFORMED_JSON,
    NOT_NOTIFICATION,
    MISSING_FIELDS,
    OVERSIZED,
    WRONG_BLOCK,
    CHAIN_ID_MISMATCH,
)


def backoff(
    *,
    initial: float = 0.1,
    factor: float = 2.0,
    cap: float = 10.0,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Delays before successive reconnect attempts: exponential, capped, with full jitter.

    "Full jitter" (AWS Architecture Blog, *Exponential Backoff And Jitter*): each delay is
    uniform in ``[0, min(cap, initial * factor**n)]``, so clients that lost the same node do not
    reconnect in lock-step.
    """
    uniform = (rng or random.Random()).uniform
    ceiling = initial
    while True:
        yield uniform(0.0, ceiling)
        ceiling = min(cap, ceiling * factor)


# -- frames (pure) -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeadFrame:
    """An ``eth_subscription`` notification carrying a header with number/hash/parentHash."""

    subscription: str
    header: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ResponseFrame:
    """A JSON-RPC response to one of our own requests."""

    id: int
    result: Any
    error: Any


@dataclass(frozen=True, slots=True)
class InvalidFrame:
    reason: str
    detail: str


Frame = HeadFrame | ResponseFrame | InvalidFrame


def parse_frame(raw: bytes | str, max_bytes: int) -> Frame:
    """Classify one websocket message. Never raises.

    Only the shape is checked here (a dict header carrying ``number``, ``hash``, ``parentHash``);
    the values are the tracker's business (it rejects what it can prove wrong).
    """
    if len(raw) > max_bytes:
        return InvalidFrame(OVERSIZED, f"{len(raw)} bytes > {max_bytes}")
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return InvalidFrame(MALFORMED_JSON, str(exc))
    if type(message) is not dict:
        return InvalidFrame(NOT_NOTIFICATION, f"top level is {type(message).__name__}")
    params = message.get("params")
    if params is not None:
        if message.get("method") != "eth_subscription" or type(params) is not dict:
            return InvalidFrame(NOT_NOTIFICATION, f"method {message.get('method')!r:.60}")
        header = params.get("result")
        subscription = params.get("subscription")
        if type(header) is not dict or type(subscription) is not str:
            return InvalidFrame(MISSING_FIELDS, "params.result is not a header object")
        if "hash" not in header or "parentHash" not in header or "number" not in header:
            return InvalidFrame(MISSING_FIELDS, "header lacks number, hash or parentHash")
        return HeadFrame(subscription, header)
    request_id = message.get("id")
    if type(request_id) is int and ("result" in message or "error" in message):
        return ResponseFrame(request_id, message.get("result"), message.get("error"))
    return InvalidFrame(NOT_NOTIFICATION, "neither a notification nor a response")


# -- the live subscription -----------------------------------------------------------------------


class HeadSink(Protocol):
    """Where a subscription delivers what it reads (the hub). Every method is synchronous."""

    def head(self, client: str, header: dict[str, Any], recv_ns: int) -> None: ...

    def block(self, client: str, header: dict[str, Any], recv_ns: int) -> None: ...

    def missing_block(self, client: str, block_hash: str) -> None: ...

    def connection(self, client: str, connected: bool) -> None: ...

    def invalid(self, client: str, reason: str, detail: str) -> None: ...


@dataclass
class ClientState:
    """What metrics want to know about one client (the hub adds head number and lag)."""

    name: str
    url: str
    connected: bool = False
    heads: int = 0
    last_head_number: int | None = None
    connects: int = 0
    disconnects: int = 0
    backfill_requests: int = 0
    backfill_missing: int = 0
    backfill_errors: int = 0
    watchdog_expiries: int = 0
    chain_id_mismatches: int = 0
    last_error: str | None = None
    invalid: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class SubscriptionOptions:
    """Tunables shared by every subscription of a hub.

    ``watchdog``: seconds without a head before an open socket counts as dead (``None``
    disables it; anvil without ``--block-time`` is silent until a test mines). ``chain_id``: when
    set, every session starts with ``eth_chainId`` and a node of another chain is kept out
    (:class:`~heads.errors.ChainIdMismatch`, counted ``chain_id_mismatch``). ``max_frame``: a
    larger message is counted ``oversized`` and skipped (``max_socket_frame`` is the hard limit at
    which websockets itself closes the connection).
    """

    watchdog: float | None = 30.0
    chain_id: int | None = None
    max_frame: int = 4 << 20
    max_socket_frame: int = 16 << 20
    open_timeout: float = 10.0
    close_timeout: float = 2.0
    ping_interval: float | None = 20.0
    backoff: Callable[[], Iterator[float]] = backoff


# Connection failures that end a session and lead to a reconnect. Anything else is a bug and
# propagates (structured concurrency: the hub's TaskGroup fails loudly).
_RECONNECTABLE: Final = (
    OSError,
    TimeoutError,
    WebSocketException,
    WatchdogExpired,
    SubscribeFailed,
    ChainIdMismatch,
)


class Subscription:
    """One client's websocket, subscribed to ``newHeads`` for as long as ``run()`` runs."""

    def __init__(
        self,
        name: str,
        url: str,
        sink: HeadSink,
        options: SubscriptionOptions | None = None,
    ) -> None:
        try:
            parse_uri(url)
        except InvalidURI as exc:
            raise ValueError(f"client {name}: not a websocket url: {url!r}") from exc
        self.name = name
        self.url = url
        self.state = ClientState(name, url)
        self._sink = sink
        self._options = options or SubscriptionOptions()
        self._ids = 0
        self._subscribe_id: int | None = None
        self._subscription: str | None = None
        self._pending: dict[int, str] = {}  # request id -> block hash asked for
        self._outbox: list[str] = []  # block hashes to ask for, sent after the current frame
        # Per session: the connection, its watchdog, the task sending queued requests, and an
        # exception raised while handling a message inside data_received (re-raised by _read).
        self._ws: HeadsConnection | None = None
        self._timer: asyncio.Timeout | None = None
        self._sender: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None

    def request_block(self, block_hash: str) -> None:
        """Queue ``eth_getBlockByHash(block_hash, false)``; sent once the current frame is done.

        Synchronous so the hub can call it from the tracker's event dispatch. Requests in flight
        when the connection drops are forgotten: after a reconnect the next head asks again.
        """
        if block_hash not in self._outbox and block_hash not in self._pending.values():
            self._outbox.append(block_hash)

    async def run(self) -> NoReturn:
        delays = self._options.backoff()
        while True:
            delivered = self.state.heads
            try:
                await self._session()
            except _RECONNECTABLE as exc:
                self.state.last_error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, ChainIdMismatch):
                    log.error("%s", exc)
                else:
                    log.info("client %s: connection ended: %s", self.name, self.state.last_error)
            finally:
                self._pending.clear()
                self._outbox.clear()
                if self.state.connected:
                    self.state.connected = False
                    self.state.disconnects += 1
                    self._sink.connection(self.name, False)
            if self.state.heads > delivered:
                delays = self._options.backoff()  # a working session resets the backoff
            await asyncio.sleep(next(delays))

    async def _session(self) -> None:
        options = self._options
        connection = connect(
            self.url,
            compression=None,  # permessage-deflate costs CPU on every head for nothing here
            proxy=None,  # never route a node's websocket through an environment proxy
            open_timeout=options.open_timeout,
            close_timeout=options.close_timeout,
            ping_interval=options.ping_interval,
            max_size=options.max_socket_frame,
            create_connection=HeadsConnection,
        )
        async with connection as ws:
            assert isinstance(ws, HeadsConnection)
            self._ws = ws
            self._failure = None
            self._subscription = None
            if options.chain_id is not None:
                await self._check_chain_id(ws, options.chain_id)
            self._subscribe_id = self._next_id()
            try:
                ws.on_message = self._on_message
                await ws.send(
                    _request(self._subscribe_id, "eth_subscribe", ["newHeads"]), text=True
                )
                await self._read(ws)
            finally:
                ws.on_message = None
                self._ws = None
                if self._sender is not None:
                    self._sender.cancel()
                    self._sender = None

    async def _check_chain_id(self, ws: HeadsConnection, expected: int) -> None:
        """Ask ``eth_chainId`` before subscribing; a node of another chain is kept out."""
        request_id = self._next_id()
        await ws.send(_request(request_id, "eth_chainId", []), text=True)
        async with asyncio.timeout(self._options.open_timeout):
            while True:
                raw = await ws.recv(decode=False)
                ws.backlog -= 1
                frame = parse_frame(raw, self._options.max_frame)
                if type(frame) is ResponseFrame and frame.id == request_id:
                    break
                self._invalid(NOT_NOTIFICATION, "a message before the eth_chainId answer")
        answer = frame.result
        try:
            chain_id = int(answer, 16) if type(answer) is str else None
        except ValueError:
            chain_id = None
        if chain_id != expected:
            self.state.chain_id_mismatches += 1
            error = ChainIdMismatch(self.name, expected, frame.error or answer)
            self._invalid(CHAIN_ID_MISMATCH, str(error))
            raise error

    async def _read(self, ws: HeadsConnection) -> None:
        """Wait for the session to end; only fragmented messages are read here."""
        loop = asyncio.get_running_loop()
        watchdog = self._options.watchdog
        timer = self._timer = asyncio.timeout_at(
            None if watchdog is None else loop.time() + watchdog
        )
        try:
            async with timer:
                while True:
                    try:
                        raw = await ws.recv(decode=False)
                    except WebSocketException:
                        self._raise_failure()
                        raise
                    ws.backlog -= 1
                    self._on_message(raw, time.perf_counter_ns())
                    self._raise_failure()
        except TimeoutError:
            if not timer.expired():
                raise
            self.state.watchdog_expiries += 1
            raise WatchdogExpired(f"no head for {watchdog} s") from None
        finally:
            self._timer = None

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _on_message(self, raw: bytes, recv_ns: int) -> None:
        """Handle one message, synchronously (called from the connection's data_received).

        An exception here must not escape into websockets' protocol callback: it is kept, the
        connection is aborted, and :meth:`_read` raises it (a subscribe error reconnects, a bug
        in a consumer fails the hub loudly, as before).
        """
        if self._failure is not None:
            return
        try:
            frame = parse_frame(raw, self._options.max_frame)
            if type(frame) is HeadFrame:
                if frame.subscription != self._subscription:
                    self._invalid(NOT_NOTIFICATION, "notification for another subscription")
                    return
                self.state.heads += 1
                self._sink.head(self.name, frame.header, recv_ns)
                timer, watchdog = self._timer, self._options.watchdog
                if timer is not None and watchdog is not None:
                    timer.reschedule(asyncio.get_running_loop().time() + watchdog)
            elif type(frame) is ResponseFrame:
                self._response(frame, recv_ns)
            else:
                assert type(frame) is InvalidFrame
                self._invalid(frame.reason, frame.detail)
                return
            if self._outbox and self._sender is None and self._ws is not None:
                self._sender = asyncio.get_running_loop().create_task(
                    self._send_requests(self._ws), name=f"heads:{self.name}:requests"
                )
        except BaseException as exc:
            self._failure = exc
            ws = self._ws
            if ws is not None and ws.transport is not None:
                ws.transport.abort()  # ends recv() in _read, which raises the failure

    def _response(self, frame: ResponseFrame, recv_ns: int) -> None:
        if frame.id == self._subscribe_id:
            self._subscribe_id = None
            if frame.error is not None or type(frame.result) is not str:
                raise SubscribeFailed(f"eth_subscribe answered {frame.error or frame.result!r}")
            self._subscription = frame.result
            self.state.connected = True
            self.state.connects += 1
            self._sink.connection(self.name, True)
            return
        block_hash = self._pending.pop(frame.id, None)
        if block_hash is None:
            self._invalid(NOT_NOTIFICATION, f"response to unknown request id {frame.id}")
            return
        result = frame.result
        if frame.error is not None:
            self.state.backfill_errors += 1
            log.warning("client %s: eth_getBlockByHash %s: %s", self.name, block_hash, frame.error)
        elif result is None:
            # The node does not have it (pruned, or on a chain it no longer follows).
            self.state.backfill_missing += 1
            self._sink.missing_block(self.name, block_hash)
        elif type(result) is dict and "hash" in result and "parentHash" in result:
            answered = result["hash"]
            if type(answered) is not str or answered.lower() != block_hash:
                # DESIGN.md §3: a backfill reply must be the block asked for.
                self._invalid(WRONG_BLOCK, f"asked {block_hash}, got {answered!r:.80}")
                return
            self._sink.block(self.name, result, recv_ns)
        else:
            self._invalid(MISSING_FIELDS, f"eth_getBlockByHash {block_hash}: not a header")

    async def _send_requests(self, ws: ClientConnection) -> None:
        try:
            while self._outbox:
                block_hash = self._outbox.pop(0)
                request_id = self._next_id()
                self._pending[request_id] = block_hash
                self.state.backfill_requests += 1
                await ws.send(
                    _request(request_id, "eth_getBlockByHash", [block_hash, False]), text=True
                )
        except WebSocketException:
            pass  # the session is ending; _read reports why, the next head asks again
        finally:
            self._sender = None

    def _invalid(self, reason: str, detail: str) -> None:
        self.state.invalid[reason] += 1
        log.debug("client %s: invalid message (%s): %s", self.name, reason, detail)
        self._sink.invalid(self.name, reason, detail)

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids


def _request(request_id: int, method: str, params: list[Any]) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
