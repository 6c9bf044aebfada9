"""broadcaster.rpc.transport.fake: the scripted in-memory transport, alone and under a FanOut."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from eth_utils import keccak

from broadcaster.rpc.error_table import ErrorKind
from broadcaster.rpc.fanout import Endpoint, FanOut
from broadcaster.rpc.transport.base import (
    Reply,
    TransportClosed,
    encode_send_batch,
    encode_send_raw,
)
from broadcaster.rpc.transport.fake import (
    ACCEPT,
    DISCONNECT,
    NO_ANSWER,
    FakeNetwork,
    FakeTransport,
    Late,
    RawReply,
    Reject,
    Request,
    Result,
)
from tests.broadcaster.rpc.fanout_helpers import Collector

RAW = b"\x02\xf8\x01"


class Replies:
    def __init__(self) -> None:
        self.got: list[tuple[int, Reply]] = []

    def __call__(self, rid: int, reply: Reply) -> None:
        self.got.append((rid, reply))

    def payloads(self) -> list[Any]:
        return [orjson.loads(r.body or b"null") for _, r in self.got]


def single(rid: int, raw: bytes = RAW) -> bytes:
    return encode_send_raw(rid, raw.hex().encode())


async def turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_every_request_is_recorded_and_accept_answers_the_keccak_on_the_next_turn() -> None:
    replies = Replies()
    fake = FakeTransport("a", replies, default=ACCEPT)
    fake.send(5, single(5))
    assert replies.got == []  # never inside send() by default
    [request] = fake.requests
    assert (request.rid, request.batch, request.raws, request.methods) == (
        5,
        False,
        (RAW,),
        ("eth_sendRawTransaction",),
    )
    assert fake.unanswered == [5]
    await turn()
    assert replies.payloads() == [{"jsonrpc": "2.0", "id": 5, "result": "0x" + keccak(RAW).hex()}]
    assert replies.got[0][1].status == 200
    assert fake.unanswered == []


async def test_the_script_is_consumed_one_answer_per_transaction_then_the_default() -> None:
    replies = Replies()
    fake = FakeTransport(
        "a",
        replies,
        script=[Reject("nonce too low"), Result("0x" + "22" * 32), RawReply(503, b"busy")],
        default=ACCEPT,
    )
    for rid in (1, 2, 3, 4):
        fake.send(rid, single(rid))
    await turn()
    got = dict(replies.got)
    assert orjson.loads(got[1].body or b"")["error"] == {"code": -32000, "message": "nonce too low"}
    assert orjson.loads(got[2].body or b"")["result"] == "0x" + "22" * 32
    assert (got[3].status, got[3].body) == (503, b"busy")
    assert orjson.loads(got[4].body or b"")["result"] == "0x" + keccak(RAW).hex()


async def test_no_default_leaves_the_request_to_the_test() -> None:
    replies = Replies()
    fake = FakeTransport("a", replies)
    fake.send(1, single(1))
    await turn()
    assert replies.got == [] and fake.unanswered == [1]
    fake.answer(1, Reject("replacement transaction underpriced", code=-32010, data="x"))
    assert replies.payloads()[0]["error"] == {
        "code": -32010,
        "message": "replacement transaction underpriced",
        "data": "x",
    }


async def test_a_batch_gets_one_array_of_element_answers_in_order() -> None:
    replies = Replies()
    fake = FakeTransport("a", replies, script=[ACCEPT, Reject("already known")])
    raws = [b"\x01", b"\x02"]
    fake.send(9, encode_send_batch([7, 8], [r.hex().encode() for r in raws]), [7, 8])
    [request] = fake.requests
    assert (request.batch, request.ids, request.raws) == (True, (7, 8), tuple(raws))
    await turn()
    assert replies.got[0][0] == 9
    assert replies.payloads() == [
        [
            {"jsonrpc": "2.0", "id": 7, "result": "0x" + keccak(b"\x01").hex()},
            {"jsonrpc": "2.0", "id": 8, "error": {"code": -32000, "message": "already known"}},
        ]
    ]


async def test_a_whole_request_answer_inside_a_batch_decides_for_the_whole_request() -> None:
    replies = Replies()
    fake = FakeTransport("a", replies, script=[ACCEPT, RawReply(429, b"slow down"), ACCEPT])
    fake.send(3, encode_send_batch([1, 2], [b"01", b"02"]), [1, 2])
    await turn()
    assert [(rid, r.status, r.body) for rid, r in replies.got] == [(3, 429, b"slow down")]
    fake.send(4, single(4))  # the third script entry is left for the next request
    await turn()
    assert orjson.loads(replies.got[1][1].body or b"")["result"] == "0x" + keccak(RAW).hex()


async def test_no_answer_stays_unanswered_until_forgotten() -> None:
    replies = Replies()
    fake = FakeTransport("a", replies, default=NO_ANSWER)
    fake.send(1, single(1))
    await turn()
    assert replies.got == [] and fake.unanswered == [1]
    fake.forget(1)
    assert fake.unanswered == [] and fake.forgotten == [1]


async def test_a_late_answer_comes_after_its_delay_unless_forgotten_first() -> None:
    replies = Replies()
    fake = FakeTransport("a", replies, script=[Late(0.01, Reject("x")), Late(60, ACCEPT)])
    fake.send(1, single(1))
    fake.send(2, single(2))
    await turn()
    assert replies.got == []
    fake.forget(2)  # the fan-out's timeout: the 60 s answer is never delivered
    async with asyncio.timeout(5):
        while not replies.got:  # noqa: ASYNC110 (the fake's own timer: nothing to wait on)
            await asyncio.sleep(0.005)
    assert [rid for rid, _ in replies.got] == [1]
    assert replies.payloads()[0]["error"]["message"] == "x"


async def test_disconnect_fails_that_request_and_every_other_unanswered_one() -> None:
    replies = Replies()
    fake = FakeTransport("a", replies, script=[NO_ANSWER, DISCONNECT])
    fake.send(1, single(1))
    fake.send(2, single(2))
    await turn()
    assert sorted(rid for rid, _ in replies.got) == [1, 2]
    assert all(isinstance(r.failure, ConnectionResetError) for _, r in replies.got)
    assert fake.ready()  # reconnected at once: it is not down


async def test_a_handler_decides_per_request_like_httpx_mock_transport() -> None:
    replies = Replies()

    def handler(request: Request) -> Any:
        if request.batch:
            return [Reject("nonce too low"), ACCEPT]
        return None  # singles: answered by hand

    fake = FakeTransport("a", replies, handler=handler, reply_delay=None)
    fake.send(3, encode_send_batch([1, 2], [b"01", b"02"]), [1, 2])
    assert [e.get("error", {}).get("message") for e in replies.payloads()[0]] == [
        "nonce too low",
        None,
    ]  # reply_delay=None: synchronously, inside send()
    fake.send(4, single(4))
    assert fake.unanswered == [4]
    with pytest.raises(ValueError, match="3 answers for a request of 2 calls"):
        fake.handler = lambda request: [ACCEPT] * 3
        fake.send(5, encode_send_batch([6, 7], [b"01", b"02"]), [6, 7])


async def test_connection_state_busy_down_in_flight_cap_and_closed() -> None:
    replies = Replies()
    fake = FakeTransport("a", replies, max_in_flight=1)
    assert fake.ready()
    fake.send(1, single(1))
    assert not fake.ready()  # the cap
    waiter = asyncio.create_task(fake.wait_ready())
    await turn()
    assert not waiter.done()
    fake.reply(1, Reply(status=200, body=b"{}"))
    await asyncio.wait_for(waiter, 5)
    fake.set_ready(False)
    assert not fake.ready()
    fake.set_ready(True)
    fake.send(2, single(2))
    fake.go_down()  # drops what is in flight, and refuses connections
    assert isinstance(replies.got[-1][1].failure, ConnectionResetError)
    with pytest.raises(ConnectionRefusedError):
        await fake.wait_ready()
    assert (fake.down, fake.refusals) == (True, 1)
    fake.come_up()
    await fake.wait_ready()
    await fake.aclose()
    with pytest.raises(TransportClosed):
        fake.send(3, single(3))
    with pytest.raises(TransportClosed):
        await fake.wait_ready()


async def test_a_fake_network_under_a_fanout_scripts_each_endpoint() -> None:
    seen = Collector()
    network = FakeNetwork(default=ACCEPT)
    endpoints = [Endpoint(n, f"http://{n}") for n in "abc"]
    raw = b"\x02\x01"
    async with FanOut(
        endpoints, on_result=seen.on_result, transport_factory=network, max_attempts=1
    ) as fanout:
        network["b"].script.append(Reject("insufficient funds for gas * price + value"))
        network["c"].script.append(RawReply(200, b"not json"))
        done = fanout.submit(raw, keccak(raw))
        assert done.written == 3
        await seen.until(lambda: len(seen.finals()) == 3)
    assert {r.endpoint: r.kind for r in seen.results} == {
        "a": ErrorKind.ACCEPTED,
        "b": ErrorKind.INSUFFICIENT_FUNDS,
        "c": ErrorKind.TRANSIENT,
    }
    assert [request.raws for request in network["a"].requests] == [(raw,)]
