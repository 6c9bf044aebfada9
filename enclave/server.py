"""asyncio adapter: accepts connections on vsock / unix / tcp and feeds frames to ``EnclaveCore``.

Replies are handled inline in ``data_received`` (no task per request): the core is synchronous and
takes tens of microseconds, so a task hop would cost more than the work. The audit entries a read
queued are committed *before* its replies are written (``audit_before_reply=True``, the default,
DESIGN.md section 6a): no signature leaves without its entry, and a failed write fails closed:
every reply of that read is replaced by an ``audit_failed`` error, so the signatures never leave.
``audit_before_reply=False`` (``--audit-after-reply``, dev only) writes after the replies.

Lanes: a connection whose ``hello`` says ``{"lane": "urgent"}`` is answered as soon as its bytes are
read; an ordinary connection's requests beyond :data:`BATCH` in one read are queued and answered a
batch per loop pass (reading it paused meanwhile), so an urgent request is never behind more than
one batch of ordinary ones.

Once a connection has attested with a ``client_key`` (``signer_client/channel.py``), every later
reply frame on it carries the channel MAC.

Robustness against a hostile peer (the parent instance owns the socket): a frame must arrive
whole within ``read_timeout`` seconds of its first byte (a slowloris frame is cut off), at most
``max_connections`` connections are served at once (more are closed at accept), frames are capped
at 1 MiB before the body is read, a request no handler can parse is answered ``bad_request``
and logged, never dropped with the connection, and a peer that does not read its replies is not
read from until it does (write backpressure: replies never pile up in the enclave's memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable

import orjson

from enclave.audit import AuditWriteError
from enclave.core import EnclaveCore, Session
from signer_client.channel import seal
from signer_client.endpoints import Endpoint, listen_socket, parse_endpoint, set_nodelay
from signer_client.errors import FrameTooLarge, ProtocolError
from signer_client.framing import MAX_FRAME, FrameDecoder, encode_frame, parse_message
from signer_client.protocol import error_reply

__all__ = ["BATCH", "BusyPoll", "EnclaveServerProtocol", "ServerLimits", "serve"]

_dumps = orjson.dumps

BATCH = 8
"""Ordinary requests answered per loop pass when one read brings more (a pipelined backlog).

