"""The fan-out's accounting guarantee under a random mix of faults (FakeTransport).

For every job (one transaction for one endpoint) the fan-out reports exactly one "first" event:
its write inside ``submit`` (counted in the returned ``Submitted.written``), its first later
write (``on_written`` with ``first=True``), or a final failure before any write (``on_result``
with ``final=True, written=False``); every job ends with exactly one final result; and nothing
is called back from inside ``submit`` / ``submit_many``. Seeded schedules of submissions,
busy/down/up endpoints and answers (accept, reject, 503, silence, late, disconnect) check it.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import Sequence

import pytest

from broadcaster.rpc.fanout import BroadcastResult, Endpoint, FanOut, Submitted, Written
from broadcaster.rpc.transport.fake import (
    DISCONNECT,
    NO_ANSWER,
    Answer,
    FakeNetwork,
    Late,
    RawReply,
    Reject,
    Request,
    Result,
)

NAMES = ("a", "b", "c")


def answers_for(rng: random.Random) -> FakeNetwork:
    def handler(request: Request) -> list[Answer]:
        out: list[Answer] = []
        for call in request.calls:
            accept = Result(call["params"][0])  # raw == hash in this test
            out.append(
                rng.choices(
                    [
                        accept,
                        Reject("nonce too low"),
                        RawReply(503, b"busy"),
                        NO_ANSWER,
                        Late(0.002, accept),
                        DISCONNECT,
                    ],
                    weights=[10, 1, 2, 1, 2, 1],
                )[0]
            )
        return out

    return FakeNetwork(handler=handler)


@pytest.mark.parametrize("seed", range(6))
async def test_every_job_has_exactly_one_first_event_and_one_final(seed: int) -> None:
    rng = random.Random(seed)
    network = answers_for(rng)
    results: list[BroadcastResult] = []
    writes: list[Written] = []
    violations: list[str] = []
    inside = False

    def on_result(result: BroadcastResult) -> None:
        if inside:
            violations.append(f"on_result inside submit: {result}")
        results.append(result)

    def on_written(written: Written) -> None:
        if inside:
            violations.append(f"on_written inside submit: {written}")
        writes.append(written)

    fanout = FanOut(
        [Endpoint(n, f"http://{n}") for n in NAMES],
        on_result=on_result,
        on_written=on_written,
        transport_factory=network,
        queue_size=4,
        max_batch=3,
        timeout=0.01,
        max_attempts=3,
        backoff=lambda: itertools.repeat(0.001),
        reconnect=lambda: itertools.repeat(0.002),
    )
    calls: list[tuple[Submitted, list[bytes], set[tuple[str, bytes]]]] = []
    serial = itertools.count()

    def new_hashes(k: int) -> list[bytes]:
        return [next(serial).to_bytes(4, "big") * 8 for _ in range(k)]

    def submit(hashes: Sequence[bytes]) -> None:
        nonlocal inside
        before = {n: len(network[n].requests) for n in NAMES}
        inside = True
        try:
            if len(hashes) == 1 and rng.random() < 0.5:
                done = fanout.submit(hashes[0], hashes[0], hashes[0])
            else:
                done = fanout.submit_many([(h, h, h) for h in hashes])
        finally:
            inside = False
        now = {(n, raw) for n in NAMES for r in network[n].requests[before[n] :] for raw in r.raws}
        calls.append((done, list(hashes), now))

    async with fanout:
        for _ in range(80):
            action = rng.random()
            fake = network[rng.choice(NAMES)]
            if action < 0.45:
                submit(new_hashes(rng.choice([1, 1, 2, 5])))
            elif action < 0.6:
                fake.set_ready(not fake.ready())
            elif action < 0.7:
                if fake.down:
                    fake.come_up()
                else:
                    fake.go_down(drop_in_flight=rng.random() < 0.5)
            else:
                await asyncio.sleep(rng.choice([0, 0.001, 0.004]))
        for name in NAMES:
            network[name].come_up()
            network[name].set_ready(True)
        # Odd seeds close at once: jobs in flight, queued and waiting for a retry end there.
        await asyncio.sleep(0.001 if seed % 2 else 0.05)
    await asyncio.sleep(0)

    assert violations == []
    first_writes = Counter((w.endpoint, w.tx_hash) for w in writes if w.first)
    unwritten_finals = Counter(
        (r.endpoint, r.tx_hash) for r in results if r.final and not r.written
    )
    finals = Counter((r.endpoint, r.tx_hash) for r in results if r.final)
    refusals = Counter((r.endpoint, r.tx_hash) for r in results if r.attempt == 0)
    jobs = 0
    for done, hashes, now in calls:
        mine = [(n, h) for h in hashes for n in NAMES]
        jobs += len(mine)
        assert done.written == len(now), (seed, done)
        assert done.queued + done.refused == len(mine) - len(now), (seed, done)
        assert done.refused == sum(refusals[job] for job in mine), (seed, done)
        if done.written:
            assert done.last_ns > 0
        # The items that reached an endpoint now are the leading ones.
        reached = [any((n, h) in now for n in NAMES) for h in hashes]
        assert reached == [i < done.written_items for i in range(len(hashes))], (seed, done)
        for job in mine:
            events = (job in now) + first_writes[job] + unwritten_finals[job]
            assert events == 1, (seed, job, job in now, first_writes[job], unwritten_finals[job])
            assert finals[job] == 1, (seed, job)
    assert sum(finals.values()) == jobs
    # The schedule did exercise every kind of job.
    assert sum(d.written for d, _, _ in calls) > 0
    assert sum(d.queued for d, _, _ in calls) > 0
    assert sum(d.refused for d, _, _ in calls) > 0
