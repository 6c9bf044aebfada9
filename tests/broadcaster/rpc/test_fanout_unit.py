"""The fan-out's lanes, request bytes and HTTP parser, without a network (FakeTransport)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import orjson
import pytest
from eth_utils import keccak
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.rpc.error_table import ErrorKind
from broadcaster.rpc.fanout import BroadcastResult, Endpoint, FanOut, Submitted
from broadcaster.rpc.transport.base import Reply, encode_send_raw, split_url
from broadcaster.rpc.transport.fake import ACCEPT, FakeNetwork, Result
from broadcaster.rpc.transport.http import ProtocolError, ResponseParser
from tests.broadcaster.rpc.fanout_helpers import Collector, eventually, fake_fanout

HASH = b"\x11" * 32


def result_for(rid: int, tx_hash: bytes = HASH) -> Reply:
    return Reply(
        status=200,
        body=b'{"jsonrpc":"2.0","id":%d,"result":"0x%s"}' % (rid, tx_hash.hex().encode()),
    )


@given(st.integers(0, 2**63), st.binary(max_size=300))
def test_request_bytes_equal_the_obvious_orjson_encoding(rid: int, raw: bytes) -> None:
    expected = {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "eth_sendRawTransaction",
        "params": ["0x" + raw.hex()],
    }
    assert orjson.loads(encode_send_raw(rid, raw.hex().encode())) == expected


async def test_an_idle_endpoint_is_written_before_submit_returns_and_not_reported_again() -> None:
    seen = Collector()
    ticks = itertools.count(1000)
    fanout, fakes = fake_fanout(["a", "b", "c"], seen, clock_ns=lambda: next(ticks))
    async with fanout:
        done = fanout.submit(b"\x01\x02", HASH, context=7)
        assert [len(fakes[n].requests) for n in "abc"] == [1, 1, 1]
        # The clock is read before and after each write: c's "after" is the last stamp.
        assert done == Submitted(written=3, last_ns=1005, queued=0, refused=0, written_items=1)
        await asyncio.sleep(0)
        assert seen.writes == []  # returned, so never reported through on_written
        for name in "abc":
            rid = fakes[name].requests[0].rid
            fakes[name].reply(rid, result_for(rid))
    assert [(r.endpoint, r.kind, r.final, r.written, r.context) for r in seen.results] == [
        ("a", ErrorKind.ACCEPTED, True, True, 7),
        ("b", ErrorKind.ACCEPTED, True, True, 7),
        ("c", ErrorKind.ACCEPTED, True, True, 7),
    ]
    assert {n: s.fast_writes for n, s in fanout.stats().items()} == {"a": 1, "b": 1, "c": 1}


async def test_a_listener_added_after_construction_gets_the_answers() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a"], Collector())
    fanout.listen(seen.on_result, seen.on_written)
    async with fanout:
        done = fanout.submit(b"\x01", HASH, context=7)
        assert done.written == 1
        fakes["a"].reply(fakes["a"].requests[0].rid, result_for(fakes["a"].requests[0].rid))
        await seen.until(lambda: len(seen.results) == 1)
    assert [(r.endpoint, r.kind, r.context) for r in seen.results] == [("a", ErrorKind.ACCEPTED, 7)]
    assert seen.writes == []  # written inside submit: told by its return value only


async def test_a_busy_endpoint_queues_and_its_later_write_is_reported_once_as_first() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a", "b", "c"], seen)
    async with fanout:
        fakes["b"].set_ready(False)
        done = fanout.submit(b"\x01", HASH, context="x")
        assert (done.written, done.queued, done.refused) == (2, 1, 0)
        assert fakes["b"].requests == []
        fakes["b"].set_ready(True)
        await seen.until(lambda: len(seen.writes) == 1)
        [written] = seen.writes
        assert (written.endpoint, written.first, written.attempt, written.context) == (
            "b",
            True,
            1,
            "x",
        )
        rid = fakes["b"].requests[0].rid
        fakes["b"].reply(rid, result_for(rid))
        await seen.until(lambda: len(seen.finals("b")) == 1)
    assert [w.endpoint for w in seen.writes] == ["b"]
    assert fanout.stats()["b"].queued_writes == 1


async def test_an_endpoint_known_down_refuses_new_jobs_and_says_so_in_the_return_value() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(
        ["a", "b", "c"], seen, reconnect=lambda: itertools.repeat(0.001), max_attempts=1
    )
    fakes["c"].go_down()
    async with fanout:
        # The worker's first connection attempt (start() opened nothing) finds it down.
        await eventually(lambda: fanout.down() == ["c"])
        done = fanout.submit(b"\x01", HASH, context=1)
        assert (done.written, done.queued, done.refused, done.written_items) == (2, 0, 1, 1)
        assert seen.results == []  # not from inside submit(): on the next loop turn
        await seen.until(lambda: len(seen.results) == 1)
        [refusal] = seen.results
        assert (refusal.endpoint, refusal.kind, refusal.final, refusal.written) == (
            "c",
            ErrorKind.DROPPED,
            True,
            False,
        )
        assert refusal.message is not None
        assert refusal.message.startswith("endpoint down: ConnectionRefusedError")
        # Back up: the worker reconnects by itself, and c takes jobs again.
        fakes["c"].come_up()
        await eventually(lambda: fanout.down() == [])
        again = fanout.submit(b"\x02", b"\x22" * 32)
        assert (again.written, again.refused) == (3, 0)
    assert seen.writes == []
    assert fakes["c"].refusals >= 1
    assert fanout.stats()["c"].dropped == 1


async def test_a_queued_job_whose_endpoint_dies_before_writing_ends_final_and_unwritten() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(
        ["a", "b"],
        seen,
        backoff=lambda: itertools.repeat(0.0),
        reconnect=lambda: itertools.repeat(0.001),
        max_attempts=2,
    )
    async with fanout:
        fakes["b"].set_ready(False)
        done = fanout.submit(b"\x01", HASH)
        assert (done.written, done.queued) == (1, 1)
        fakes["b"].go_down()  # the worker waiting for a connection gets refused
        await seen.until(lambda: len(seen.finals("b")) == 1)
    b = [r for r in seen.results if r.endpoint == "b"]
    assert [(r.kind, r.attempt, r.final, r.written, r.written_ns) for r in b] == [
        (ErrorKind.TRANSIENT, 1, False, False, None),  # the connection attempt failed
        (ErrorKind.TRANSIENT, 2, True, False, None),  # the retry met the down endpoint
    ]
    assert seen.writes == []  # never written, so never a first write
    assert fakes["b"].requests == []


async def test_a_write_that_fails_inside_submit_is_counted_queued_and_reported_later() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a"], seen, backoff=lambda: itertools.repeat(0.0))

    def broken(rid: int, body: bytes, ids: Sequence[int] = ()) -> None:
        fakes["a"].send = original  # type: ignore[method-assign]
        raise ConnectionResetError("reset while writing")

    async with fanout:
        original = fakes["a"].send
        fakes["a"].send = broken  # type: ignore[method-assign]
        fakes["a"].default = ACCEPT
        raw = b"\x01"
        done = fanout.submit(raw, keccak(raw))
        assert (done.written, done.queued) == (0, 1)
        assert seen.results == []
        await seen.until(lambda: len(seen.finals()) == 1)
    assert [(r.kind, r.attempt, r.written) for r in seen.results] == [
        (ErrorKind.TRANSIENT, 1, False),
        (ErrorKind.ACCEPTED, 2, True),
    ]
    assert [(w.attempt, w.first) for w in seen.writes] == [(2, True)]


async def test_a_reply_delivered_during_the_write_is_reported_after_submit_returns() -> None:
    seen = Collector()
    network = FakeNetwork(reply_delay=None)  # answers synchronously, inside send()
    fanout, fakes = fake_fanout(["a", "b"], seen, network)
    fakes["a"].handler = lambda request: Result("0x" + HASH.hex())
    async with fanout:
        done = fanout.submit(b"\x01", HASH)
        assert done.written == 2
        assert seen.results == []
        await seen.until(lambda: len(seen.results) == 1)
    assert [(r.endpoint, r.kind, r.written) for r in seen.results] == [
        ("a", ErrorKind.ACCEPTED, True),
        ("b", ErrorKind.DROPPED, True),  # unanswered at close
    ]


async def test_a_busy_endpoint_queues_in_order_and_a_full_queue_drops_without_blocking() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["slow", "fast"], seen, queue_size=2)
    async with fanout:
        fakes["slow"].set_ready(False)
        hashes = [bytes([n]) * 32 for n in range(4)]
        dones = [fanout.submit(tx_hash, tx_hash) for tx_hash in hashes]
        assert [(d.written, d.queued, d.refused) for d in dones] == [
            (1, 1, 0),
            (1, 1, 0),
            (1, 0, 1),
            (1, 0, 1),
        ]
        assert len(fakes["fast"].requests) == 4  # the other endpoint was not held back
        assert fakes["slow"].requests == []
        await seen.until(lambda: len(seen.results) == 2)
        dropped = [r for r in seen.results if r.kind is ErrorKind.DROPPED]
        assert [(r.endpoint, r.tx_hash, r.message) for r in dropped] == [
            ("slow", hashes[2], "queue full"),
            ("slow", hashes[3], "queue full"),
        ]
        fakes["slow"].set_ready(True)
        await seen.until(lambda: len(seen.writes) == 2)
        # What queued up while the endpoint was busy goes out as one batch, in FIFO order.
        [request] = fakes["slow"].requests
        assert request.raws == (hashes[0], hashes[1])
    assert fanout.stats()["slow"].dropped == 2


async def test_a_reply_with_someone_elses_hash_is_not_trusted() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a"], seen)
    async with fanout:
        fanout.submit(b"\x01", HASH)
        rid = fakes["a"].requests[0].rid
        fakes["a"].reply(rid, result_for(rid, b"\x22" * 32))
    assert [r.kind for r in seen.results] == [ErrorKind.UNKNOWN]


async def test_a_raising_callback_does_not_stop_the_fan_out() -> None:
    calls: list[BroadcastResult] = []

    def explode(result: BroadcastResult) -> None:
        calls.append(result)
        raise RuntimeError("metrics exporter bug")

    network = FakeNetwork(handler=lambda request: Result("0x" + HASH.hex()))
    async with FanOut(
        [Endpoint("a", "http://a")], on_result=explode, transport_factory=network
    ) as f:
        f.submit(b"\x01", HASH)
        f.submit(b"\x02", HASH)
        await asyncio.sleep(0)
    assert [r.kind for r in calls] == [ErrorKind.ACCEPTED, ErrorKind.ACCEPTED]


async def test_nonce_too_low_is_final_and_never_retried() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a"], seen, backoff=lambda: itertools.repeat(0.0))
    async with fanout:
        fanout.submit(b"\x01", HASH)
        rid = fakes["a"].requests[0].rid
        body = b'{"jsonrpc":"2.0","id":%d,"error":{"code":-32000,"message":"nonce too low"}}' % rid
        fakes["a"].reply(rid, Reply(status=200, body=body))
    assert [(r.kind, r.final) for r in seen.results] == [(ErrorKind.NONCE_TOO_LOW, True)]
    assert len(fakes["a"].requests) == 1


def test_endpoint_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        FanOut([Endpoint("a", "http://x"), Endpoint("a", "ws://y")], on_result=print)


def test_urls_split_into_host_port_and_target() -> None:
    parts = split_url("https://user:key@rpc.example:8443/v1/abc?x=1")
    assert (parts.host, parts.port, parts.target, parts.tls, parts.userinfo) == (
        "rpc.example",
        8443,
        "/v1/abc?x=1",
        True,
        "user:key",
    )
    assert split_url("ws://127.0.0.1").port == 80
    with pytest.raises(ValueError, match="scheme"):
        split_url("ftp://x")


def test_the_http_parser_reads_replies_split_anywhere() -> None:
    wire = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    )
    for step in (1, 3, 7, len(wire)):
        parser = ResponseParser()
        got = []
        for i in range(0, len(wire), step):
            got += parser.feed(wire[i : i + step])
        assert [(r.status, r.body, r.keep_alive) for r in got] == [
            (200, b"hello", True),
            (503, b"abcde", True),
            (200, b"ok", False),
        ]


def test_the_http_parser_reads_a_body_until_close_and_rejects_garbage() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.0 200 OK\r\n\r\npartial") == []
    response = parser.feed_eof()
    assert response is not None
    assert (response.status, response.body, response.keep_alive) == (200, b"partial", False)
    with pytest.raises(ProtocolError):
        ResponseParser().feed(b"SSH-2.0-OpenSSH\r\n\r\n")
