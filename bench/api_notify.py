"""What one intent status event costs the service with many followers (issue 13, load limits).

    python -m bench.api_notify [--connections 100] [--subscriptions 64] [--events 300]

The observers call ``Subscriptions.notify`` synchronously on every transition, reorg reactions
included, so its cost lands on the reaction path. Measured side by side in one run:

- ``per-subscription``: the algorithm before issue 13 (kept here as the baseline): every
  subscription of every connection visited, one ``orjson.dumps`` of the whole message each;
- ``once-per-event``: :class:`broadcaster.api.subscriptions.Subscriptions`: the body serialized
  once, one queue entry per connection (the prefixes, built at subscribe time, and the body),
  ids indexed; ``writers`` is what the connections' writer tasks then spend, off the reaction
  path, joining each subscription's message (``expand``).

Two shapes: every subscription follows all intents (each of the N x M subscriptions is owed a
message: the floor is the queue puts), and each follows one other intent (nobody is owed one).
Prints the median and p99 microseconds per event.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import orjson

from broadcaster.api.access import FULL_ACCESS
from broadcaster.api.intents import intent_json
from broadcaster.api.subscriptions import Subscriptions, expand
from nonce import Attempt, AttemptReason, Intent, TxRecord
from nonce.book import NonceBook

SENDER = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"


class _Follower:
    def __init__(self) -> None:
        self.access = FULL_ACCESS
        self.subscriptions: dict[str, frozenset[str] | None] = {}
        self.outbox: asyncio.Queue[bytes] = asyncio.Queue(1 << 20)
        self.dropped = 0


def per_subscription_notify(followers: list[_Follower], record: TxRecord, event: str) -> None:
    """The notify loop as it was before issue 13 (one full serialization per subscription)."""
    intent_id = record.intent.id
    body: dict[str, Any] | None = None
    for follower in followers:
        for sub_id, ids in follower.subscriptions.items():
            if ids is not None and intent_id not in ids:
                continue
            if body is None:
                body = intent_json(record)
                body["event"] = event
            message = orjson.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "broadcaster_subscription",
                    "params": {"subscription": sub_id, "result": body},
                }
            )
            try:
                follower.outbox.put_nowait(message)
            except asyncio.QueueFull:
                follower.dropped += 1


def _record() -> TxRecord:
    book = NonceBook()
    book.resync(SENDER, chain_latest=0, chain_pending=0, now=0.0)
    intent = Intent(
        id="0" * 32, sender=SENDER, to=SENDER, value=1, data=b"", gas=21_000,
        max_fee_per_gas=3 * 10**9, max_priority_fee_per_gas=10**9, chain_id=31337,
    )  # fmt: skip
    record = book.accept(intent, now=0.0)
    for n in range(2):
        book.add_attempt(
            record,
            Attempt(
                raw=b"\x02" + bytes([n]) * 100, hash=bytes([n + 1]) * 32, nonce=0,
                max_fee_per_gas=3 * 10**9 + n, max_priority_fee_per_gas=10**9, signed_at=0.0,
                reason=AttemptReason.INITIAL if n == 0 else AttemptReason.REORG,
            ),
        )  # fmt: skip
    return record


def _drain(followers: list[_Follower], entries: bool) -> int:
    delivered = 0
    for follower in followers:
        while not follower.outbox.empty():
            item = follower.outbox.get_nowait()
            delivered += len(expand(item)) if entries else 1
    return delivered


def measure(connections: int, subscriptions: int, events: int, follow_all: bool) -> dict[str, Any]:
    record = _record()
    old = [_Follower() for _ in range(connections)]
    new_followers = [_Follower() for _ in range(connections)]
    hub = Subscriptions()
    for index, (a, b) in enumerate(zip(old, new_followers, strict=True)):
        hub.add(b)
        for s in range(subscriptions):
            ids = None if follow_all else frozenset({f"{index + 1:016x}{s:016x}"})
            a.subscriptions[hex(index * subscriptions + s + 1)] = ids
            hub.subscribe(b, ids)
    results: dict[str, Any] = {}
    for name, run, followers, entries in (
        ("per-subscription", lambda: per_subscription_notify(old, record, "signed"), old, False),
        ("once-per-event", lambda: hub.notify(record, "signed"), new_followers, True),
    ):
        samples, writer_samples = [], []
        delivered = 0
        for _ in range(events):
            start = time.perf_counter_ns()
            run()
            samples.append((time.perf_counter_ns() - start) / 1000)
            start = time.perf_counter_ns()
            delivered = _drain(followers, entries)
            writer_samples.append((time.perf_counter_ns() - start) / 1000)
        samples.sort()
        results[name] = {
            "p50_us": statistics.median(samples),
            "p99_us": samples[int(0.99 * (len(samples) - 1))],
            "messages_per_event": delivered,
            "writers_p50_us": statistics.median(writer_samples) if entries else None,
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--subscriptions", type=int, default=64)
    parser.add_argument("--events", type=int, default=300)
    args = parser.parse_args()
    for follow_all in (True, False):
        shape = "all intents" if follow_all else "one other intent each"
        results = measure(args.connections, args.subscriptions, args.events, follow_all)
        print(f"{args.connections} connections x {args.subscriptions} subscriptions ({shape}):")
        for name, figures in results.items():
            print(
                f"  {name:17} p50 {figures['p50_us']:9.0f} us   p99 {figures['p99_us']:9.0f} us"
                f"   {figures['messages_per_event']} messages/event"
                + (
                    f"   (writers, later: p50 {figures['writers_p50_us']:.0f} us)"
                    if figures["writers_p50_us"] is not None
                    else ""
                )
            )


if __name__ == "__main__":
    main()
