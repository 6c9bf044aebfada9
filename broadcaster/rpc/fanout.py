"""Multi-RPC fan-out: every signed transaction goes to every configured endpoint at once.

DESIGN.md section 5 ("Fan-out"): one bounded queue per RPC endpoint so a slow endpoint never
delays another; kept-alive connections; replies classified by :mod:`broadcaster.rpc.error_table`.

API::

    fanout = FanOut([Endpoint("a", "http://127.0.0.1:8545"), Endpoint("b", "ws://...")],
                    on_result=handle_result, on_written=note_later_write)
    async with fanout:                       # or: tg.create_task(fanout.run()) after start()
        done = fanout.submit(raw, tx_hash, context)  # sync; never blocks, never raises on a
                                                     # full queue or a down endpoint
        done.written, done.last_ns, done.queued, done.refused  # see "What submit returns"
        done = fanout.submit_many([(raw, tx_hash, context), ...])  # one batch request per lane

Per endpoint (a *lane*, :mod:`broadcaster.rpc.lane`): ``submit`` writes straight to the
socket when the lane is idle (its queue empty, a connection ready) -- the reorg reaction's fast
path, no event-loop turn between the head frame and the last write. Otherwise the job goes to
the lane's bounded queue and the lane's worker writes it when the endpoint is ready; per-endpoint
FIFO order is kept, so a sender's later nonces reach each node in order; a reorg reaction's job
(``context.urgent``) goes ahead of the queued ones (:meth:`Lane.enqueue`). An endpoint whose last
connection attempt failed is *down*: it takes no new job until its worker, reconnecting after
delays from :func:`broadcaster.backoff.backoff`, connects again; an endpoint whose queue is full
takes none either (an urgent job has as many places again: :meth:`Lane.full`).

**What submit returns.** ``submit`` and ``submit_many`` return a :class:`Submitted`: the
(transaction, endpoint) jobs written before the call returned (``written``, and ``last_ns``,
the clock's stamp right after the last of those writes: the "last RPC write done" end of
``broadcaster_reaction_seconds`` when nothing else is pending), the jobs queued for a write
later (``queued``) and the jobs their endpoint did not take (``refused``: down, queue full). Neither
call invokes a callback: the writes it returns are not reported again through ``on_written``,
and results that arise during the call (a refusal, a write that failed) reach ``on_result`` on
the next event-loop turn. The guarantee that lets a caller account for every job:

- for each job counted in ``queued``, the fan-out later reports exactly one of: its first write
  (``on_written`` with ``first=True``), or a final failure before any write (``on_result`` with
  ``final=True, written=False``);
- for each job counted in ``refused``: a final ``on_result`` (``DROPPED``, ``written=False``)
  on the next turn, and nothing else;
- for each job counted in ``written``: nothing through ``on_written`` for that write (unless
  the transitional ``legacy_on_written``), and its answer(s) through ``on_result`` as for any
  other write.

Batching (JSON-RPC 2.0 section 6) is adaptive: one job goes out as the plain
``eth_sendRawTransaction`` request, byte for byte; more than one -- ``submit_many``'s items, or
what queued up while the endpoint was busy -- go out as one JSON array of up to ``max_batch``
requests, in FIFO order (geth and anvil take a batch's elements in array order). Each job of a
batch is still answered, reported and retried on its own (:mod:`broadcaster.rpc.batch`
reads the reply array by ``id``); an endpoint that refuses batches gets single requests from
then on.

Writes made later (by a lane's worker, or a retry) are reported through ``on_written`` (a
:class:`Written`, with ``written_ns`` from the injectable clock, ``first`` for the job's first
write to that endpoint); every answer through ``on_result`` (a :class:`BroadcastResult`:
endpoint, kind, the node's message, ``latency_s`` write -> reply for
``broadcast_seconds{rpc}``, ``written``: whether the job ever reached that endpoint) -- one per
attempt, also for a job that went out inside a batch (its ``written_ns`` is then the batch's).
Retryable kinds (timeouts, transient failures, full pools, rate limits) are retried per job
after delays from :func:`broadcaster.backoff.backoff`, up to ``max_attempts``; each attempt
yields a result, ``final`` tells the last one. Metrics stay out of this module: the callbacks
and the return values feed them.
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

from broadcaster.backoff import backoff
from broadcaster.rpc.error_table import REACTIONS, ErrorKind, Reaction, Verdict
from broadcaster.rpc.lane import InFlight, Job, Lane, LaneStats
from broadcaster.rpc.transport.base import OnReply, Transport, split_url

__all__ = [
    "BroadcastResult",
    "Endpoint",
    "FanOut",
    "LaneStats",
    "Submitted",
    "Written",
    "default_transport",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A broadcast target: ``[[rpcs]]`` in the config (``http(s)://`` or ``ws(s)://``)."""

    name: str
    url: str


