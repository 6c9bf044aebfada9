"""Requests to private RPCs and block builders (DESIGN.md section 5a), written synchronously.

Each endpoint reuses a fan-out :class:`~broadcaster.rpc.transport.base.Transport` (raw
keep-alive HTTP/1.1 or websocket): :meth:`OrderflowSender.send` writes the JSON-RPC request into
the socket before it returns when the endpoint is ready -- so a reorg reaction's replacement
bundle is written inside the reaction -- and queues it (bounded) for the endpoint's worker
otherwise. Methods: ``eth_sendBundle``, ``eth_cancelBundle`` (builders, the Flashbots bundle
API) and ``eth_sendPrivateTransaction``, ``eth_cancelPrivateTransaction`` (private RPCs,
Flashbots Protect style). Answers are reported through ``on_result(endpoint, method, result)``
with ``result`` one of :data:`RESULTS`; nothing is retried (the next head re-targets a bundle).

An endpoint with ``auth = "flashbots"`` carries ``X-Flashbots-Signature`` on every request: the
signer's auth key signs each body (``SignerClient.sign_auth``, one enclave round trip), so its
requests always go through the worker, which signs what is queued a window at a time
(:data:`AUTH_SIGNS_IN_FLIGHT` over every endpoint, pipelined on the signer connection) and then
writes it. A body the signer would not sign is reported ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import orjson

from broadcaster.rpc.fanout import Endpoint, default_transport
from broadcaster.rpc.transport.base import Reply, Transport, split_url
from broadcaster.rpc.transport.http import HttpTransport
from signer_client.flashbots import HEADER
from signer_client.priority import URGENT, reacting

__all__ = ["RESULTS", "OrderflowEndpoint", "OrderflowSender"]

log = logging.getLogger(__name__)

RESULTS: Final = ("accepted", "rejected", "failed", "dropped")
"""``accepted``: a JSON-RPC result; ``rejected``: a JSON-RPC error; ``failed``: no answer
(connection, HTTP status, timeout, unreadable body); ``dropped``: the endpoint's queue was full."""

OnResult = Callable[[str, str, str], None]
SignAuth = Callable[[bytes], Awaitable[str]]  # body -> X-Flashbots-Signature value

AUTH_SIGNS_IN_FLIGHT: Final = 8
"""``sign_auth`` calls outstanding at once, over every auth endpoint. The enclave answers one
request at a time in arrival order, so every auth signature queued ahead of a transaction's delays
it: a head re-targeting 20 private intents at 5 auth builders asked for 100 at once, and a
reorg's re-sign waited behind all of them (measured against the real enclave: a tx sign 0.14 ms
alone, 23 ms behind 100, 197 ms behind 500; with this window 1.2 ms behind 100, 1.7 ms behind
500). Eight keep the pipelining and bound that wait to eight auth signatures."""


