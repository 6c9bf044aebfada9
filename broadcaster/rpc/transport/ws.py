"""Websocket transport for ``ws(s)://`` RPC endpoints, on websockets' sans-I/O protocol.

``websockets.client.ClientProtocol`` does the RFC 6455 work (handshake, framing, masking,
ping/pong, close) without touching the network; this module only moves bytes between it and an
asyncio transport. That keeps :meth:`WsTransport.send` synchronous: the frame is in the socket
buffer when it returns. Requests are pipelined on one connection and replies matched by the
JSON-RPC ``id``, so one slow reply never holds back another. A batch reply (a JSON array) is
matched through any of its elements' ids to the batch it answers; a lone error object with a
``null`` id (JSON-RPC 2.0 section 5: the server could not read the request's id, which is how
an endpoint without batch support answers an array) goes to the oldest batch in flight, since
our single requests always carry a readable id.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any, cast

import orjson
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from broadcaster.rpc.transport.base import OnReply, Reply, TransportClosed, split_url

__all__ = ["WsTransport"]

HIGH_WATER = 1 << 20  # bytes queued in the socket buffer before we stop writing to it


class _WsConnection(asyncio.Protocol):
    def __init__(self, owner: WsTransport) -> None:
        self.owner = owner
        self.protocol = ClientProtocol(parse_uri(owner.url), max_size=1 << 20)
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending: set[int] = set()
        self.batches: dict[int, Sequence[int]] = {}  # batch rid -> its elements' ids (in order)
        self.members: dict[int, int] = {}  # element id -> batch rid
        self.fragments: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only duck-typed ones.
        self.transport = cast(asyncio.Transport, transport)
        self.protocol.send_request(self.protocol.connect())
        self.flush()

    def flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for chunk in self.protocol.data_to_send():
            if chunk:
                transport.write(chunk)
            else:  # the protocol asks to half-close (after a close frame)
                transport.close()
                return

    def is_open(self) -> bool:
        return (
            not self.lost
            and self.protocol.state is State.OPEN
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def write(self, rid: int, body: bytes, ids: Sequence[int]) -> None:
        if not self.is_open():
            raise TransportClosed(f"{self.owner.name}: websocket not open")
        self.pending.add(rid)
        if ids:
            self.batches[rid] = ids
            for member in ids:
                self.members[member] = rid
        self.protocol.send_text(body)
        self.flush()

    def done(self, rid: int) -> None:
        """Stop expecting ``rid`` (answered or forgotten), and its batch's element ids."""
        self.pending.discard(rid)
        for member in self.batches.pop(rid, ()):
            self.members.pop(member, None)

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        self._handle_events()
        self.flush()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._handle_events()
        self.flush()
        return None

    def _handle_events(self) -> None:
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if self.protocol.handshake_exc is not None:
                    self._set_opened(self.protocol.handshake_exc)
                else:
                    self._set_opened(None)
            elif isinstance(event, Frame):
                self._frame(event)
        if self.protocol.handshake_exc is not None:
            self._set_opened(self.protocol.handshake_exc)

    def _frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            if frame.opcode is not Opcode.CONT:
                self.fragments.clear()
            self.fragments.append(bytes(frame.data))
            if frame.fin:
                message = b"".join(self.fragments)
                self.fragments.clear()
                self._message(message)

    def _message(self, message: bytes) -> None:
        try:
            payload: Any = orjson.loads(message)
        except orjson.JSONDecodeError:
            return  # not a reply to anything we can match: ignore (counted as a timeout)
        rid = self._match(payload)
        if rid is not None:
            self.done(rid)
            self.owner.on_reply(rid, Reply(payload=payload))

    def _match(self, payload: Any) -> int | None:
        """The request ``payload`` answers, if it is one of ours (subscriptions are not)."""
        if isinstance(payload, list):
            for element in payload:
                member = element.get("id") if isinstance(element, dict) else None
                if isinstance(member, int) and member in self.members:
                    return self.members[member]
            return None
        if not isinstance(payload, dict):
            return None
        rid = payload.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool):
            if rid in self.pending:
                return rid
            return self.members.get(rid)  # one element of a batch answered on its own
        if rid is None and "error" in payload and self.batches:
            return next(iter(self.batches))
        return None

    def _set_opened(self, exc: BaseException | None) -> None:
        if not self.opened.done():
            if exc is None:
                self.opened.set_result(None)
            else:
                self.opened.set_exception(ConnectionError(f"websocket handshake failed: {exc}"))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._set_opened(exc or TransportClosed(f"{self.owner.name}: closed during handshake"))
        failure = exc or TransportClosed(f"{self.owner.name}: websocket closed")
        pending, self.pending = self.pending, set()
        self.batches.clear()
        self.members.clear()
        self.owner.lost(self)
        for rid in sorted(pending):
            self.owner.on_reply(rid, Reply(failure=failure))


class WsTransport:
    """One websocket connection per endpoint, reconnected on demand by :meth:`wait_ready`."""

    def __init__(
        self,
        name: str,
        url: str,
        on_reply: OnReply,
        *,
        max_in_flight: int = 1024,
        connect_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = split_url(url)
        if parts.scheme not in ("ws", "wss"):
            raise ValueError(f"WsTransport needs a ws(s) URL, got {url!r}")
        self.name = name
        self.url = url
        self.on_reply = on_reply
        self._host, self._port = parts.host, parts.port
        self._ssl: ssl.SSLContext | None = None
        if parts.tls:
            self._ssl = ssl_context or ssl.create_default_context()
        self._max_in_flight = max_in_flight
        self._connect_timeout = connect_timeout
        self._conn: _WsConnection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._closed = False

    def ready(self) -> bool:
        conn = self._conn
        return (
            conn is not None
            and conn.is_open()
            and len(conn.pending) < self._max_in_flight
            and conn.transport is not None
            and conn.transport.get_write_buffer_size() < HIGH_WATER
        )

    def send(self, rid: int, body: bytes, ids: Sequence[int] = ()) -> None:
        if self._conn is None:
            raise TransportClosed(f"{self.name}: not connected")
        self._conn.write(rid, body, ids)

    def forget(self, rid: int) -> None:
        if self._conn is not None:
            self._conn.done(rid)

    async def wait_ready(self) -> None:
        while not self.ready():
            if self._closed:
                raise TransportClosed(f"{self.name}: closed")
            conn = self._conn
            if conn is not None and conn.is_open():
                await asyncio.sleep(0.001)  # in-flight cap or socket buffer full: let it drain
                continue
            await self._open()

    async def start(self) -> None:
        try:
            await self._open()
        except (OSError, TimeoutError):
            pass

    async def aclose(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            if conn.is_open():
                conn.protocol.send_close()
                conn.flush()
            conn.abort()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, conn = await loop.create_connection(
                lambda: _WsConnection(self),
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl else None,
            )
            try:
                await conn.opened
            except BaseException:
                conn.abort()
                raise
        if self._closed:
            conn.abort()
            raise TransportClosed(f"{self.name}: closed")
        self._conn = conn

    def lost(self, conn: _WsConnection) -> None:
        if self._conn is conn:
            self._conn = None