@dataclass(slots=True)
class Submitted:
    """What one ``submit`` / ``submit_many`` call did, counted in jobs: one job is one
    transaction for one endpoint (``submit`` to 3 endpoints is 3 jobs). See the module
    docstring for what the fan-out reports later about each kind of job."""

    written: int = 0  # jobs written before the call returned (not reported via on_written)
    last_ns: int = 0  # the clock (``clock_ns``) right after the last of those writes; 0: none
    queued: int = 0  # jobs to be written later: each ends in a first write or an unwritten final
    refused: int = 0  # jobs their endpoint did not take (down, queue full): a final DROPPED each
    written_items: int = 0  # the first ``written_items`` items reached at least one endpoint


@dataclass(frozen=True, slots=True)
class Written:
    """The request bytes of one attempt were handed to the endpoint's socket, after the
    ``submit`` call that offered the job had returned (a queued job, a retry)."""

    endpoint: str
    tx_hash: bytes
    written_ns: int
    attempt: int
    first: bool  # the job's first write to this endpoint (earlier attempts were never written)
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
    written: bool  # this job reached the endpoint in this or an earlier attempt
    context: object

    @property
    def reaction(self) -> Reaction:
        return REACTIONS[self.kind]


_JITTER = random.Random()


def retry_delays() -> Iterator[float]:
    """The default delays before a job's retries: 50 ms doubling to 2 s, jittered."""
    return backoff(initial=0.05, maximum=2.0, jitter=_JITTER)


def reconnect_delays() -> Iterator[float]:
    """The default delays between a down endpoint's connection attempts: 50 ms to 1 s."""
    return backoff(initial=0.05, maximum=1.0, jitter=_JITTER)


TransportFactory = Callable[[Endpoint, OnReply], Transport]


def default_transport(endpoint: Endpoint, on_reply: OnReply) -> Transport:
    """Raw keep-alive HTTP/1.1 for ``http(s)://``, websockets for ``ws(s)://``."""
    scheme = split_url(endpoint.url).scheme
    if scheme in ("http", "https"):
        from broadcaster.rpc.transport.http import HttpTransport

        return HttpTransport(endpoint.name, endpoint.url, on_reply)
    from broadcaster.rpc.transport.ws import WsTransport

    return WsTransport(endpoint.name, endpoint.url, on_reply)


def _ignore(result: BroadcastResult) -> None:
    """The answer sink before anyone listens."""