class OrderflowEndpoint:
    """One ``private`` or ``builder`` endpoint: its transport, queue and worker."""

    def __init__(
        self,
        name: str,
        url: str,
        kind: str,
        owner: OrderflowSender,
        queue_size: int,
        wrap: Callable[[Transport], Transport] | None = None,
        auth: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.auth = auth  # "flashbots": every request signed first (the worker's path)
        if auth is not None and split_url(url).scheme not in ("http", "https"):
            raise ValueError(
                f"{name}: auth = {auth!r} needs an http(s) endpoint (a per-body header)"
            )
        self.owner = owner
        self.queue: deque[tuple[str, int, bytes]] = deque()
        # Ids of queued requests offered inside ``signer_client.urgent()`` (a reorg reaction's
        # bundles): queued ahead of the ordinary ones, their auth bodies signed on the signer's
        # urgent lane and past the AUTH_SIGNS_IN_FLIGHT window.
        self.urgent: set[int] = set()
        self.queue_size = queue_size
        self.pending: dict[int, tuple[str, asyncio.TimerHandle | None]] = {}
        self.wake = asyncio.Event()
        self.transport: Transport = _transport(name, url, self.on_reply)
        if wrap is not None:  # [ha]: the lease fence before every write
            self.transport = wrap(self.transport)

    def offer(self, method: str, body_of: Callable[[int], bytes]) -> bool:
        """Write now (True) or queue for the worker (False)."""
        if self.auth is None and not self.queue and self.transport.ready():
            # RuntimeError: the [ha] fence refused the write (the lease lapsed); the worker
            # reports the queued copy as failed. Never raised into the reaction.
            with contextlib.suppress(OSError, RuntimeError):
                self.write(method, body_of)
                return True
        # A reaction's body (inside urgent()) has as many places again (as Lane.full gives an
        # urgent job): the backlog it goes ahead of must not be what drops it.
        if len(self.queue) >= (2 * self.queue_size if URGENT.get() else self.queue_size):
            self.owner.report(self.name, method, "dropped")
            return False
        rid = next(self.owner.ids)
        if URGENT.get():
            queue, urgent_ids = self.queue, self.urgent
            ahead = 0  # after the urgent ones already queued (their order kept)
            while ahead < len(queue) and queue[ahead][1] in urgent_ids:
                ahead += 1
            queue.insert(ahead, (method, rid, body_of(rid)))
            urgent_ids.add(rid)
        else:
            self.queue.append((method, rid, body_of(rid)))
        self.wake.set()
        return False

    def write(self, method: str, body_of: Callable[[int], bytes]) -> None:
        rid = next(self.owner.ids)
        self.transport.send(rid, body_of(rid))
        self._arm(rid, method)

    def _arm(self, rid: int, method: str) -> None:
        timer = None
        with contextlib.suppress(RuntimeError):
            timer = asyncio.get_running_loop().call_later(self.owner.timeout, self.expire, rid)
        self.pending[rid] = (method, timer)

    def expire(self, rid: int) -> None:
        entry = self.pending.pop(rid, None)
        if entry is not None:
            self.transport.forget(rid)
            self.owner.report(self.name, entry[0], "failed")

    def on_reply(self, rid: int, reply: Reply) -> None:
        entry = self.pending.pop(rid, None)
        if entry is None:
            return
        method, timer = entry
        if timer is not None:
            timer.cancel()
        self.owner.report(self.name, method, classify(reply))

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.auth is not None:
                await self._run_signed()
                continue
            while self.queue:
                try:
                    await self.transport.wait_ready()
                except (OSError, TimeoutError) as exc:
                    log.warning("orderflow endpoint %s unreachable: %s", self.name, exc)
                    await asyncio.sleep(0.2)
                    continue
                method, rid, body = self.queue.popleft()
                self.urgent.discard(rid)
                try:
                    self.transport.send(rid, body)
                except (OSError, RuntimeError):  # RuntimeError: the [ha] fence refused it
                    self.owner.report(self.name, method, "failed")
                    continue
                self._arm(rid, method)

    async def _run_signed(self) -> None:
        """Sign every queued body (concurrently: one signer connection pipelines them), then
        write each with its ``X-Flashbots-Signature``."""
        sign = self.owner.signed
        while self.queue:
            # A window at a time (AUTH_SIGNS_IN_FLIGHT): the queue may hold a thousand bodies.
            take = min(len(self.queue), AUTH_SIGNS_IN_FLIGHT)
            batch = [self.queue.popleft() for _ in range(take)]
            hurried = [rid in self.urgent for _, rid, _ in batch]
            self.urgent.difference_update(rid for _, rid, _ in batch)
            headers = await asyncio.gather(
                *(sign(body, hurry) for (_, _, body), hurry in zip(batch, hurried, strict=True)),
                return_exceptions=True,
            )
            for (method, rid, body), header in zip(batch, headers, strict=True):
                if isinstance(header, BaseException):
                    if isinstance(header, asyncio.CancelledError):
                        raise header
                    log.warning("orderflow endpoint %s: no auth signature: %s", self.name, header)
                    self.owner.report(self.name, method, "failed")
                    continue
                while True:
                    try:
                        await self.transport.wait_ready()
                        break
                    except (OSError, TimeoutError) as exc:
                        log.warning("orderflow endpoint %s unreachable: %s", self.name, exc)
                        await asyncio.sleep(0.2)
                line = f"{HEADER}: {header}\r\n".encode()
                try:
                    self.transport.send_headed(rid, body, line)  # type: ignore[attr-defined]
                except (OSError, RuntimeError, ValueError):  # RuntimeError: the [ha] fence
                    self.owner.report(self.name, method, "failed")
                    continue
                self._arm(rid, method)


def _transport(name: str, url: str, on_reply: Callable[[int, Reply], None]) -> Transport:
    """HTTP endpoints get a wider pool than the fan-out's: a bundle is one request per intent
    (builders take no batches), so a reaction that re-signs ``k`` private intents writes ``k``
    requests per builder at once, each on its own idle kept-alive connection."""
    if split_url(url).scheme in ("http", "https"):
        return HttpTransport(name, url, on_reply, min_connections=16, max_connections=128)
    return default_transport(Endpoint(name, url), on_reply)


def classify(reply: Reply) -> str:
    """One answer as a :data:`RESULTS` value."""
    if reply.failure is not None or (reply.status is not None and reply.status >= 400):
        return "failed"
    payload: Any = reply.payload
    if payload is None and reply.body is not None:
        try:
            payload = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            return "failed"
    if isinstance(payload, dict) and payload.get("error") is not None:
        return "rejected"
    if isinstance(payload, dict) and "result" in payload:
        return "accepted"
    return "failed"


def request(rid: int, method: str, params: dict[str, Any]) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": [params]})


def request_maker(method: str, params: dict[str, Any]) -> Callable[[int], bytes]:
    """``request`` for any id, the params serialized once (one request per endpoint)."""
    head = b'{"jsonrpc":"2.0","id":'
    tail = b',"method":' + orjson.dumps(method) + b',"params":[' + orjson.dumps(params) + b"]}"
    return lambda rid: b"".join((head, str(rid).encode(), tail))


class OrderflowSender:
    """Every ``private`` and ``builder`` endpoint. ``endpoints``: ``(name, url, kind)`` or
    ``(name, url, kind, auth)``; ``sign_auth`` signs the bodies of ``auth`` endpoints."""

    def __init__(
        self,
        endpoints: Sequence[tuple[str, str, str] | tuple[str, str, str, str | None]],
        *,
        on_result: OnResult | None = None,
        timeout: float = 2.0,
        queue_size: int = 1024,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
        wrap: Callable[[Transport], Transport] | None = None,
        sign_auth: SignAuth | None = None,
    ) -> None:
        self.ids = itertools.count(1)
        self.sign_auth = sign_auth
        self._auth_window = asyncio.Semaphore(AUTH_SIGNS_IN_FLIGHT)  # over every endpoint
        self.timeout = timeout
        self.clock_ns = clock_ns
        self.on_result: OnResult = on_result or (lambda rpc, method, result: None)
        self.endpoints = [
            OrderflowEndpoint(
                e[0], e[1], e[2], self, queue_size, wrap, e[3] if len(e) > 3 else None
            )
            for e in endpoints
        ]
        unsigned = [e.name for e in self.endpoints if e.auth is not None and sign_auth is None]
        if unsigned:
            raise ValueError(f"endpoints {unsigned} take auth but no sign_auth was given")
        self.builders = [e for e in self.endpoints if e.kind == "builder"]
        self.private = [e for e in self.endpoints if e.kind == "private"]

    async def signed(self, body: bytes, hurry: bool = False) -> str:
        """``sign_auth(body)``, at most :data:`AUTH_SIGNS_IN_FLIGHT` at once over every endpoint;
        ``hurry`` (a reorg reaction's body): on the signer's urgent lane, past the window (the
        window keeps the ordinary lane's queue short; the urgent lane does not queue behind it)."""
        sign = self.sign_auth
        assert sign is not None  # the constructor refuses an auth endpoint without a signer
        if hurry:
            with reacting():  # a reaction's own: ahead of the presignatures too
                return await sign(body)
        async with self._auth_window:
            return await sign(body)

    def report(self, rpc: str, method: str, result: str) -> None:
        try:
            self.on_result(rpc, method, result)
        except Exception:
            log.exception("orderflow on_result failed")

    def to_builders(self, method: str, params: dict[str, Any]) -> int:
        """Send one request to every builder; returns how many were written now."""
        return self._send(self.builders, method, params)

    def to_private(self, method: str, params: dict[str, Any]) -> int:
        return self._send(self.private, method, params)

    def _send(self, targets: list[OrderflowEndpoint], method: str, params: dict[str, Any]) -> int:
        written = 0
        body_of = request_maker(method, params)
        for endpoint in targets:
            if endpoint.offer(method, body_of):
                written += 1
        return written

    async def connect(self) -> None:
        async with asyncio.TaskGroup() as group:
            for endpoint in self.endpoints:
                group.create_task(endpoint.transport.start())

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for endpoint in self.endpoints:
                group.create_task(endpoint.run(), name=f"orderflow:{endpoint.name}")

    async def aclose(self) -> None:
        for endpoint in self.endpoints:
            for _, timer in endpoint.pending.values():
                if timer is not None:
                    timer.cancel()
            endpoint.pending.clear()
            await endpoint.transport.aclose()
