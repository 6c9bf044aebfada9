"""Raw keep-alive HTTP/1.1 transport for ``http(s)://`` RPC endpoints.

Why not aiohttp: ``session.post()`` is a coroutine, so the bytes reach the socket only after
the event loop has run the request task, its connector and its writer (tens of µs per
request, more under load). Here a request is one ``transport.write()`` of pre-built bytes,
done synchronously inside :meth:`HttpTransport.send` (``bench/fanout.py`` measures both).

One request per connection at a time (no HTTP pipelining: proxies and some servers mishandle
it); a small pool of kept-alive connections per endpoint gives concurrency. Replies are parsed
by :class:`ResponseParser`, a sans-I/O HTTP/1.1 response reader (RFC 9112: status line, headers,
``Content-Length``, ``chunked``, or read-until-close).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from broadcaster.rpc.transport.base import OnReply, Reply, TransportClosed, split_url

__all__ = ["HttpTransport", "ParsedResponse", "ProtocolError", "ResponseParser"]

# A sendRawTransaction reply is ~100 bytes, a batch of 100 ~10 kB: cap what a bad peer can send.
MAX_RESPONSE = 1 << 20


class ProtocolError(TransportClosed):
    """The peer sent something that is not an HTTP/1.1 response."""


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    status: int
    body: bytes
    keep_alive: bool


class ResponseParser:
    """Incremental HTTP/1.1 response parser (RFC 9112 sections 4, 6, 7.1). No I/O."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._reset()

    def _reset(self) -> None:
        self._status: int | None = None
        self._length: int | None = None
        self._chunked = False
        self._keep_alive = True
        self._until_close = False
        self._body = bytearray()

    def feed(self, data: bytes) -> list[ParsedResponse]:
        self._buf += data
        if len(self._buf) > MAX_RESPONSE + 65536:
            raise ProtocolError("response too large")
        done: list[ParsedResponse] = []
        while True:
            response = self._step()
            if response is None:
                return done
            done.append(response)

    def feed_eof(self) -> ParsedResponse | None:
        """The peer closed: completes a read-until-close body, else None (incomplete)."""
        if self._status is not None and self._until_close:
            response = ParsedResponse(self._status, bytes(self._buf), keep_alive=False)
            self._buf.clear()
            self._reset()
            return response
        return None

    def _step(self) -> ParsedResponse | None:
        if self._status is None and not self._parse_head():
            return None
        if self._until_close:
            return None
        if self._chunked:
            return self._parse_chunks()
        assert self._length is not None
        if len(self._buf) < self._length:
            return None
        body = bytes(self._buf[: self._length])
        del self._buf[: self._length]
        return self._finish(body)

    def _finish(self, body: bytes) -> ParsedResponse:
        assert self._status is not None
        response = ParsedResponse(self._status, body, self._keep_alive)
        self._reset()
        return response

    def _parse_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > 65536:
                raise ProtocolError("response head too large")
            return False
        head = bytes(self._buf[:end]).decode("latin-1")
        del self._buf[: end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        keep_alive = parts[0] == "HTTP/1.1"
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"bad header line {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            if name == "content-length":
                if not value.isdigit():
                    raise ProtocolError(f"bad content-length {value[:40]!r}")
                length = int(value)
                if length > MAX_RESPONSE:
                    raise ProtocolError("response too large")
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection":
                tokens = value.lower()
                if "close" in tokens:
                    keep_alive = False
                elif "keep-alive" in tokens:
                    keep_alive = True
        if 100 <= status < 200:  # interim response (100 Continue): skip it, read on
            return self._parse_head() if self._buf else False
        self._status = status
        self._keep_alive = keep_alive
        if chunked:
            self._chunked = True
        elif length is not None:
            self._length = length
        elif status in (204, 304):
            self._length = 0
        else:
            self._until_close = True
            self._keep_alive = False
        return True

    def _parse_chunks(self) -> ParsedResponse | None:
        while True:
            line_end = self._buf.find(b"\r\n")
            if line_end < 0:
                return None
            size_text = bytes(self._buf[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                trailer_end = self._buf.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    return None
                del self._buf[: trailer_end + 4]
                return self._finish(bytes(self._body))
            if len(self._buf) < line_end + 2 + size + 2:
                return None
            start = line_end + 2
            self._body += self._buf[start : start + size]
            del self._buf[: start + size + 2]
            if len(self._body) > MAX_RESPONSE:
                raise ProtocolError("response too large")


class _Connection(asyncio.Protocol):
    def __init__(self, pool: HttpTransport) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.rid: int | None = None  # the request in flight, if any
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only duck-typed ones.
        self.transport = cast(asyncio.Transport, transport)

    def write(self, rid: int, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise TransportClosed(f"{self.pool.name}: connection closed")
        self.rid = rid
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            responses = self.parser.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        for response in responses:
            self._deliver(response)

    def eof_received(self) -> bool | None:
        response = self.parser.feed_eof()
        if response is not None:
            self._deliver(response)
        return None  # close the transport

    def _deliver(self, response: ParsedResponse) -> None:
        rid, self.rid = self.rid, None
        if not response.keep_alive:
            self.abort()
        elif rid is not None:
            self.pool.release(self)
        if rid is not None:
            self.pool.on_reply(rid, Reply(status=response.status, body=response.body))

    def _fail(self, exc: BaseException) -> None:
        rid, self.rid = self.rid, None
        self.abort()
        if rid is not None:
            self.pool.on_reply(rid, Reply(failure=exc))

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.discard(self)
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or TransportClosed(f"{self.pool.name}: connection closed by peer"))


class HttpTransport:
    """A pool of kept-alive HTTP/1.1 connections to one endpoint (see module docstring)."""

    def __init__(
        self,
        name: str,
        url: str,
        on_reply: OnReply,
        *,
        min_connections: int = 2,
        max_connections: int = 8,
        connect_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = split_url(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"HttpTransport needs an http(s) URL, got {url!r}")
        self.name = name
        self.on_reply = on_reply
        self._host, self._port = parts.host, parts.port
        self._ssl: ssl.SSLContext | None = None
        if parts.tls:
            self._ssl = ssl_context or ssl.create_default_context()
        self._min, self._max = min_connections, max(max_connections, 1)
        self._connect_timeout = connect_timeout
        host_header = (
            parts.host
            if parts.port == (443 if parts.tls else 80)
            else (f"{parts.host}:{parts.port}")
        )
        head = [
            f"POST {parts.target} HTTP/1.1",
            f"Host: {host_header}",
            "Content-Type: application/json",
            "Accept: application/json",
            "Connection: keep-alive",
        ]
        if parts.userinfo is not None:
            token = base64.b64encode(parts.userinfo.encode()).decode()
            head.append(f"Authorization: Basic {token}")
        self._head = ("\r\n".join(head) + "\r\nContent-Length: ").encode()
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._connecting = 0
        self._freed = asyncio.Event()
        self._closed = False

    # -- Transport protocol ---------------------------------------------------------------

    def ready(self) -> bool:
        return bool(self._idle)

    def send(self, rid: int, body: bytes, ids: Sequence[int] = ()) -> None:
        # A batch is one request like any other here: its reply, the array, comes on this
        # connection and goes to ``rid``; the element ids matter only to the fan-out.
        if not self._idle:
            raise TransportClosed(f"{self.name}: no idle connection")
        conn = self._idle.pop()
        conn.write(rid, b"".join((self._head, str(len(body)).encode(), b"\r\n\r\n", body)))

    def send_headed(self, rid: int, body: bytes, headers: bytes) -> None:
        """:meth:`send` with extra header lines (``b"Name: value\r\n"`` each) for this request
        only: a per-body signature such as ``X-Flashbots-Signature`` (DESIGN.md 5a)."""
        if not self._idle:
            raise TransportClosed(f"{self.name}: no idle connection")
        lines = headers.split(b"\r\n")
        if lines[-1] or any(b"\n" in x or b"\r" in x or b":" not in x for x in lines[:-1]):
            raise ValueError("expected 'Name: value' header lines, each ending in CRLF")
        conn = self._idle.pop()
        head = self._head[: -len(b"Content-Length: ")]
        length = str(len(body)).encode()
        conn.write(rid, b"".join((head, headers, b"Content-Length: ", length, b"\r\n\r\n", body)))

    def forget(self, rid: int) -> None:
        # The reply may still come on that connection: it can never carry another request.
        for conn in list(self._all):
            if conn.rid == rid:
                conn.rid = None
                conn.abort()

    async def wait_ready(self) -> None:
        while not self._idle:
            if self._closed:
                raise TransportClosed(f"{self.name}: closed")
            if len(self._all) + self._connecting < self._max:
                await self._open()
            else:
                self._freed.clear()
                await self._freed.wait()

    async def start(self) -> None:
        for _ in range(self._min):
            with contextlib.suppress(OSError, TimeoutError):
                await self._open()

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._all):
            conn.abort()
        self._freed.set()

    # -- pool -------------------------------------------------------------------------------

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._connecting += 1
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        finally:
            self._connecting -= 1
        if self._closed:
            conn.abort()
            raise TransportClosed(f"{self.name}: closed")
        self._all.add(conn)
        self.release(conn)

    def release(self, conn: _Connection) -> None:
        if not conn.closed and conn in self._all:
            self._idle.append(conn)
            self._freed.set()

    def discard(self, conn: _Connection) -> None:
        self._all.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        self._freed.set()  # a slot is free: a waiter may open a new connection