The client's urgent lane (``signer_client.priority``: a reorg reaction's re-signs, noops,
presignatures, bumps, auth signatures) is a second connection whose ``hello`` says
``{"lane": "urgent"}``; its requests are answered as soon as they are read. An ordinary
connection's backlog is answered a batch per pass, the loop polling its sockets between passes,
so an urgent request waits for at most the batch under way (8 signatures, ~0.3 ms), not for the
up to ``max_in_flight`` (256) requests ahead of it on the ordinary connection. Eight matches the
client's write coalescing (``signer_client.client.COALESCE_FRAMES``): a burst arrives in reads of
about that many, which are answered inline as before; the audit log is committed once a batch
(before its replies, fail-closed), so smaller batches would add write syscalls per signature."""


class ServerLimits:
    """Per-server limits and the live connection count."""

    def __init__(self, max_connections: int = 64, read_timeout: float = 5.0) -> None:
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.open = 0
        self.refused = 0
        self.timed_out = 0


class EnclaveServerProtocol(asyncio.Protocol):
    def __init__(
        self,
        core: EnclaveCore,
        clock: Callable[[], float],
        audit_before_reply: bool = True,
        limits: ServerLimits | None = None,
    ) -> None:
        self.core = core
        self.clock = clock
        self.audit_before_reply = audit_before_reply
        self.limits = limits or ServerLimits()
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.session = Session()
        self._deadline: asyncio.TimerHandle | None = None
        self._counted = False
        # Ordinary requests read but not answered yet (more than BATCH in one read): answered
        # BATCH per loop pass, so an urgent connection's requests are read and answered between.
        self._backlog: deque[bytes] = deque()
        self._backlog_held = False
        self._write_held = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        limits = self.limits
        if limits.open >= limits.max_connections:
            limits.refused += 1
            transport.write(  # type: ignore[attr-defined]
                encode_frame(error_reply(None, "too_many_connections", "connection cap reached"))
            )
            transport.close()
            return
        limits.open += 1
        self._counted = True
        set_nodelay(transport)

    def _arm(self) -> None:
        # A frame started and not finished: it must be whole within read_timeout.
        if self._deadline is None:
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(self.limits.read_timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._deadline = None
        self.limits.timed_out += 1
        if self.transport is not None:
            self.transport.write(
                encode_frame(error_reply(None, "read_timeout", "frame not completed in time"))
            )
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or not self._counted:
            return
        try:
            bodies = self.decoder.feed(data)
        except FrameTooLarge as exc:
            transport.write(encode_frame(error_reply(None, "frame_too_large", exc.reason)))
            transport.close()
            return
        if self._deadline is not None and (bodies or not self.decoder.buffered):
            self._deadline.cancel()  # the frame it timed is complete
            self._deadline = None
        if self.decoder.buffered:
            self._arm()  # a new frame started: it has read_timeout from now
        if not bodies:
            return
        if self.session.urgent:
            self._answer(bodies)  # the urgent lane: answered at once, whatever is queued
            return
        backlog = self._backlog
        if backlog:
            backlog.extend(bodies)  # behind what is already queued; the drain is scheduled
            return
        if len(bodies) > BATCH:
            backlog.extend(bodies[BATCH:])
            bodies = bodies[:BATCH]
            self._hold(True)
            asyncio.get_running_loop().call_soon(self._drain)
        self._answer(bodies)

    def _drain(self) -> None:
        """Answer the next :data:`BATCH` queued ordinary requests; reschedule while any remain.

        Each batch is one loop pass, and the loop polls its sockets between passes, so a request
        read meanwhile on an urgent connection is answered before the next batch."""
        backlog = self._backlog
        if self.transport is None:
            backlog.clear()
            return
        bodies = [backlog.popleft() for _ in range(min(BATCH, len(backlog)))]
        if backlog:
            asyncio.get_running_loop().call_soon(self._drain)
        else:
            self._hold(False)
        self._answer(bodies)

    def _hold(self, queued: bool) -> None:
        # Reading stops while a backlog is queued (the enclave's memory holds at most one read's
        # requests) or while the peer does not read its replies (pause_writing): resumed only
        # when neither holds.
        self._backlog_held = queued
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if queued or self._write_held:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _answer(self, bodies: list[bytes]) -> None:
        transport = self.transport
        assert transport is not None
        now = self.clock()
        core = self.core
        handle = core.handle
        session = self.session
        replies: list[tuple[dict[str, object], bytes | None]] = []
        for body in bodies:
            key = session.mac_key  # the attestation reply itself still goes out plain
            try:
                reply = handle(parse_message(body), now, session)
            except ProtocolError as exc:
                reply = core.bad_frame(now, exc.reason)
            except RecursionError:
                reply = core.bad_frame(now, "frame nested too deeply")
            if session.pending_key is not None:
                session.mac_key, session.pending_key = session.pending_key, None
            replies.append((reply, key))
        audit = core.audit
        if audit is not None and self.audit_before_reply:
            try:
                audit.commit()
            except AuditWriteError as exc:
                # Fail closed: not one signature of this batch leaves without its entry.
                print(f"enclave: {exc}", file=sys.stderr, flush=True)
                replies = [
                    (error_reply(r.get("id"), "audit_failed", "audit log write failed"), k)
                    for r, k in replies
                ]
        out = [_frame(r, k) for r, k in replies]
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        if audit is not None and not self.audit_before_reply:
            try:
                audit.commit()
            except AuditWriteError as exc:
                print(f"enclave: {exc}", file=sys.stderr, flush=True)

    # Write backpressure: a peer that pipelines requests and never reads its replies would
    # otherwise make us queue every reply in the enclave's fixed memory. While the transport's
    # write buffer is above its high-water mark we read (and so answer) nothing more.
    def pause_writing(self) -> None:
        self._write_held = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_held = False
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self._backlog_held:
            transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._backlog.clear()  # nothing was signed for these: no reply owed, none can be sent
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._counted:
            self._counted = False
            self.limits.open -= 1


def _frame(reply: dict[str, object], key: bytes | None) -> bytes:
    if key is None:
        return encode_frame(reply)
    body = seal(key, _dumps(reply))
    n = len(body)
    if n > MAX_FRAME:
        raise FrameTooLarge(n, MAX_FRAME)
    return n.to_bytes(4, "big") + body


async def serve(
    core: EnclaveCore,
    url: str,
    *,
    clock: Callable[[], float] = time.time,
    audit_before_reply: bool = True,
    limits: ServerLimits | None = None,
) -> asyncio.AbstractServer:
    """Start listening on ``url``; the caller owns the returned server."""
    loop = asyncio.get_running_loop()
    ep: Endpoint = parse_endpoint(url)
    shared = limits or ServerLimits()

    def factory() -> EnclaveServerProtocol:
        return EnclaveServerProtocol(core, clock, audit_before_reply, shared)

    if ep.scheme == "unix":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ep.path)
        return await loop.create_unix_server(factory, ep.path)
    if ep.scheme == "tcp":
        return await loop.create_server(factory, ep.host, ep.port)
    sock = listen_socket(ep)
    assert sock is not None
    return await loop.create_server(factory, sock=sock)


class BusyPoll:
    """Keep the event loop polling instead of sleeping in ``epoll_wait`` (``--busy-poll``).

    A callback that re-schedules itself makes every loop iteration poll with a zero timeout, so a
    request is picked up by a running process instead of one the kernel must wake. Measured on the
    2-vCPU dev VMs (uvloop echo of a 300-byte frame, client idle 2 ms between requests): p50 50 us
    with a sleeping server, 18 us with a polling one; back to back both are 14 us. A Nitro enclave
    owns its vCPUs, so burning one there costs nothing else; on a shared dev box it takes a core
    from everything else, hence off by default.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._handle: asyncio.Handle | None = None

    def start(self) -> None:
        if self._handle is None:
            self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
