"""The fan-out's lanes, request bytes and HTTP parser, without a network (FakeTransport)."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.rpc.error_table import ErrorKind
from broadcaster.rpc.fanout import BroadcastResult, Endpoint, FanOut, Written, backoff
from broadcaster.rpc.transport.base import FakeTransport, OnReply, Reply, encode_send_raw, split_url
from broadcaster.rpc.transport.http import ProtocolError, ResponseParser
from tests.broadcaster.rpc.fanout_helpers import Collector, fake_fanout

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


async def test_an_idle_endpoint_is_written_before_submit_returns() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a", "b", "c"], seen)
    async with fanout:
        fanout.submit(b"\x01\x02", HASH, context=7)
        assert [len(fakes[n].sent) for n in "abc"] == [1, 1, 1]
        assert [w.endpoint for w in seen.writes] == ["a", "b", "c"]
        assert all(w.context == 7 and w.attempt == 1 for w in seen.writes)
        for name in "abc":
            rid, _ = fakes[name].sent[0]
            fakes[name].reply(rid, result_for(rid))
    assert [(r.endpoint, r.kind, r.final) for r in seen.results] == [
        ("a", ErrorKind.ACCEPTED, True),
        ("b", ErrorKind.ACCEPTED, True),
        ("c", ErrorKind.ACCEPTED, True),
    ]
    assert {n: s.fast_writes for n, s in fanout.stats().items()} == {"a": 1, "b": 1, "c": 1}


async def test_every_idle_endpoint_is_written_before_any_write_is_reported() -> None:
    # The reorg reaction's last write must not wait behind the earlier lanes' timers and
    # callbacks: submit() writes every socket first, then reports the writes.
    seen = Collector()
    fanout, fakes = fake_fanout(["a", "b", "c"], seen)
    sent_when_reported: list[int] = []
    seen_written = seen.on_written

    def on_written(written: Written) -> None:
        sent_when_reported.append(sum(len(f.sent) for f in fakes.values()))
        seen_written(written)

    fanout._on_written = on_written
    async with fanout:
        fanout.submit(b"\x01", HASH)
    assert sent_when_reported == [3, 3, 3]
    assert [w.endpoint for w in seen.writes] == ["a", "b", "c"]


async def test_a_reply_delivered_during_the_write_still_reports_the_write() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a", "b"], seen)
    fakes["a"].auto_reply = lambda rid, body: result_for(rid)
    async with fanout:
        fanout.submit(b"\x01", HASH)
    assert [w.endpoint for w in seen.writes] == ["a", "b"]
    assert [(r.endpoint, r.kind) for r in seen.results] == [
        ("a", ErrorKind.ACCEPTED),
        ("b", ErrorKind.DROPPED),
    ]


async def test_a_busy_endpoint_queues_in_order_and_a_full_queue_drops_without_blocking() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["slow", "fast"], seen, queue_size=2)
    async with fanout:
        fakes["slow"].set_ready(False)
        hashes = [bytes([n]) * 32 for n in range(4)]
        for tx_hash in hashes:
            fanout.submit(tx_hash, tx_hash)
        assert len(fakes["fast"].sent) == 4  # the other endpoint was not held back
        assert fakes["slow"].sent == []
        dropped = [r for r in seen.results if r.kind is ErrorKind.DROPPED]
        assert [(r.endpoint, r.tx_hash) for r in dropped] == [
            ("slow", hashes[2]),
            ("slow", hashes[3]),
        ]
        fakes["slow"].set_ready(True)
        await seen.until(lambda: len(seen.writes) == 6)
        # What queued up while the endpoint was busy goes out as one batch, in FIFO order.
        [(_, body)] = fakes["slow"].sent
        sent = [call["params"][0] for call in orjson.loads(body)]
        assert sent == ["0x" + hashes[0].hex(), "0x" + hashes[1].hex()]
    assert fanout.stats()["slow"].dropped == 2


async def test_a_reply_with_someone_elses_hash_is_not_trusted() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a"], seen)
    async with fanout:
        fanout.submit(b"\x01", HASH)
        rid, _ = fakes["a"].sent[0]
        fakes["a"].reply(rid, result_for(rid, b"\x22" * 32))
    assert [r.kind for r in seen.results] == [ErrorKind.UNKNOWN]


async def test_a_raising_callback_does_not_stop_the_fan_out() -> None:
    calls: list[BroadcastResult] = []

    def explode(result: BroadcastResult) -> None:
        calls.append(result)
        raise RuntimeError("metrics exporter bug")

    fakes: dict[str, FakeTransport] = {}

    def factory(endpoint: Endpoint, on_reply: OnReply) -> FakeTransport:
        fakes[endpoint.name] = FakeTransport(
            endpoint.name, on_reply, auto_reply=lambda rid, body: result_for(rid)
        )
        return fakes[endpoint.name]

    async with FanOut(
        [Endpoint("a", "http://a")], on_result=explode, transport_factory=factory
    ) as f:
        f.submit(b"\x01", HASH)
        f.submit(b"\x02", HASH)
    assert [r.kind for r in calls] == [ErrorKind.ACCEPTED, ErrorKind.ACCEPTED]


async def test_nonce_too_low_is_final_and_never_retried() -> None:
    seen = Collector()
    fanout, fakes = fake_fanout(["a"], seen, backoff=lambda: itertools.repeat(0.0))
    async with fanout:
        fanout.submit(b"\x01", HASH)
        rid, _ = fakes["a"].sent[0]
        body = b'{"jsonrpc":"2.0","id":%d,"error":{"code":-32000,"message":"nonce too low"}}' % rid
        fakes["a"].reply(rid, Reply(status=200, body=body))
    assert [(r.kind, r.final) for r in seen.results] == [(ErrorKind.NONCE_TOO_LOW, True)]
    assert len(fakes["a"].sent) == 1


def test_endpoint_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        FanOut([Endpoint("a", "http://x"), Endpoint("a", "ws://y")], on_result=print)


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    delays = list(itertools.islice(backoff(base=0.1, factor=2, cap=0.4, rng=lambda: 1.0), 5))
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.4, 0.4])
    low = list(itertools.islice(backoff(base=0.1, factor=2, cap=0.4, rng=lambda: 0.0), 3))
    assert low == pytest.approx([0.05, 0.1, 0.2])


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
