"""Multi-RPC fan-out: every signed transaction goes to every configured endpoint at once.

DESIGN.md section 5 ("Fan-out"): one bounded queue per RPC endpoint so a slow endpoint never
delays another; kept-alive connections; replies classified by :mod:`broadcaster.rpc.error_table`.

API::

    fanout = FanOut([Endpoint("a", "http://127.0.0.1:8545"), Endpoint("b", "ws://...")],
                    on_result=handle_result, on_written=note_write)
    async with fanout:                       # or: tg.create_task(fanout.run()) after start()
        fanout.submit(raw, tx_hash, context)  # sync, never blocks, never raises on a full queue
        fanout.submit_many([(raw, tx_hash, context), ...])  # same, one batch request per lane

Per endpoint (a *lane*, :mod:`broadcaster.rpc.lane`): ``submit`` writes straight to the
socket when the lane is idle (its queue empty, a connection ready) -- the reorg reaction's fast
path, no event-loop turn between the head frame and the last write. Otherwise the job goes to
the lane's bounded queue (full -> a ``DROPPED`` result for that endpoint, the caller never
waits) and the lane's worker writes it when the endpoint is ready; per-endpoint FIFO order is
kept, so a sender's later nonces reach each node in order.

Batching (JSON-RPC 2.0 section 6) is adaptive: one job goes out as the plain
``eth_sendRawTransaction`` request, byte for byte; more than one -- ``submit_many``'s items, or
what queued up while the endpoint was busy -- go out as one JSON array of up to ``max_batch``
requests, in FIFO order (geth and anvil take a batch's elements in array order). Each job of a
batch is still answered, reported and retried on its own (:mod:`broadcaster.rpc.batch`
reads the reply array by ``id``); an endpoint that refuses batches gets single requests from
then on.

Every write is reported through ``on_written`` (a :class:`Written`, with ``written_ns`` from the
injectable clock: the "last RPC write done" end of ``broadcaster_reaction_seconds``); every
answer through ``on_result`` (a :class:`BroadcastResult`: endpoint, kind, the node's message,
``latency_s`` write -> reply for ``broadcast_seconds{rpc}``) -- one of each per job, also for
a job that went out inside a batch (its ``written_ns`` is then the batch's). Retryable kinds
(timeouts, transient failures, full pools, rate limits) are retried per job after delays from
:func:`backoff`, up to ``max_attempts``; each attempt yields a result, ``final`` tells the last
one. Metrics stay out of this module: the callbacks feed them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from broadcaster.rpc.error_table import REACTIONS, ErrorKind, Reaction, Verdict
from broadcaster.rpc.lane import Job, Lane, LaneStats, Sent
from broadcaster.rpc.transport.base import OnReply, Transport, split_url

__all__ = [
    "BroadcastResult",
    "Endpoint",
    "FanOut",
    "LaneStats",
    "Written",
    "backoff",
    "default_transport",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A broadcast target: ``[[rpcs]]`` in the config (``http(s)://`` or ``ws(s)://``)."""

    name: str
    url: str


@dataclass(frozen=True, slots=True)
class Written:
    """The request bytes of one attempt were handed to the endpoint's socket."""

    endpoint: str
    tx_hash: bytes
    written_ns: int
    attempt: int
    context: object


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    """One endpoint's answer to one attempt (or why there was none)."""

    endpoint: str
    tx_hash: bytes
    kind: ErrorKind
    message: str | None
    code: int | None
    latency_s: float | None  # write -> reply; None when nothing was written
    written_ns: int | None
    attempt: int
    final: bool  # no further attempt will follow for this endpoint
    context: object

    @property
    def reaction(self) -> Reaction:
        return REACTIONS[self.kind]