class FanOut:
    """Send each signed transaction to all endpoints concurrently (see the module docstring).

    ``on_result`` and ``on_written`` may be given here or later with :meth:`listen` (the tx
    manager, built after the fan-out, subscribes itself).
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        on_result: Callable[[BroadcastResult], None] | None = None,
        on_written: Callable[[Written], None] | None = None,
        queue_size: int = 1024,
        max_batch: int = 100,
        timeout: float = 2.0,
        max_attempts: int = 4,
        backoff: Callable[[], Iterator[float]] = retry_delays,
        reconnect: Callable[[], Iterator[float]] = reconnect_delays,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
        transport_factory: TransportFactory = default_transport,
    ) -> None:
        names = [endpoint.name for endpoint in endpoints]
        if not endpoints or len(set(names)) != len(names):
            raise ValueError(f"need at least one endpoint, with unique names: {names}")
        self._on_result: Callable[[BroadcastResult], None] = on_result or _ignore
        self._on_written = on_written
        self._timeout = timeout
        self._max_attempts = max(1, max_attempts)
        self._backoff = backoff
        self._reconnect = reconnect
        self._clock_ns = clock_ns
        self._ids = itertools.count(1)
        self._timers: dict[asyncio.TimerHandle, tuple[Lane, Job]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._submitting = False  # inside submit(): results wait for the next loop turn
        self._deferred: list[BroadcastResult] = []
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

    def down(self) -> list[str]:
        """The endpoints that take no new job now (their last connection attempt failed)."""
        return [lane.endpoint.name for lane in self._lanes if lane.down is not None]

    def submit(self, raw: bytes, tx_hash: bytes, context: object = None) -> Submitted:
        """Write ``raw`` to every idle endpoint now, queue it for the busy ones. Sync; never
        blocks and calls back nothing (see :class:`Submitted` and the module docstring)."""
        if self._closed:
            raise RuntimeError("FanOut is closed")
        raw_hex = raw.hex().encode()
        written = 0
        last: InFlight | None = None
        busy: list[Lane] | None = None
        urgent = getattr(context, "urgent", False) is True
        self._submitting = True
        try:
            # Every idle endpoint's socket write first; the busy ones' queueing, the counts and
            # the timers after: the last write of a reorg reaction waits behind none of them.
            # An urgent job (a reaction's) is written past a lane's queue when its connection
            # is ready, and queued at the queue's head when it is not.
            for lane in self._lanes:
                if (lane.queue and not urgent) or not lane.transport.ready():
                    if busy is None:
                        busy = [lane]
                    else:
                        busy.append(lane)
                    continue
                entry = lane.write_new(Job(raw_hex, tx_hash, context, urgent=urgent))
                if entry is not None:
                    written += 1
                    last = entry
            done = Submitted(written, 0 if last is None else last.written_ns, 0, 0, min(written, 1))
            done.queued = len(self._lanes) - written - (0 if busy is None else len(busy))
            if busy is not None:
                for lane in busy:
                    lane.hold(Job(raw_hex, tx_hash, context, urgent=urgent), done)
            if written:
                for lane in self._lanes:
                    if lane.fresh:
                        lane.arm_fresh()
        finally:
            self._submitting = False
        return done

    def submit_many(self, items: Sequence[tuple[bytes, bytes, object]]) -> Submitted:
        """:meth:`submit` for several ``(raw, tx_hash, context)`` at once, kept in this order.

        Each idle endpoint gets them in one batch request (``max_batch`` at most per request,
        as many requests as it takes now), written before this returns -- every lane's socket
        writes first, then the timers, as in :meth:`submit`. A busy endpoint queues them. Each
        endpoint writes a prefix of the items now and queues or refuses the rest, so the first
        ``written_items`` items are the ones that reached at least one endpoint. One item is
        exactly :meth:`submit` (same bytes).
        """
        if len(items) == 1:
            return self.submit(*items[0])
        if self._closed:
            raise RuntimeError("FanOut is closed")
        done = Submitted()
        if not items:
            return done
        prepared = [
            (raw.hex().encode(), tx_hash, context, getattr(context, "urgent", False) is True)
            for raw, tx_hash, context in items
        ]
        self._submitting = True
        try:
            # The idle endpoints' writes first, then the busy ones' queueing (as in submit).
            # Urgent items (a reaction's, all of them urgent) pass a ready lane's queue.
            ahead = all(p[3] for p in prepared)
            busy = [
                lane
                for lane in self._lanes
                if (lane.queue and not ahead) or not lane.transport.ready()
            ]
            for lane in self._lanes:
                if lane not in busy:
                    lane.take_new_many([Job(*p[:3], urgent=p[3]) for p in prepared], done)
            for lane in busy:
                lane.take_new_many([Job(*p[:3], urgent=p[3]) for p in prepared], done)
            if done.written:
                for lane in self._lanes:
                    if lane.fresh:
                        lane.arm_fresh()
        finally:
            self._submitting = False
        return done

    async def start(self) -> None:
        """Open connections and run the lane workers in a task owned by this object."""
        await self.connect()
        self._runner = asyncio.create_task(self.run(), name="fanout")

    def listen(
        self,
        on_result: Callable[[BroadcastResult], None],
        on_written: Callable[[Written], None] | None = None,
    ) -> None:
        """Where answers and later writes go from now on (replaces what was given before)."""
        self._on_result = on_result
        self._on_written = on_written

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
        """Stop the workers, close connections; unsent, unanswered and retry-waiting jobs end
        DROPPED (final)."""
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
        closed = Verdict(ErrorKind.DROPPED, "fan-out closed")
        timers, self._timers = self._timers, {}
        for timer, (lane, job) in timers.items():
            timer.cancel()
            self._report(lane, job, closed, None, True)
        for lane in self._lanes:
            lane.close(closed)  # first: what the transport fails on closing is then not ours
            await lane.transport.aclose()
        self._flush()

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
                    self._timers.pop(timer, None)
                if self._closed:  # closing, and this timer was not cancelled in time
                    self._report(
                        lane, job, Verdict(ErrorKind.DROPPED, "fan-out closed"), None, True
                    )
                else:
                    lane.offer(job)

            timer = self._loop().call_later(delay, fire)
            self._timers[timer] = (lane, job)

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
            written=job.writes > 0,
            context=job.context,
        )
        if self._submitting:  # no callback from inside submit(): the next loop turn
            if not self._deferred:
                self._loop().call_soon(self._flush)
            self._deferred.append(result)
            return
        try:
            self._on_result(result)
        except Exception:
            log.exception("on_result callback failed")

    def _flush(self) -> None:
        deferred, self._deferred = self._deferred, []
        for result in deferred:
            try:
                self._on_result(result)
            except Exception:
                log.exception("on_result callback failed")

    def _written(self, lane: Lane, job: Job, written_ns: int) -> None:
        if self._on_written is None:
            return
        written = Written(
            lane.endpoint.name, job.tx_hash, written_ns, job.attempt, job.writes == 1, job.context
        )
        try:
            self._on_written(written)
        except Exception:
            log.exception("on_written callback failed")
