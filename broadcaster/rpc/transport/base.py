"""The seam between the fan-out and one RPC endpoint, and the request bytes it writes.

A :class:`Transport` writes synchronously: :meth:`Transport.send` puts the bytes into the
socket's buffer (asyncio ``transport.write``) before it returns, so the fan-out knows the exact
moment each endpoint's write was done, and the hot path never waits for an event-loop turn.
Replies come back through the ``on_reply(rid, reply)`` callback given at construction; a
JSON-RPC batch (one request carrying several ``eth_sendRawTransaction`` calls, each with its
own ``id``) is one ``rid`` and one reply, the JSON array the endpoint answered.
What can block (connecting, reconnecting, waiting for a free connection) is the one async
method, :meth:`Transport.wait_ready`.

Implementations: :mod:`broadcaster.rpc.transport.http` (raw keep-alive HTTP/1.1, ``http(s)://``),
:mod:`broadcaster.rpc.transport.ws` (websockets' sans-I/O protocol, ``ws(s)://``) and
:mod:`broadcaster.rpc.transport.fake` (scripted, in memory: tests and simulations of code that
uses the fan-out).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from broadcaster.errors import BroadcasterError

__all__ = [
    "OnReply",
    "Reply",
    "Transport",
    "TransportClosed",
    "encode_send_batch",
    "encode_send_raw",
    "split_url",
]


class TransportClosed(BroadcasterError, ConnectionError):
    """The transport was closed (by us, or it lost its connection) before a reply came."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What came back for one request: a JSON-RPC body, or a transport failure.

    ``payload`` is the already-parsed JSON object when the transport had to parse it anyway
    (websockets match replies by ``id``); ``body`` the raw bytes otherwise (HTTP).
    ``failure`` is set, and the rest empty, when no reply could be read (connection reset,
    closed, refused): the fan-out classifies it with ``rpc_errors.classify_exception``.
    """

    status: int | None = None
    body: bytes | None = None
    payload: Any = None
    failure: BaseException | None = None


OnReply = Callable[[int, Reply], None]


class Transport(Protocol):
    """One endpoint's connection(s). Not thread-safe; one event loop."""

    name: str

    def ready(self) -> bool:
        """True when :meth:`send` can write now (connected, a free slot, buffer not full)."""
        ...

    def send(self, rid: int, body: bytes, ids: Sequence[int] = ()) -> None:
        """Write one JSON-RPC request (``id`` = ``rid``) now. Only call when :meth:`ready`.

        ``ids`` non-empty: ``body`` is a batch (a JSON array) whose elements carry these ids and
        ``rid`` is only the transport's handle for it; its reply (the array) goes to ``rid``.
        Raises :class:`OSError` (e.g. :class:`TransportClosed`) if the write is impossible.
        """
        ...

    def forget(self, rid: int) -> None:
        """Stop waiting for ``rid`` (it timed out); its reply, if it comes, is dropped."""
        ...

    async def wait_ready(self) -> None:
        """Wait until :meth:`ready`, (re)connecting as needed; raises OSError/TimeoutError."""
        ...

    async def start(self) -> None:
        """Open connections ahead of the first send (best effort, never raises on refusal)."""
        ...

    async def aclose(self) -> None:
        """Close everything; pending requests get a :class:`TransportClosed` failure."""
        ...


_PREFIX = b'{"jsonrpc":"2.0","id":'
_MIDDLE = b',"method":"eth_sendRawTransaction","params":["0x'
_SUFFIX = b'"]}'


def encode_send_raw(rid: int, raw_hex: bytes) -> bytes:
    """The ``eth_sendRawTransaction`` request body (JSON-RPC 2.0), built by concatenation.

    ``raw_hex`` is the signed transaction as lower-case hex ASCII without ``0x`` (computed once
    per submission and shared by every endpoint). The test suite pins this against
    ``orjson.dumps`` of the equivalent object.
    """
    return b"".join((_PREFIX, str(rid).encode(), _MIDDLE, raw_hex, _SUFFIX))


def encode_send_batch(ids: Sequence[int], raw_hexes: Sequence[bytes]) -> bytes:
    """A JSON-RPC 2.0 batch (spec section 6): the array of :func:`encode_send_raw` requests.

    Array order is the order the caller wants the node to see them (a sender's nonce order);
    geth and anvil handle a batch's elements in that order. Pinned against ``orjson.dumps``
    in the tests like the single request.
    """
    parts = [encode_send_raw(rid, raw_hex) for rid, raw_hex in zip(ids, raw_hexes, strict=True)]
    return b"[" + b",".join(parts) + b"]"


@dataclass(frozen=True, slots=True)
class SplitUrl:
    scheme: str
    host: str
    port: int
    target: str  # path + query, for the HTTP request line
    tls: bool
    userinfo: str | None


_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def split_url(url: str) -> SplitUrl:
    """Split an endpoint URL; raise ValueError for unsupported schemes (RFC 3986)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"unsupported RPC URL scheme {parts.scheme!r} in {url!r}")
    if not parts.hostname:
        raise ValueError(f"RPC URL without a host: {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    userinfo = None
    if parts.username is not None:
        userinfo = f"{parts.username}:{parts.password or ''}"
    return SplitUrl(
        scheme=scheme,
        host=parts.hostname,
        port=parts.port or _DEFAULT_PORTS[scheme],
        target=target,
        tls=scheme in ("https", "wss"),
        userinfo=userinfo,
    )
