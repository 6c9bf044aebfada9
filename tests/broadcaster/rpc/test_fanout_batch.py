"""JSON-RPC batching in the fan-out, without a network (FakeTransport).

The fake "node" here answers a transaction with its raw bytes as the hash, so the tests submit
``raw == tx_hash`` and a correct answer is recognisable.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.rpc.batch import BatchRefused, classify_batch_reply
from broadcaster.rpc.error_table import ErrorKind
from broadcaster.rpc.transport.base import Reply, encode_send_batch
from broadcaster.rpc.transport.fake import Answer, FakeNetwork, RawReply, Request, Result
from tests.broadcaster.rpc.fanout_helpers import Collector, fake_fanout

REFUSAL = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"batch not supported"}}'


def txs(count: int, start: int = 0) -> list[tuple[bytes, bytes, object]]:
    """``count`` items for submit_many: raw == hash (see the module docstring), context n."""
    return [(bytes([n]) * 32, bytes([n]) * 32, n) for n in range(start, start + count)]


def answer(call: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call["id"], "result": call["params"][0]}


def echo(request: Request) -> list[Answer]:
    """A healthy node: every transaction (single or in a batch) answered with its hash."""
    return [Result(call["params"][0]) for call in request.calls]


def no_delay() -> Iterator[float]:
    return itertools.repeat(0.0)


@given(st.lists(st.tuples(st.integers(0, 2**63), st.binary(max_size=200)), min_size=1))
def test_batch_bytes_equal_the_obvious_orjson_encoding(requests: list[tuple[int, bytes]]) -> None:
    expected = [
        {
            "jsonrpc": "2.0",
            "id": rid,
            "method": "eth_sendRawTransaction",
            "params": ["0x" + r.hex()],
        }
        for rid, r in requests
    ]
    body = encode_send_batch([rid for rid, _ in requests], [r.hex().encode() for _, r in requests])
    assert orjson.loads(body) == expected


async def test_submit_many_writes_one_batch_per_idle_endpoint_and_returns_the_count() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a", "b", "c"], seen)
    items = txs(4)
    async with fanout:
        done = fanout.submit_many(items)
        # Written before submit_many returned: one request per endpoint, all four in order.
        assert (done.written, done.queued, done.refused, done.written_items) == (12, 0, 0, 4)
        for name in "abc":
            [request] = fakes[name].requests
            assert list(request.raws) == [raw for raw, _, _ in items]
            assert [c["id"] for c in request.calls] == list(request.ids)
            assert len(set(request.ids)) == 4
            fakes[name].answer(request.rid, echo(request))
        await seen.until(lambda: len(seen.finals()) == 12)
    assert seen.writes == []  # returned, so not reported again
    for name in "abc":
        results = [r for r in seen.results if r.endpoint == name]
        assert [(r.tx_hash, r.kind, r.final) for r in results] == [
            (tx_hash, ErrorKind.ACCEPTED, True) for _, tx_hash, _ in items
        ]
        assert {r.written_ns for r in results} == {results[0].written_ns}  # the batch's write
    assert done.last_ns == max(r.written_ns or 0 for r in seen.results)
    stats = fanout.stats()["a"]
    assert (stats.fast_writes, stats.batches, stats.batched_jobs) == (4, 1, 4)


async def test_submit_many_to_a_busy_endpoint_queues_and_reports_each_first_write_later() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a", "b"], seen)
    items = txs(3)
    async with fanout:
        fakes["b"].set_ready(False)
        done = fanout.submit_many(items)
        assert (done.written, done.queued, done.refused, done.written_items) == (3, 3, 0, 3)
        fakes["b"].set_ready(True)
        await seen.until(lambda: len(seen.writes) == 3)
    assert [(w.endpoint, w.context, w.first, w.attempt) for w in seen.writes] == [
        ("b", n, True, 1) for n in range(3)
    ]
    assert len({w.written_ns for w in seen.writes}) == 1  # one batch


async def test_each_endpoint_writes_a_prefix_and_written_items_counts_the_longest() -> None:
    seen = Collector()
    # One request in flight at most: the first batch goes out now, the rest queues.
    network = FakeNetwork(max_in_flight=1)
    fanout, fakes = fake_fanout(["a", "b"], seen, network, max_batch=2)
    async with fanout:
        done = fanout.submit_many(txs(5))
        assert (done.written, done.queued, done.written_items) == (4, 6, 2)
        assert [fakes[n].requests[0].raws for n in "ab"] == [(bytes([0]) * 32, bytes([1]) * 32)] * 2
        fakes["b"].max_in_flight = None
        fakes["b"].handler = echo
        fakes["b"].answer(fakes["b"].requests[0].rid, echo(fakes["b"].requests[0]))
        await seen.until(lambda: len([w for w in seen.writes if w.endpoint == "b"]) == 3)
    assert [w.context for w in seen.writes if w.endpoint == "b"] == [2, 3, 4]


async def test_a_single_item_goes_out_as_the_same_bytes_as_submit() -> None:
    raw, tx_hash, context = txs(1)[0]
    one, one_fakes = fake_fanout(["a"], Collector())
    many, many_fakes = fake_fanout(["a"], Collector())
    async with one, many:
        alone = one.submit(raw, tx_hash, context)
        listed = many.submit_many([(raw, tx_hash, context)])
        assert (
            (alone.written, alone.written_items)
            == (listed.written, listed.written_items)
            == (
                1,
                1,
            )
        )
        [single], [many_single] = one_fakes["a"].requests, many_fakes["a"].requests
        assert (many_single.rid, many_single.body) == (single.rid, single.body)
        assert single.methods == ("eth_sendRawTransaction",)
        assert not single.batch
    assert many.stats()["a"].batches == 0


async def test_the_worker_sends_what_queued_up_as_one_batch_in_fifo_order() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a"], seen)
    items = txs(5)
    async with fanout:
        fakes["a"].set_ready(False)
        for raw, tx_hash, context in items:
            fanout.submit(raw, tx_hash, context)
        assert fakes["a"].requests == []
        fakes["a"].set_ready(True)
        await seen.until(lambda: len(seen.writes) == 5)
        [request] = fakes["a"].requests
        assert list(request.raws) == [raw for raw, _, _ in items]
        # Replies to a batch may come in any order: they are matched by id.
        reversed_reply = [answer(c) for c in reversed(request.calls)]
        fakes["a"].reply(request.rid, Reply(status=200, body=orjson.dumps(reversed_reply)))
    assert [(r.tx_hash, r.kind) for r in seen.results] == [
        (tx_hash, ErrorKind.ACCEPTED) for _, tx_hash, _ in items
    ]
    stats = fanout.stats()["a"]
    assert (stats.queued_writes, stats.batches, stats.batched_jobs) == (5, 1, 5)


async def test_each_element_of_a_batch_reply_is_classified_and_retried_on_its_own() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a"], seen, backoff=no_delay)
    items = txs(4)
    async with fanout:
        fanout.submit_many(items)
        [request] = fakes["a"].requests
        rid = request.rid
        ok, foreign, low, missing = request.calls
        fakes["a"].handler = echo  # for the retry
        reply = [
            {
                "jsonrpc": "2.0",
                "id": low["id"],
                "error": {"code": -32000, "message": "nonce too low"},
            },
            answer(ok),
            {"jsonrpc": "2.0", "id": foreign["id"], "result": "0x" + "22" * 32},
        ]  # nothing for `missing`
        fakes["a"].reply(rid, Reply(status=200, body=orjson.dumps(reply)))
        await seen.until(lambda: len(seen.finals()) == 4)
    by_hash = {r.tx_hash: r for r in seen.finals()}
    assert [(by_hash[h].kind, by_hash[h].attempt) for _, h, _ in items] == [
        (ErrorKind.ACCEPTED, 1),
        (ErrorKind.UNKNOWN, 1),  # someone else's hash is not trusted
        (ErrorKind.NONCE_TOO_LOW, 1),
        (ErrorKind.ACCEPTED, 2),  # no element for it: transient, retried alone
    ]
    first_missing = next(r for r in seen.results if r.tx_hash == items[3][1])
    assert (first_missing.kind, first_missing.final) == (ErrorKind.TRANSIENT, False)
    assert first_missing.message == f"batch reply has no element id {missing['id']}"
    assert fanout.stats()["a"].retries == 1


@pytest.mark.parametrize(
    "failure",
    [
        Reply(failure=ConnectionResetError("reset by peer")),
        Reply(status=503, body=b"<html>busy</html>"),
        Reply(status=200, body=b'[{"jsonrpc":"2.0","id'),  # truncated
    ],
    ids=["reset", "503", "truncated"],
)
async def test_a_failed_batch_fails_every_job_and_each_is_retried(failure: Reply) -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a"], seen, backoff=no_delay)
    items = txs(3)
    async with fanout:
        fanout.submit_many(items)
        [request] = fakes["a"].requests
        fakes["a"].handler = echo
        fakes["a"].reply(request.rid, failure)
        await seen.until(lambda: len(seen.finals()) == 3)
    for _, tx_hash, _ in items:
        mine = [r for r in seen.results if r.tx_hash == tx_hash]
        assert [(r.kind, r.attempt, r.final) for r in mine] == [
            (ErrorKind.TRANSIENT, 1, False),
            (ErrorKind.ACCEPTED, 2, True),
        ]
    assert fanout.stats()["a"].retries == 3


async def test_a_batch_timeout_reaches_every_job_and_each_is_retried() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a"], seen, backoff=no_delay, timeout=0.01)
    items = txs(3)
    async with fanout:
        fanout.submit_many(items)  # the fake never answers this one
        [request] = fakes["a"].requests
        rid = request.rid
        fakes["a"].handler = echo
        await seen.until(lambda: len(seen.finals()) == 3)
    for _, tx_hash, _ in items:
        mine = [r for r in seen.results if r.tx_hash == tx_hash]
        assert [(r.kind, r.attempt) for r in mine] == [
            (ErrorKind.TIMEOUT, 1),
            (ErrorKind.ACCEPTED, 2),
        ]
    assert fakes["a"].forgotten == [rid]  # one timer for the one request
    assert fanout.stats()["a"].timeouts == 3


async def test_an_endpoint_without_batches_gets_single_requests_and_still_accepts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def no_batches(request: Request) -> Answer | list[Answer]:
        return RawReply(200, REFUSAL) if request.batch else echo(request)

    seen = Collector()
    fanout, fakes = fake_fanout(["old", "new"], seen)
    fakes["old"].handler = no_batches
    fakes["new"].handler = echo
    items = txs(3)
    with caplog.at_level(logging.WARNING, logger="broadcaster"):
        async with fanout:
            fanout.submit_many(items)
            await seen.until(lambda: len(seen.finals("old")) == 3)
            fanout.submit_many(txs(2, start=3))
            await seen.until(lambda: len(seen.finals()) == 10)
    old = [r for r in seen.results if r.endpoint == "old"]
    # Re-sent one by one, in order; the refused batch was no failure (and no retry).
    assert [(r.tx_hash, r.kind, r.attempt) for r in old] == [
        (bytes([n]) * 32, ErrorKind.ACCEPTED, 2 if n < 3 else 1) for n in range(5)
    ]
    sent = [[c["params"][0] for c in r.calls] for r in fakes["old"].requests]
    hexes = ["0x" + bytes([n]).hex() * 32 for n in range(5)]
    assert sent == [hexes[:3], *[[h] for h in hexes]]
    stats = fanout.stats()
    assert (stats["old"].batch_refusals, stats["old"].batches, stats["old"].retries) == (1, 1, 0)
    assert stats["new"].batches == 2
    warnings = [r for r in caplog.records if "refused a JSON-RPC batch" in r.getMessage()]
    assert len(warnings) == 1
    assert "-32600 batch not supported" in warnings[0].getMessage()


async def test_max_batch_caps_every_request_on_both_paths() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a"], seen, max_batch=3)
    fakes["a"].handler = echo
    async with fanout:
        fanout.submit_many(txs(7))  # fast path: the fake is always ready
        fakes["a"].set_ready(False)
        for raw, tx_hash, context in txs(7, start=7):
            fanout.submit(raw, tx_hash, context)
        fakes["a"].set_ready(True)
        await seen.until(lambda: len(seen.finals()) == 14)
    sizes = [len(r.calls) for r in fakes["a"].requests]
    assert sizes == [3, 3, 1, 3, 3, 1]
    assert not fakes["a"].requests[2].batch  # a lone job is a plain request
    contexts = [r.context for r in seen.results]
    assert contexts == list(range(14))  # FIFO across requests
    assert {r.kind for r in seen.results} == {ErrorKind.ACCEPTED}


async def test_closing_settles_every_job_of_an_unanswered_batch_and_of_the_queue() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a"], seen, max_batch=2)
    async with fanout:
        fanout.submit_many(txs(2))
        fakes["a"].set_ready(False)
        fanout.submit_many(txs(2, start=2))
    assert [(r.context, r.kind, r.final) for r in seen.results] == [
        (n, ErrorKind.DROPPED, True) for n in range(4)
    ]
    assert [r.written_ns is not None for r in seen.results] == [True, True, False, False]


def test_the_batch_reply_table() -> None:
    ids, hashes = [7, 8], [b"\x01" * 32, b"\x02" * 32]
    results = [
        {"jsonrpc": "2.0", "id": i, "result": "0x" + h.hex()}
        for i, h in zip(ids, hashes, strict=True)
    ]

    def kinds(reply: Reply) -> list[ErrorKind] | BatchRefused:
        verdicts = classify_batch_reply(reply, ids, hashes)
        return verdicts if isinstance(verdicts, BatchRefused) else [v.kind for v in verdicts]

    accepted = [ErrorKind.ACCEPTED] * 2
    assert kinds(Reply(status=200, body=orjson.dumps(results))) == accepted
    assert kinds(Reply(payload=results[::-1])) == accepted  # websocket: already parsed
    assert kinds(Reply(payload=results[:1])) == [ErrorKind.ACCEPTED, ErrorKind.TRANSIENT]
    assert kinds(Reply(status=429, body=b"slow down")) == [ErrorKind.RATE_LIMITED] * 2
    throttled = {"jsonrpc": "2.0", "id": None, "error": {"code": -32005, "message": "x"}}
    assert kinds(Reply(payload=throttled)) == [ErrorKind.RATE_LIMITED] * 2
    assert kinds(Reply(failure=TimeoutError())) == [ErrorKind.TIMEOUT] * 2
    assert kinds(Reply(status=200, body=REFUSAL)) == BatchRefused("-32600 batch not supported")
    assert kinds(Reply(status=400, body=b"no batches here")) == BatchRefused("HTTP 400 to a batch")
    assert isinstance(kinds(Reply(status=200, body=orjson.dumps(results[0]))), BatchRefused)
