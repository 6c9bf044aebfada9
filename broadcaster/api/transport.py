"""HTTP and websocket on one port: the API's thin I/O layer (aiohttp).

DESIGN.md §7: JSON-RPC 2.0 over ``POST /`` (single requests and batches) and over a websocket
upgraded from ``GET /`` on the same port, so web3.py ``HTTPProvider``/``WebSocketProvider``,
ethers v6 ``JsonRpcProvider``/``WebSocketProvider`` and viem ``http()``/``webSocket()`` all
connect unchanged. Auth, as hosted node providers do it: ``Authorization: Bearer TOKEN``, or the
token as the URL path (``http://host:port/TOKEN``, ``ws://host:port/TOKEN``; viem and ethers
cannot set a websocket header). The header wins when both are given.

Why aiohttp and not the ``websockets`` library the API used before: ``websockets``' HTTP/1.1
parser serves only the ``GET`` of a handshake and refuses any request with a body
(``Request.parse``: "unsupported request body"), so ``process_request`` can never see a
``POST``'s JSON. aiohttp (already a dependency: the metrics server) parses HTTP with llhttp and
frames websockets in C, and serves both from one handler.

Answers: ``408`` for a body not complete within ``BODY_SECONDS`` of its headers (counted
``invalid``), ``401`` (with ``WWW-Authenticate: Bearer``) for a missing or unknown token, ``429``
when the token already holds ``max_connections_per_token`` connections, ``413`` for a body
over 4x ``max_message_bytes`` (between 1x and 4x, a JSON-RPC ``-32600`` answer, as on the
websocket), ``405`` for other methods, ``404`` for deeper paths.
A JSON-RPC answer is ``200 application/json``; a request of notifications only gets ``204``.

What the cap counts: TCP connections a token was used on, from its first request until the
connection closes *and* its last request has finished (no handler cancellation: a request whose
client left still runs). So an idle keep-alive HTTP connection counts (else a token could hold
any number of sockets, one request each, until the process runs out of file descriptors), and so
does a request whose client hung up. Refusals (``401``, ``429``) close their connection, and a
connection idle for ``KEEPALIVE_SECONDS`` (or that never finishes its first request's headers)
is closed. A request's body must arrive within ``BODY_SECONDS`` of its headers, and a
websocket is pinged every ``HEARTBEAT_SECONDS`` (closed without its pong): neither a stalled
body nor a peer gone without a FIN holds a slot for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError

from broadcaster.api.subscriptions import Outgoing, expand
from broadcaster.tx.seams import FRAME_READ_NS

if TYPE_CHECKING:
    from broadcaster.api.server import IntentApi

__all__ = ["ApiServer"]

log = logging.getLogger(__name__)

_JSON = "application/json"
KEEPALIVE_SECONDS = 75.0  # aiohttp's web.AppRunner default (its low-level Server: an hour)
# A request's body must arrive within this, once its headers have: the keep-alive timeout does
# not run while a request is read, so a body promised and never finished (slowloris, a client
# that died mid-write) would hold its token's connection slot forever.
BODY_SECONDS = 30.0
# A websocket is pinged this often and closed when a pong does not come back within half of it:
# a peer gone without a FIN (its machine or network died) would hold its token's slot forever.
HEARTBEAT_SECONDS = 30.0


def _json_error(status: int, code: int, message: str) -> web.Response:
    body = b'{"jsonrpc":"2.0","id":null,"error":{"code":%d,"message":"%s"}}' % (
        code,
        message.encode(),
    )
    return web.Response(status=status, body=body, content_type=_JSON)


class ApiServer:
    """The listening socket and its connections (``close()`` then ``await wait_closed()``)."""

    def __init__(self, api: IntentApi, on_refused: Callable[[str], None]) -> None:
        self.api = api
        self._on_refused = on_refused
        self._open: dict[str, int] = {}  # token -> connections holding it (module docstring)
        self._held: dict[Any, set[str]] = {}  # connection (aiohttp handler) -> tokens it holds
        self._busy: dict[Any, int] = {}  # connection -> its requests in progress
        self._lost: set[Any] = set()  # connections closed with requests still in progress
        # No handler cancellation when a client goes away: an intent half admitted (nonce given,
        # not yet journaled or signed) must finish, or it would hold its nonce unsigned.
        # No access log: a line per request is noise and CPU on a path bots call thousands of
        # times a second (refusals are counted in metrics instead).
        self._web = _Server(
            self._entry,
            self._connection_lost,
            handler_cancellation=False,
            access_log=None,
            keepalive_timeout=KEEPALIVE_SECONDS,
            logger=_ProtocolLog(on_refused),
        )
        self._server: asyncio.Server | None = None
        self._closing: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> ApiServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._web, host, port)
        return self

    @property
    def sockets(self) -> tuple[Any, ...]:
        assert self._server is not None
        return tuple(self._server.sockets)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._web.shutdown(2.0))

    async def wait_closed(self) -> None:
        if self._closing is not None:
            await self._closing
        if self._server is not None:
            await self._server.wait_closed()

    def open_count(self, token: str) -> int:
        return self._open.get(token, 0)

    # -- requests ----------------------------------------------------------------------------

    def _token(self, request: web.BaseRequest) -> str | None:
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
        path = request.path
        if path in ("", "/"):
            return None
        token = path[1:]
        return token if "/" not in token else None

    async def _entry(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.count("/") > 1:
            return web.Response(status=404, text="not found: POST / or GET / (websocket)\n")
        token = self._token(request)
        access = self.api.principals.lookup(token) if token else None
        if token is None or access is None:
            self._on_refused("unauthorized")
            response = web.Response(status=401, text="missing or invalid bearer token\n")
            response.headers["WWW-Authenticate"] = 'Bearer realm="broadcaster"'
            response.force_close()
            return response
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if request.method not in ("POST", "GET") or (request.method == "GET" and not upgrade):
            response = web.Response(
                status=405, text="JSON-RPC: POST / (HTTP) or a websocket upgrade of GET /\n"
            )
            response.headers["Allow"] = "GET, POST"
            return response
        connection = request.protocol
        held = self._held.setdefault(connection, set())
        if token not in held:
            limit = self.api.limits.max_connections_per_token
            if self._open.get(token, 0) >= limit:
                self._on_refused("rate_limited")
                response = _json_error(
                    429,
                    -32005,
                    f"too many connections for this token (at most {limit} connections, idle "
                    "keep-alive ones included): close one or retry shortly",
                )
                response.force_close()
                return response
            held.add(token)
            self._open[token] = self._open.get(token, 0) + 1
        self._busy[connection] = self._busy.get(connection, 0) + 1
        try:
            if upgrade:
                return await self._websocket(request, token, access)
            return await self._http(request, token, access)
        finally:
            busy = self._busy.pop(connection) - 1
            if busy:
                self._busy[connection] = busy
            elif connection in self._lost:
                self._release(connection)

    def _connection_lost(self, connection: Any) -> None:
        if self._busy.get(connection):
            self._lost.add(connection)  # released when its last request finishes
        else:
            self._release(connection)

    def _release(self, connection: Any) -> None:
        self._lost.discard(connection)
        for token in self._held.pop(connection, ()):
            left = self._open[token] - 1
            if left:
                self._open[token] = left
            else:
                del self._open[token]

    async def _http(self, request: web.BaseRequest, token: str, access: Any) -> web.StreamResponse:
        cap = 4 * self.api.limits.max_message_bytes
        if request.content_length is not None and request.content_length > cap:
            return _json_error(413, -32600, f"request body over {cap} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(BODY_SECONDS):
                async for chunk in request.content.iter_any():
                    size += len(chunk)
                    if size > cap:
                        return _json_error(413, -32600, f"request body over {cap} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            self._on_refused("invalid")
            promised = request.content_length
            response = _json_error(
                408,
                -32600,
                f"request body not complete within {BODY_SECONDS:g} s ({size} of "
                f"{promised if promised is not None else 'an unknown number of'} bytes promised)",
            )
            response.force_close()
            # Sent and closed here: aiohttp would otherwise linger up to 10 s reading the body
            # that is not coming.
            await response.prepare(request)
            await response.write_eof()
            if request.transport is not None:
                request.transport.close()
            return response
        FRAME_READ_NS.set(time.perf_counter_ns())  # the body is read: intent_seconds starts
        client = self.api.connection(None, token, access, transport="http")
        reply = await self.api.handle_message(client, b"".join(chunks))
        if reply is None:
            return web.Response(status=204)
        return web.Response(body=reply, content_type=_JSON)

    async def _websocket(
        self, request: web.BaseRequest, token: str, access: Any
    ) -> web.StreamResponse:
        limits = self.api.limits
        ws = web.WebSocketResponse(
            max_msg_size=4 * limits.max_message_bytes,
            compress=False,
            autoping=True,
            heartbeat=HEARTBEAT_SECONDS,
        )
        await ws.prepare(request)
        client = self.api.connection(ws, token, access)
        subscriptions = self.api.subscriptions
        subscriptions.add(client)
        try:
            async with asyncio.TaskGroup() as group:
                writer = group.create_task(self._write_notifications(ws, client.outbox))
                closer = group.create_task(self._close_on_overflow(request, ws, client, writer))
                try:
                    async for message in ws:
                        if message.type is WSMsgType.TEXT or message.type is WSMsgType.BINARY:
                            # Pipelined: each message in its own task, started in arrival order
                            # (the admission lock keeps intents' nonces in that order); a
                            # bounded number at once, so a flood waits here.
                            # read: its intent's clock starts (the task below copies it)
                            FRAME_READ_NS.set(time.perf_counter_ns())
                            await client.in_flight.acquire()
                            group.create_task(self._answer(ws, client, message.data))
                        elif message.type is WSMsgType.ERROR:
                            break  # e.g. a frame over max_msg_size: closed with 1009
                finally:
                    writer.cancel()
                    closer.cancel()
        finally:
            subscriptions.discard(client)
        return ws

    async def _close_on_overflow(
        self, request: web.BaseRequest, ws: web.WebSocketResponse, client: Any, writer: Any
    ) -> None:
        """A follower that lost a notification (it does not read its socket) is closed with
        1013: better told "reconnect and ask again" than left believing a stale status."""
        await client.overflowed.wait()
        writer.cancel()
        log.warning(
            "api: closing a websocket of %s: %d status notifications dropped (not read)",
            client.access.name,
            client.dropped,
        )
        try:
            async with asyncio.timeout(1.0):  # the close frame queues behind unread data
                await ws.close(code=1013, message=b"notifications dropped: reconnect, re-query")
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        if request.transport is not None:
            request.transport.abort()

    async def _answer(self, ws: web.WebSocketResponse, client: Any, message: Any) -> None:
        try:
            reply = await self.api.handle_message(client, message)
            if reply is not None and not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_frame(reply, WSMsgType.TEXT)
        finally:
            client.in_flight.release()

    async def _write_notifications(
        self, ws: web.WebSocketResponse, outbox: asyncio.Queue[Outgoing]
    ) -> None:
        try:
            while not ws.closed:
                for message in expand(await outbox.get()):
                    await ws.send_frame(message, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError):
            return


class _ProtocolLog:
    """The logger aiohttp's connection handler uses: a request it cannot parse (anyone can
    send one: scanners, TLS to a plaintext port, a broken proxy) is counted ``invalid`` and
    logged in one line without its text -- aiohttp's own message quotes the request line, and
    with it a URL-path token; it logged each at ERROR with a traceback. Anything else (a
    failure of ours) keeps its traceback."""

    def __init__(self, on_refused: Callable[[str], None]) -> None:
        self._on_refused = on_refused

    def _bad_http(self, kw: dict[str, Any]) -> HttpProcessingError | None:
        exc = kw.get("exc_info")
        return exc if isinstance(exc, HttpProcessingError) else None

    def exception(self, message: str, *args: Any, **kw: Any) -> None:
        bad = self._bad_http(kw)
        if bad is None:
            log.error(message, *args, **kw)
            return
        self._on_refused("invalid")
        log.debug("api: malformed HTTP request refused (%d %s)", bad.code, type(bad).__name__)

    def debug(self, message: str, *args: Any, **kw: Any) -> None:
        bad = self._bad_http(kw)
        if bad is None:
            log.debug(message, *args, **kw)
            return
        self._on_refused("invalid")  # aiohttp's own quiet case: non-HTTP bytes first
        log.debug("api: malformed HTTP request refused (%d %s)", bad.code, type(bad).__name__)

    def __getattr__(self, name: str) -> Any:
        return getattr(log, name)  # warning, info, ...: as they are


class _Server(web.Server):
    """aiohttp's connection manager, telling the API when a connection closes."""

    def __init__(self, handler: Any, on_lost: Callable[[Any], None], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._on_lost = on_lost

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._on_lost(handler)
