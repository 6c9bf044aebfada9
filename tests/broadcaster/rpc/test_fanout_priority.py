"""A reorg reaction's writes go ahead of the intents queued at each endpoint (FakeTransport).

The fan-out reads ``context.urgent`` (``broadcaster.tx.executor.Send``: set for a reaction's
attempts). Without it, a replacement waited in each lane's FIFO behind the whole intent backlog
(108-798 ms under the 2,500/s stream, docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from broadcaster.rpc.transport.base import Reply
from broadcaster.rpc.transport.fake import FakeNetwork
from tests.broadcaster.rpc.fanout_helpers import Collector, fake_fanout


@dataclass(frozen=True)
class Ctx:
    n: int
    urgent: bool = False


def item(n: int, *, urgent: bool = False) -> tuple[bytes, bytes, object]:
    return bytes([n]) * 32, bytes([n]) * 32, Ctx(n, urgent)


async def test_an_urgent_job_is_queued_ahead_of_the_backlog_of_a_busy_endpoint() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a", "b"], seen, max_batch=100)
    async with fanout:
        fakes["a"].set_ready(False)
        for n in range(10):  # the intent backlog: written at b, queued at a
            fanout.submit(*item(n))
        done = fanout.submit_many([item(100, urgent=True), item(101, urgent=True)])
        assert (done.written, done.queued) == (2, 2)
        fanout.submit(*item(102, urgent=True))  # a second reaction: behind the first
        fanout.submit(*item(10))  # a later intent: behind every urgent job
        fakes["a"].set_ready(True)
        await seen.until(lambda: len([w for w in seen.writes if w.endpoint == "a"]) == 14)
    [request] = fakes["a"].requests  # what queued up: one batch, the reactions first
    assert list(request.raws) == [bytes([n]) * 32 for n in (100, 101, 102, *range(11))]
    # b was idle: everything in submission order, each written on the spot.
    assert [w.context for w in seen.writes if w.endpoint == "b"] == []
    assert [r.raws[0] for r in fakes["b"].requests][:10] == [bytes([n]) * 32 for n in range(10)]


async def test_an_urgent_job_passes_the_queue_of_a_ready_endpoint_in_the_same_call() -> None:
    """The lane's connection is ready but its worker has not run yet: the urgent job is written
    inside ``submit`` (before the queued ones), an ordinary one would have queued."""
    seen = Collector()
    fanout, fakes = fake_fanout(["a"], seen, max_batch=100)
    async with fanout:
        fakes["a"].set_ready(False)
        for n in range(5):
            fanout.submit(*item(n))
        fakes["a"].set_ready(True)  # the worker runs on a later loop turn
        ordinary = fanout.submit(*item(50))
        urgent = fanout.submit(*item(99, urgent=True))
        assert (ordinary.written, ordinary.queued) == (0, 1)
        assert (urgent.written, urgent.queued) == (1, 0)
        assert fakes["a"].requests[0].raws == (bytes([99]) * 32,)
        await seen.until(lambda: len(seen.writes) == 6)
    assert [raw[:1] for raw in fakes["a"].requests[1].raws] == [
        bytes([n]) for n in (0, 1, 2, 3, 4, 50)
    ]


async def test_an_urgent_batch_passes_the_queue_and_a_full_endpoint_queues_it_first() -> None:
    seen = Collector()
    network = FakeNetwork(max_in_flight=1)  # one request at a time: the rest queues
    fanout, fakes = fake_fanout(["a"], seen, network, max_batch=100)
    async with fanout:
        fanout.submit(*item(0))  # in flight
        for n in range(1, 6):
            fanout.submit(*item(n))  # queued behind it
        done = fanout.submit_many([item(200, urgent=True), item(201, urgent=True)])
        assert (done.written, done.queued) == (0, 2)  # not ready: queued, at the head
        fake = fakes["a"]
        fake.max_in_flight = None
        first = fake.requests[0]
        fake.reply(first.rid, _accepted(first.rid, first.raws[0]))
        await seen.until(lambda: len(seen.writes) == 7)
    assert [raw[:1] for raw in fakes["a"].requests[1].raws] == [
        bytes([n]) for n in (200, 201, 1, 2, 3, 4, 5)
    ]


def _accepted(rid: int, raw: bytes) -> Reply:
    body = {"jsonrpc": "2.0", "id": rid, "result": "0x" + raw.hex()}
    return Reply(status=200, body=orjson.dumps(body))


async def test_an_urgent_job_is_not_refused_by_a_queue_the_intent_backlog_filled() -> None:
    """Adversarial (review): the 2,500/s intent stream fills every endpoint's bounded queue
    while the endpoints are busy; the reaction's replacement must still be queued (first), not
    refused "queue full" at every endpoint (then it reaches no node at all)."""
    seen = Collector()
    fanout, fakes = fake_fanout(["a", "b"], seen, max_batch=100, queue_size=4)
    async with fanout:
        for fake in fakes.values():
            fake.set_ready(False)
        for n in range(4):
            fanout.submit(*item(n))  # the backlog fills both queues
        refused = fanout.submit(*item(4))
        assert (refused.queued, refused.refused) == (0, 2)  # an ordinary job: refused, as before
        done = fanout.submit_many([item(100, urgent=True), item(101, urgent=True)])
        assert (done.queued, done.refused) == (4, 0), done
        for fake in fakes.values():
            fake.set_ready(True)
        await seen.until(lambda: len(seen.writes) == 12)
    for fake in fakes.values():
        [request] = fake.requests
        assert list(request.raws) == [bytes([n]) * 32 for n in (100, 101, 0, 1, 2, 3)]
