"""Signer endpoint URLs and how to open a stream to each (DESIGN.md section 6).

``vsock://CID:PORT`` (production: the parent instance talks to its Nitro enclave),
``unix:///absolute/path`` and ``tcp://host:port`` (dev boxes and tests).

uvloop's ``sock_connect`` resolves addresses with getaddrinfo, which knows nothing of AF_VSOCK, so
for vsock we connect a blocking socket in a worker thread and hand the connected socket to the
event loop (``create_connection(sock=...)``). The socket factory is injectable so that path is unit
tested on machines without vsock.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from signer_client.errors import SignerUnavailable

__all__ = [
    "VMADDR_CID_ANY",
    "Endpoint",
    "connect_vsock_socket",
    "listen_socket",
    "parse_endpoint",
    "set_nodelay",
]

VMADDR_CID_ANY = 0xFFFFFFFF
_AF_VSOCK: int = getattr(socket, "AF_VSOCK", 40)  # 40 on Linux; absent from some builds


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str  # "vsock" | "unix" | "tcp"
    host: str = ""  # tcp
    port: int = 0  # tcp, vsock
    cid: int = 0  # vsock
    path: str = ""  # unix

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        if self.scheme == "vsock":
            return f"vsock://{self.cid}:{self.port}"
        return f"tcp://{self.host}:{self.port}"


def _port(text: str | None, url: str) -> int:
    try:
        port = int(text or "")
    except ValueError:
        raise ValueError(f"{url}: port must be an integer") from None
    if not 0 <= port < 1 << 32:
        raise ValueError(f"{url}: port out of range")
    return port


def parse_endpoint(url: str) -> Endpoint:
    """Parse a signer URL; raise ``ValueError`` saying what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"{url!r}: expected vsock://CID:PORT, unix:///path or tcp://host:port")
    if scheme == "unix":
        if not rest.startswith("/"):
            raise ValueError(f"{url}: a unix socket path must be absolute (unix:///path)")
        return Endpoint("unix", path=rest)
    if scheme == "vsock":
        cid_text, colon, port_text = rest.partition(":")
        if not colon:
            raise ValueError(f"{url}: expected vsock://CID:PORT")
        try:
            cid = int(cid_text)
        except ValueError:
            raise ValueError(f"{url}: CID must be an integer") from None
        if not 0 <= cid <= VMADDR_CID_ANY:
            raise ValueError(f"{url}: CID out of range")
        return Endpoint("vsock", cid=cid, port=_port(port_text, url))
    if scheme == "tcp":
        parts = urlsplit(url)
        if not parts.hostname or parts.port is None:
            raise ValueError(f"{url}: expected tcp://host:port")
        return Endpoint("tcp", host=parts.hostname, port=_port(str(parts.port), url))
    raise ValueError(f"{url}: unknown scheme {scheme!r} (vsock, unix or tcp)")


SocketFactory = Callable[[int, int], socket.socket]


def _blocking_vsock_connect(
    cid: int, port: int, timeout: float, factory: SocketFactory
) -> socket.socket:
    sock = factory(_AF_VSOCK, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((cid, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_vsock_socket(
    cid: int, port: int, connect_timeout: float, factory: SocketFactory = socket.socket
) -> socket.socket:
    """A connected, non-blocking AF_VSOCK socket (connected in a worker thread)."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(
            None, _blocking_vsock_connect, cid, port, connect_timeout, factory
        )
    except OSError as exc:
        raise SignerUnavailable(f"vsock://{cid}:{port}: {exc}") from exc


def listen_socket(ep: Endpoint, factory: SocketFactory = socket.socket) -> socket.socket | None:
    """A bound, listening vsock socket for servers; ``None`` for schemes asyncio binds itself."""
    if ep.scheme != "vsock":
        return None
    sock = factory(_AF_VSOCK, socket.SOCK_STREAM)
    sock.bind((ep.cid, ep.port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Disable Nagle on a TCP transport: a reply frame must leave the moment it is written.

    asyncio and uvloop already do this for TCP connections they create; we say it explicitly so
    neither side's latency depends on that default. Unix and vsock streams have no Nagle.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
