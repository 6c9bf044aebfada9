"""One endpoint's lane of the fan-out: its queue, its writes, its batches and its replies.

Internal to :mod:`broadcaster.rpc.fanout` (which documents the behaviour and re-exports
:class:`LaneStats`). A lane writes a job straight to the socket when it is idle (nothing
queued, a connection ready); otherwise the job waits in the lane's bounded FIFO queue and the
lane's worker writes it when the endpoint is ready, together with whatever else is queued by
then (up to ``max_batch`` jobs) as one JSON-RPC 2.0 batch: a backlog (load, a reorg dropping k
transactions) costs one write, one HTTP response and one parse per batch instead of per job,
while a lone job still goes out as the plain request it always was.

An endpoint that answers a batch with anything but an array (``-32600``, a 4xx...) does not
take batches (:class:`~broadcaster.rpc.batch.BatchRefused`): the lane sends single requests
from then on, and the refused jobs go back to the head of its queue, not counted as failures.

A lane whose connection attempt failed is *down* (``Lane.down`` holds why): every job it had
queued fails that attempt (and is retried or given up by the fan-out's rules), a new job from
``submit`` is refused at once (a final ``DROPPED``), a retry fails its attempt at once, and only
the worker tries to connect again, after delays from the fan-out's ``reconnect`` backoff, so a
dead endpoint costs one connection attempt per delay however many jobs arrive. The first
successful connection brings it back up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broadcaster.rpc.batch import BatchRefused, classify_batch_reply, failure_verdict
from broadcaster.rpc.error_table import ErrorKind, Verdict, classify_reply, classify_response
from broadcaster.rpc.transport.base import Reply, Transport, encode_send_batch, encode_send_raw

if TYPE_CHECKING:
    from broadcaster.rpc.fanout import Endpoint, FanOut, Submitted

__all__ = ["InFlight", "Job", "Lane", "LaneStats"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LaneStats:
    """Per-endpoint counters; the ``*_writes`` count jobs, a batch of k jobs counts k."""

    fast_writes: int = 0  # jobs written when offered (inside submit(), or a retry's timer)
    queued_writes: int = 0  # jobs written by the worker
    dropped: int = 0  # jobs refused: queue full, or the endpoint down
    retries: int = 0
    timeouts: int = 0  # jobs whose request got no reply in time
    batches: int = 0  # batch requests written (2..max_batch jobs each)
    batched_jobs: int = 0  # jobs that went out inside a batch
    batch_refusals: int = 0  # batches the endpoint answered with a non-array (see module doc)
    connect_failures: int = 0  # connection attempts by the worker that failed (lane down)


@dataclass(slots=True)
class Job:
    raw_hex: bytes
    tx_hash: bytes
    context: object
    attempt: int = 0  # attempts so far, written or not
    writes: int = 0  # attempts that reached the socket
    delays: Iterator[float] | None = None
    refused: int = 0  # writes inside a refused batch: not failures, not held against retries
    urgent: bool = False  # a reorg reaction's: queued ahead of every ordinary job (enqueue)


@dataclass(slots=True)
class InFlight:
    """One written request: a single job (``ids`` None) or a batch of jobs (``ids[i]``)."""

    rid: int
    jobs: list[Job]
    ids: list[int] | None
    written_ns: int
    timer: asyncio.TimerHandle | None


@dataclass(eq=False)
class Lane:
    fanout: FanOut
    endpoint: Endpoint
    queue_size: int
    max_batch: int
    transport: Transport = field(init=False)
    queue: deque[Job] = field(default_factory=deque)
    batching: bool = True  # False once the endpoint refused a batch
    in_flight: dict[int, InFlight] = field(default_factory=dict)
    stats: LaneStats = field(default_factory=LaneStats)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    down: Verdict | None = None  # why the last connection attempt failed; None: up
    # Written inside the current submit() call; armed once every lane has written.
    fresh: list[InFlight] = field(default_factory=list)

    # -- new jobs, from submit() / submit_many(): they count into ``done``, call back nothing --

    def write_new(self, job: Job) -> InFlight | None:
        """Write ``job`` now (the lane is idle): the write, or None if it failed (then a retry
        or a final failure follows, reported later)."""
        self.stats.fast_writes += 1
        entry = self.send_one(job)
        if entry is not None:
            self.fresh.append(entry)
        return entry

    def take_new_many(self, jobs: list[Job], done: Submitted) -> None:
        """Write ``jobs`` (in order) in as few requests as the lane takes now; hold the rest."""
        step = self.max_batch if self.batching else 1
        start = 0
        written = 0
        ahead = all(job.urgent for job in jobs)  # a reaction's: written past the queue
        while start < len(jobs) and (ahead or not self.queue) and self.transport.ready():
            chunk = jobs[start : start + step]
            start += len(chunk)
            self.stats.fast_writes += len(chunk)
            entry = self.send(chunk)
            if entry is None:
                done.queued += len(chunk)
                break
            written = start
            done.written += len(chunk)
            done.last_ns = entry.written_ns
            self.fresh.append(entry)
        for job in jobs[start:]:
            self.hold(job, done)
        if written > done.written_items:
            done.written_items = written

    def hold(self, job: Job, done: Submitted) -> None:
        """A new job the lane cannot write now: queue it, or refuse it (down, queue full)."""
        if self.down is not None:
            self.refuse(job, f"endpoint down: {self.down.message}")
            done.refused += 1
        elif self.full(job):
            self.refuse(job, "queue full")
            done.refused += 1
        else:
            self.enqueue(job)
            done.queued += 1

    def full(self, job: Job) -> bool:
        """No room for ``job``: ``queue_size`` jobs are queued; for an urgent job (a reorg
        reaction's) as many again, so a queue an intent backlog filled still takes the
        reaction's replacement (at its head) instead of refusing it at every busy endpoint."""
        limit = self.queue_size
        return len(self.queue) >= (2 * limit if job.urgent else limit)

    def enqueue(self, job: Job) -> None:
        """Queue ``job``: an ordinary one at the tail; an urgent one (a reorg reaction's) after
        the urgent jobs already queued and ahead of every ordinary one, so a reaction never
        waits behind a backlog of new intents. Urgent jobs keep their order among themselves
        (a reaction's replacements go out in (sender, nonce) order); what they pass are later
        intents, whose nonces are above the reorged ones (a node holds such a transaction until
        the nonce below it arrives, it does not refuse it)."""
        queue = self.queue
        if job.urgent and queue and not queue[-1].urgent:
            index = 0
            for queued in queue:
                if not queued.urgent:
                    break
                index += 1
            queue.insert(index, job)
        else:
            queue.append(job)
        self.wake.set()

    def refuse(self, job: Job, why: str) -> None:
        self.stats.dropped += 1
        self.fanout._report(self, job, Verdict(ErrorKind.DROPPED, why), None, True)

    def arm_fresh(self) -> None:
        """After a submit call's writes: arm their timeouts (and, legacy, report them)."""
        fanout = self.fanout
        loop = fanout._loop()
        timeout = fanout._timeout
        in_flight = self.in_flight
        for entry in self.fresh:
            if entry.rid in in_flight:  # else answered during the write already
                entry.timer = loop.call_later(timeout, self.expire, entry.rid)
        self.fresh.clear()

    # -- retries ---------------------------------------------------------------------------------

    def offer(self, job: Job) -> None:
        """A retry: written now if the lane is idle, else queued; a down lane fails it at once."""
        if (job.urgent or not self.queue) and self.transport.ready():
            self.stats.fast_writes += 1
            entry = self.send_one(job)
            if entry is not None:
                self.arm(entry)
        elif self.down is not None:
            job.attempt += 1
            self.fanout._settle(self, job, self.down, None)
        elif self.full(job):
            self.refuse(job, "queue full")
        else:
            self.enqueue(job)

    # -- writing ---------------------------------------------------------------------------------

    def send(self, jobs: list[Job]) -> InFlight | None:
        return self.send_one(jobs[0]) if len(jobs) == 1 else self.send_batch(jobs)

    def send_one(self, job: Job) -> InFlight | None:
        """The socket write alone (:meth:`arm` or :meth:`arm_fresh` arm its timeout); a write
        that fails settles the job and returns None."""
        fanout = self.fanout
        job.attempt += 1
        job.writes += 1
        rid = next(fanout._ids)
        # Registered before the write: a transport may deliver the reply synchronously.
        entry = self.in_flight[rid] = InFlight(rid, [job], None, fanout._clock_ns(), None)
        try:
            self.transport.send(rid, encode_send_raw(rid, job.raw_hex))
        except (OSError, RuntimeError) as exc:
            job.writes -= 1
            self.in_flight.pop(rid, None)
            fanout._settle(self, job, failure_verdict(exc), None)
            return None
        entry.written_ns = fanout._clock_ns()
        return entry

    def send_batch(self, jobs: list[Job]) -> InFlight | None:
        """Like :meth:`send_one`, for a JSON-RPC batch: one id per job, one for the request."""
        fanout = self.fanout
        ids = []
        for job in jobs:
            job.attempt += 1
            job.writes += 1
            ids.append(next(fanout._ids))
        rid = next(fanout._ids)
        body = encode_send_batch(ids, [job.raw_hex for job in jobs])
        entry = self.in_flight[rid] = InFlight(rid, jobs, ids, fanout._clock_ns(), None)
        try:
            self.transport.send(rid, body, ids)
        except (OSError, RuntimeError) as exc:
            self.in_flight.pop(rid, None)
            verdict = failure_verdict(exc)
            for job in jobs:
                job.writes -= 1
                fanout._settle(self, job, verdict, None)
            return None
        entry.written_ns = fanout._clock_ns()
        self.stats.batches += 1
        self.stats.batched_jobs += len(jobs)
        return entry

    def arm(self, entry: InFlight) -> None:
        """After a write outside submit(): arm its timeout and report it through on_written."""
        fanout = self.fanout
        if entry.rid in self.in_flight:
            entry.timer = fanout._loop().call_later(fanout._timeout, self.expire, entry.rid)
        if fanout._on_written is not None:
            for job in entry.jobs:
                fanout._written(self, job, entry.written_ns)

    # -- replies ---------------------------------------------------------------------------------

    def on_reply(self, rid: int, reply: Reply) -> None:
        entry = self.in_flight.pop(rid, None)
        if entry is None:
            return  # late reply to a request that already timed out
        if entry.timer is not None:
            entry.timer.cancel()
        if entry.ids is not None:
            self.on_batch_reply(entry, reply)
            return
        job = entry.jobs[0]
        expected = job.tx_hash
        if reply.failure is not None:
            verdict = failure_verdict(reply.failure)
        elif reply.payload is not None:
            verdict = classify_response(reply.payload, expected_hash=expected)
        else:
            verdict = classify_reply(reply.body, http_status=reply.status, expected_hash=expected)
        self.fanout._settle(self, job, verdict, entry.written_ns)

    def on_batch_reply(self, entry: InFlight, reply: Reply) -> None:
        assert entry.ids is not None
        hashes = [job.tx_hash for job in entry.jobs]
        verdicts = classify_batch_reply(reply, entry.ids, hashes)
        if isinstance(verdicts, BatchRefused):
            self.refused(entry.jobs, verdicts.reason)
            return
        for job, verdict in zip(entry.jobs, verdicts, strict=True):
            self.fanout._settle(self, job, verdict, entry.written_ns)

    def refused(self, jobs: list[Job], reason: str) -> None:
        """The endpoint takes no batches: send singles from now on, these jobs first."""
        self.stats.batch_refusals += 1
        if self.batching:
            self.batching = False
            log.warning(
                "%s refused a JSON-RPC batch (%s): sending single requests to it from now on",
                self.endpoint.name,
                reason,
            )
        for job in jobs:
            job.refused += 1
        # Back to the head, in their order: they were ahead of everything still queued.
        self.queue.extendleft(reversed(jobs))
        self.wake.set()

    def expire(self, rid: int) -> None:
        entry = self.in_flight.pop(rid, None)
        if entry is None:
            return
        self.stats.timeouts += len(entry.jobs)
        self.transport.forget(rid)
        verdict = Verdict(ErrorKind.TIMEOUT, f"no reply within {self.fanout._timeout:g} s")
        for job in entry.jobs:
            self.fanout._settle(self, job, verdict, entry.written_ns)

    # -- the worker ------------------------------------------------------------------------------

    def take(self) -> list[Job]:
        """The next request's jobs: the queue's head, up to ``max_batch`` when batching."""
        queue = self.queue
        count = min(len(queue), self.max_batch if self.batching else 1)
        return [queue.popleft() for _ in range(count)]

    async def run(self) -> None:
        """The lane's worker: drain the queue in order, waiting for the endpoint as needed;
        while the lane is down, reconnect after the fan-out's ``reconnect`` delays.

        Jobs stay in the queue while the worker waits (so ``idle()`` is false and newcomers
        queue behind them); whatever is queued once the endpoint is ready goes out together.
        """
        delays: Iterator[float] | None = None
        # No connection after the transport's start(): try at once, so that an endpoint down
        # from the beginning is known down before the first transaction (not only after it).
        connect = not self.transport.ready()
        while True:
            if self.down is not None:
                if delays is None:
                    delays = self.fanout._reconnect()
                await asyncio.sleep(next(delays))
            elif not self.queue and not connect:
                self.wake.clear()
                await self.wake.wait()
                continue
            connect = False
            try:
                while not self.transport.ready():
                    await self.transport.wait_ready()
            except (OSError, TimeoutError) as exc:
                self.went_down(failure_verdict(exc))
                continue
            if self.down is not None:
                log.info("%s: connected again", self.endpoint.name)
                self.down = None
                delays = None
            jobs = self.take()
            if jobs:
                self.stats.queued_writes += len(jobs)
                entry = self.send(jobs)
                if entry is not None:
                    self.arm(entry)

    def went_down(self, verdict: Verdict) -> None:
        """A connection attempt failed: every queued job fails this attempt (see module doc)."""
        self.stats.connect_failures += 1
        if self.down is None:
            log.warning(
                "%s: cannot connect (%s); it takes no new transaction until it is back",
                self.endpoint.name,
                verdict.message,
            )
        self.down = verdict
        queued = list(self.queue)
        self.queue.clear()
        for job in queued:
            job.attempt += 1
            self.fanout._settle(self, job, verdict, None)

    def close(self, verdict: Verdict) -> None:
        """Settle everything unanswered or unsent with ``verdict`` (final); the fan-out closed."""
        for rid in list(self.in_flight):
            entry = self.in_flight.pop(rid)
            if entry.timer is not None:
                entry.timer.cancel()
            for job in entry.jobs:
                self.fanout._report(self, job, verdict, entry.written_ns, True)
        while self.queue:
            self.fanout._report(self, self.queue.popleft(), verdict, None, True)
