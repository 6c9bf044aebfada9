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
    from broadcaster.rpc.fanout import Endpoint, FanOut

__all__ = ["InFlight", "Job", "Lane", "LaneStats"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LaneStats:
    """Per-endpoint counters; the ``*_writes`` count jobs, a batch of k jobs counts k."""

    fast_writes: int = 0  # jobs written inside submit() / submit_many()
    queued_writes: int = 0  # jobs written by the worker
    dropped: int = 0
    retries: int = 0
    timeouts: int = 0  # jobs whose request got no reply in time
    batches: int = 0  # batch requests written (2..max_batch jobs each)
    batched_jobs: int = 0  # jobs that went out inside a batch
    batch_refusals: int = 0  # batches the endpoint answered with a non-array (see module doc)


@dataclass(slots=True)
class Job:
    raw_hex: bytes
    tx_hash: bytes
    context: object
    attempt: int = 0
    delays: Iterator[float] | None = None
    refused: int = 0  # writes inside a refused batch: not failures, not held against retries


@dataclass(slots=True)
class InFlight:
    """One written request: a single job (``ids`` None) or a batch of jobs (``ids[i]``)."""

    jobs: list[Job]
    ids: list[int] | None
    written_ns: int
    timer: asyncio.TimerHandle | None


Sent = tuple["Lane", int, InFlight]


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

    def idle(self) -> bool:
        """Nothing queued, and a connection ready: a job can be written right now."""
        return not self.queue and self.transport.ready()

    def enqueue(self, job: Job) -> None:
        if len(self.queue) >= self.queue_size:
            self.stats.dropped += 1
            self.fanout._report(self, job, Verdict(ErrorKind.DROPPED, "queue full"), None, True)
            return
        self.queue.append(job)
        self.wake.set()

    def offer(self, job: Job, written: list[Sent] | None = None) -> None:
        """Write ``job`` now if the lane is idle, else queue it. A write is reported at once,
        or appended to ``written`` for the caller to report after every lane has written."""
        if self.idle():
            self.stats.fast_writes += 1
            sent = self.send_one(job)
            if sent is not None:
                if written is None:
                    self.after_write(sent[1], sent[2])
                else:
                    written.append(sent)
        else:
            self.enqueue(job)

    def offer_many(self, jobs: list[Job], written: list[Sent]) -> None:
        """Write ``jobs`` (in order) in as few requests as the lane takes now; queue the rest.

        The writes are appended to ``written``: the caller reports them once every lane has
        written (see ``FanOut.submit``).
        """
        step = self.max_batch if self.batching else 1
        start = 0
        while start < len(jobs) and self.idle():
            chunk = jobs[start : start + step]
            start += len(chunk)
            self.stats.fast_writes += len(chunk)
            sent = self.send(chunk)
            if sent is not None:
                written.append(sent)
        for job in jobs[start:]:
            self.enqueue(job)

    def send(self, jobs: list[Job]) -> Sent | None:
        return self.send_one(jobs[0]) if len(jobs) == 1 else self.send_batch(jobs)

    def send_one(self, job: Job) -> Sent | None:
        """The socket write alone; :meth:`after_write` arms the timeout and reports it."""
        fanout = self.fanout
        job.attempt += 1
        rid = next(fanout._ids)
        # Registered before the write: a transport may deliver the reply synchronously.
        entry = self.in_flight[rid] = InFlight([job], None, fanout._clock_ns(), None)
        try:
            self.transport.send(rid, encode_send_raw(rid, job.raw_hex))
        except (OSError, RuntimeError) as exc:
            del self.in_flight[rid]
            fanout._settle(self, job, failure_verdict(exc), None)
            return None
        entry.written_ns = fanout._clock_ns()
        return self, rid, entry

    def send_batch(self, jobs: list[Job]) -> Sent | None:
        """Like :meth:`send_one`, for a JSON-RPC batch: one id per job, one for the request."""
        fanout = self.fanout
        ids = []
        for job in jobs:
            job.attempt += 1
            ids.append(next(fanout._ids))
        rid = next(fanout._ids)
        body = encode_send_batch(ids, [job.raw_hex for job in jobs])
        entry = self.in_flight[rid] = InFlight(jobs, ids, fanout._clock_ns(), None)
        try:
            self.transport.send(rid, body, ids)
        except (OSError, RuntimeError) as exc:
            del self.in_flight[rid]
            verdict = failure_verdict(exc)
            for job in jobs:
                fanout._settle(self, job, verdict, None)
            return None
        entry.written_ns = fanout._clock_ns()
        self.stats.batches += 1
        self.stats.batched_jobs += len(jobs)
        return self, rid, entry

    def after_write(self, rid: int, entry: InFlight) -> None:
        fanout = self.fanout
        if rid in self.in_flight:
            entry.timer = fanout._loop().call_later(fanout._timeout, self.expire, rid)
        if fanout._on_written is not None:
            for job in entry.jobs:
                fanout._written(self, job, entry.written_ns)

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

    def take(self) -> list[Job]:
        """The next request's jobs: the queue's head, up to ``max_batch`` when batching."""
        queue = self.queue
        count = min(len(queue), self.max_batch if self.batching else 1)
        return [queue.popleft() for _ in range(count)]

    async def run(self) -> None:
        """The lane's worker: drain the queue in order, waiting for the endpoint as needed.

        Jobs stay in the queue while the worker waits (so ``idle()`` is false and newcomers
        queue behind them); whatever is queued once the endpoint is ready goes out together.
        """
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            try:
                while not self.transport.ready():
                    await self.transport.wait_ready()
            except (OSError, TimeoutError) as exc:
                verdict = failure_verdict(exc)
                for job in self.take():  # the request that could not be written
                    job.attempt += 1
                    self.fanout._settle(self, job, verdict, None)
                continue
            jobs = self.take()
            if jobs:
                self.stats.queued_writes += len(jobs)
                sent = self.send(jobs)
                if sent is not None:
                    _, rid, entry = sent
                    self.after_write(rid, entry)

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