def backoff(
    *,
    base: float = 0.05,
    factor: float = 2.0,
    cap: float = 2.0,
    rng: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Retry delays in seconds: exponential, capped, "equal jitter" (half fixed, half random).

    Jitter spreads retries of many transactions so an endpoint coming back is not hit by all of
    them at once (AWS Architecture Blog, "Exponential Backoff And Jitter"). Inject ``rng`` (or
    a whole factory into :class:`FanOut`) for deterministic tests.
    """
    delay = base
    while True:
        yield delay / 2 + delay / 2 * rng()
        delay = min(cap, delay * factor)


TransportFactory = Callable[[Endpoint, OnReply], Transport]


def default_transport(endpoint: Endpoint, on_reply: OnReply) -> Transport:
    """Raw keep-alive HTTP/1.1 for ``http(s)://``, websockets for ``ws(s)://``."""
    scheme = split_url(endpoint.url).scheme
    if scheme in ("http", "https"):
        from broadcaster.rpc.transport.http import HttpTransport

        return HttpTransport(endpoint.name, endpoint.url, on_reply)
    from broadcaster.rpc.transport.ws import WsTransport

    return WsTransport(endpoint.name, endpoint.url, on_reply)


class FanOut:
    """Send each signed transaction to all endpoints concurrently (see the module docstring)."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        on_result: Callable[[BroadcastResult], None],
        on_written: Callable[[Written], None] | None = None,
        queue_size: int = 1024,
        max_batch: int = 100,
        timeout: float = 2.0,
        max_attempts: int = 4,
        backoff: Callable[[], Iterator[float]] = backoff,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
        transport_factory: TransportFactory = default_transport,
    ) -> None:
        names = [endpoint.name for endpoint in endpoints]
        if not endpoints or len(set(names)) != len(names):
            raise ValueError(f"need at least one endpoint, with unique names: {names}")
        self._on_result = on_result
        self._on_written = on_written
        self._timeout = timeout
        self._max_attempts = max(1, max_attempts)
        self._backoff = backoff
        self._clock_ns = clock_ns
        self._ids = itertools.count(1)
        self._timers: set[asyncio.TimerHandle] = set()
        self._runner: asyncio.Task[None] | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._lanes: list[Lane] = []
        for endpoint in endpoints:
            lane = Lane(self, endpoint, queue_size=queue_size, max_batch=max(1, max_batch))
            lane.transport = transport_factory(endpoint, lane.on_reply)
            self._lanes.append(lane)

    # -- public API ---------------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [lane.endpoint.name for lane in self._lanes]

    def stats(self) -> dict[str, LaneStats]:
        return {lane.endpoint.name: lane.stats for lane in self._lanes}

    def submit(self, raw: bytes, tx_hash: bytes, context: object = None) -> None:
        """Queue (or write at once) ``raw`` to every endpoint. Sync; never blocks the caller."""
        if self._closed:
            raise RuntimeError("FanOut is closed")
        raw_hex = raw.hex().encode()
        # Every idle endpoint's socket write first, the timers and callbacks after: the last
        # write of a reorg reaction does not wait behind the other lanes' bookkeeping.
        written: list[Sent] = []
        for lane in self._lanes:
            lane.offer(Job(raw_hex, tx_hash, context), written)
        for lane, rid, entry in written:
            lane.after_write(rid, entry)

    def submit_many(self, items: Sequence[tuple[bytes, bytes, object]]) -> None:
        """:meth:`submit` for several ``(raw, tx_hash, context)`` at once, kept in this order.

        Each idle endpoint gets them in one batch request (``max_batch`` at most per request,
        as many requests as it takes now), written before this returns -- every lane's socket
        writes first, then the timers and ``on_written`` callbacks, as in :meth:`submit`. A
        busy endpoint queues them. One item is exactly :meth:`submit` (same bytes).
        """
        if len(items) == 1:
            self.submit(*items[0])
            return
        if self._closed:
            raise RuntimeError("FanOut is closed")
        prepared = [(raw.hex().encode(), tx_hash, context) for raw, tx_hash, context in items]
        written: list[Sent] = []
        for lane in self._lanes:
            lane.offer_many([Job(*item) for item in prepared], written)
        for lane, rid, entry in written:
            lane.after_write(rid, entry)

    async def start(self) -> None:
        """Open connections and run the lane workers in a task owned by this object."""
        await self.connect()
        self._runner = asyncio.create_task(self.run(), name="fanout")

    async def connect(self) -> None:
        """Pre-open every endpoint's connections (best effort: a down endpoint is retried)."""
        self._event_loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            for lane in self._lanes:
                tg.create_task(lane.transport.start())

    async def run(self) -> None:
        """Run one worker per endpoint until cancelled (for the service's TaskGroup)."""
        self._event_loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            for lane in self._lanes:
                tg.create_task(lane.run(), name=f"fanout:{lane.endpoint.name}")

    async def aclose(self) -> None:
        """Stop the workers, close connections; unsent and unanswered jobs end DROPPED."""
        if self._closed:
            return
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            try:
                await runner
            except asyncio.CancelledError:
                pass
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for lane in self._lanes:
            await lane.transport.aclose()
            lane.close(Verdict(ErrorKind.DROPPED, "fan-out closed"))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- internals ----------------------------------------------------------------------------

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._event_loop is None:
            self._event_loop = asyncio.get_running_loop()
        return self._event_loop

    def _settle(self, lane: Lane, job: Job, verdict: Verdict, written_ns: int | None) -> None:
        retry = (
            REACTIONS[verdict.kind] is Reaction.RETRY
            and job.attempt - job.refused < self._max_attempts
            and not self._closed
        )
        self._report(lane, job, verdict, written_ns, final=not retry)
        if retry:
            if job.delays is None:
                job.delays = self._backoff()
            delay = next(job.delays)
            lane.stats.retries += 1
            timer: asyncio.TimerHandle | None = None

            def fire() -> None:
                if timer is not None:
                    self._timers.discard(timer)
                if not self._closed:
                    lane.offer(job)

            timer = self._loop().call_later(delay, fire)
            self._timers.add(timer)

    def _report(
        self, lane: Lane, job: Job, verdict: Verdict, written_ns: int | None, final: bool
    ) -> None:
        latency = None
        if written_ns is not None:
            latency = (self._clock_ns() - written_ns) / 1e9
        result = BroadcastResult(
            endpoint=lane.endpoint.name,
            tx_hash=job.tx_hash,
            kind=verdict.kind,
            message=verdict.message,
            code=verdict.code,
            latency_s=latency,
            written_ns=written_ns,
            attempt=job.attempt,
            final=final,
            context=job.context,
        )
        try:
            self._on_result(result)
        except Exception:
            log.exception("on_result callback failed")

    def _written(self, lane: Lane, job: Job, written_ns: int) -> None:
        if self._on_written is None:
            return
        written = Written(lane.endpoint.name, job.tx_hash, written_ns, job.attempt, job.context)
        try:
            self._on_written(written)
        except Exception:
            log.exception("on_written callback failed")
