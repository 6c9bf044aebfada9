"""Fault injection: endpoints that stall, answer 5xx or garbage, or hang up.

Small servers on 127.0.0.1 play the broken endpoint next to a real anvil. The assertions are
about order and outcome (the healthy endpoint finished while the broken one had not; retries
happened; nothing crashed), never about how long anything took.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import orjson
import pytest
from eth_utils import keccak
from websockets.asyncio.server import ServerConnection, serve

from broadcaster.rpc.error_table import ErrorKind
from broadcaster.rpc.fanout import Endpoint, FanOut
from tests.anvil import Anvil
from tests.broadcaster.rpc.fanout_helpers import (
    Collector,
    eventually,
    quiet_anvil,
    signed_transfer,
)


def no_delay() -> Iterator[float]:
    return itertools.repeat(0.0)


@pytest.fixture
def anvil_node() -> Iterator[Anvil]:
    with quiet_anvil("--no-mining") as node:
        yield node


def ok_reply(request: bytes) -> bytes:
    """What a healthy node answers: the keccak of the raw transaction it was sent."""
    call = orjson.loads(request)
    raw = bytes.fromhex(call["params"][0][2:])
    return orjson.dumps({"jsonrpc": "2.0", "id": call["id"], "result": "0x" + keccak(raw).hex()})


def http_response(status: int, body: bytes, *, reason: str = "X") -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


Behaviour = Callable[[int, bytes], Awaitable[bytes | None]]  # (nth request, body) -> response


@dataclass
class FaultyHttp:
    """An HTTP/1.1 server whose answer to the n-th request is decided by ``behaviour``.

    ``None`` from the behaviour closes the connection without an answer.
    """

    behaviour: Behaviour
    requests: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append(body)
                answer = await self.behaviour(len(self.requests), body)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)


@pytest.fixture
async def faulty() -> AsyncIterator[Callable[[Behaviour], Awaitable[FaultyHttp]]]:
    servers: list[FaultyHttp] = []

    async def make(behaviour: Behaviour) -> FaultyHttp:
        fake = FaultyHttp(behaviour)
        fake.server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
        servers.append(fake)
        return fake

    yield make
    for fake in servers:
        assert fake.server is not None
        fake.server.close()
        for task in list(fake.handlers):
            task.cancel()
        await asyncio.gather(*fake.handlers, return_exceptions=True)
        await fake.server.wait_closed()


async def stall(n: int, body: bytes) -> bytes | None:
    await asyncio.Event().wait()  # never answers (cancelled at teardown)
    return None


@pytest.mark.e2e  # a real anvil beside the broken endpoint
async def test_a_stalled_endpoint_does_not_delay_the_others(
    anvil_node: Anvil, faulty: Callable[[Behaviour], Awaitable[FaultyHttp]]
) -> None:
    stalled = await faulty(stall)
    seen = Collector()
    txs = [signed_transfer(nonce) for nonce in range(3)]
    endpoints = [Endpoint("stalled", stalled.url), Endpoint("anvil", anvil_node.http_url)]
    fanout = FanOut(endpoints, on_result=seen.on_result, on_written=seen.on_written, timeout=60)
    async with fanout:
        for raw, tx_hash in txs:
            fanout.submit(raw, tx_hash)
        await seen.until(lambda: len(seen.finals("anvil")) == 3)
        # The healthy node answered everything while the stalled one answered nothing, though
        # it was written to as well (its pool opened a connection per outstanding request).
        assert seen.finals("stalled") == []
        await eventually(lambda: len(stalled.requests) == 3)
    assert {r.kind for r in seen.finals("anvil")} == {ErrorKind.ACCEPTED}
    # Closing the fan-out settles what the stalled endpoint never answered.
    assert [r.kind for r in seen.finals("stalled")] == [ErrorKind.DROPPED] * 3


async def test_a_stall_times_out_and_is_retried_until_attempts_run_out(
    faulty: Callable[[Behaviour], Awaitable[FaultyHttp]],
) -> None:
    stalled = await faulty(stall)
    seen = Collector()
    raw, tx_hash = signed_transfer(0)
    fanout = FanOut(
        [Endpoint("stalled", stalled.url)],
        on_result=seen.on_result,
        timeout=0.05,
        max_attempts=3,
        backoff=no_delay,
    )
    async with fanout:
        fanout.submit(raw, tx_hash)
        await seen.until(lambda: len(seen.finals()) == 1)
    assert [(r.kind, r.attempt, r.final) for r in seen.results] == [
        (ErrorKind.TIMEOUT, 1, False),
        (ErrorKind.TIMEOUT, 2, False),
        (ErrorKind.TIMEOUT, 3, True),
    ]
    assert len(stalled.requests) == 3
    assert fanout.stats()["stalled"].timeouts == 3


@pytest.mark.e2e  # a real anvil beside the broken endpoint
async def test_5xx_answers_are_retried_and_a_recovered_endpoint_accepts(
    anvil_node: Anvil, faulty: Callable[[Behaviour], Awaitable[FaultyHttp]]
) -> None:
    async def flaky(n: int, body: bytes) -> bytes | None:
        if n <= 2:
            return http_response(503, b"<html>busy</html>", reason="Service Unavailable")
        return http_response(200, ok_reply(body))

    server = await faulty(flaky)
    seen = Collector()
    raw, tx_hash = signed_transfer(0)
    endpoints = [Endpoint("flaky", server.url), Endpoint("anvil", anvil_node.http_url)]
    async with FanOut(endpoints, on_result=seen.on_result, backoff=no_delay) as fanout:
        fanout.submit(raw, tx_hash)
        await seen.until(lambda: len(seen.finals()) == 2)
    flaky_results = [r for r in seen.results if r.endpoint == "flaky"]
    assert [(r.kind, r.attempt) for r in flaky_results] == [
        (ErrorKind.TRANSIENT, 1),
        (ErrorKind.TRANSIENT, 2),
        (ErrorKind.ACCEPTED, 3),
    ]
    assert [r.kind for r in seen.finals("anvil")] == [ErrorKind.ACCEPTED]


async def test_malformed_json_is_transient_and_retried_without_crashing(
    faulty: Callable[[Behaviour], Awaitable[FaultyHttp]],
) -> None:
    async def garbage(n: int, body: bytes) -> bytes | None:
        return http_response(200, b'{"jsonrpc": "2.0", "id": 1, "resu')

    server = await faulty(garbage)
    seen = Collector()
    raw, tx_hash = signed_transfer(0)
    fanout = FanOut(
        [Endpoint("garbage", server.url)],
        on_result=seen.on_result,
        max_attempts=2,
        backoff=no_delay,
    )
    async with fanout:
        fanout.submit(raw, tx_hash)
        await seen.until(lambda: len(seen.finals()) == 1)
    assert [r.kind for r in seen.results] == [ErrorKind.TRANSIENT, ErrorKind.TRANSIENT]
    assert seen.results[-1].message is not None
    assert "malformed" in seen.results[-1].message


async def test_a_connection_closed_without_an_answer_is_retried_on_a_new_connection(
    faulty: Callable[[Behaviour], Awaitable[FaultyHttp]],
) -> None:
    async def hang_up_first(n: int, body: bytes) -> bytes | None:
        return None if n == 1 else http_response(200, ok_reply(body))

    server = await faulty(hang_up_first)
    seen = Collector()
    raw, tx_hash = signed_transfer(0)
    async with FanOut(
        [Endpoint("rude", server.url)], on_result=seen.on_result, backoff=no_delay
    ) as fanout:
        fanout.submit(raw, tx_hash)
        await seen.until(lambda: len(seen.finals()) == 1)
    assert [(r.kind, r.attempt) for r in seen.results] == [
        (ErrorKind.TRANSIENT, 1),
        (ErrorKind.ACCEPTED, 2),
    ]


async def test_a_chunked_reply_is_read_like_any_other(
    faulty: Callable[[Behaviour], Awaitable[FaultyHttp]],
) -> None:
    async def chunked(n: int, body: bytes) -> bytes | None:
        reply = ok_reply(body)
        half = len(reply) // 2
        parts = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (reply[:half], reply[half:]))
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        return head + parts + b"0\r\n\r\n"

    server = await faulty(chunked)
    seen = Collector()
    async with FanOut([Endpoint("chunky", server.url)], on_result=seen.on_result) as fanout:
        for nonce in range(3):  # several requests over the kept-alive connections
            fanout.submit(*signed_transfer(nonce))
        await seen.until(lambda: len(seen.finals()) == 3)
    assert {r.kind for r in seen.finals()} == {ErrorKind.ACCEPTED}


@pytest.mark.e2e  # a real anvil beside the broken endpoint
async def test_an_endpoint_that_refuses_connections_fails_fast_and_the_rest_carry_on(
    anvil_node: Anvil,
) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()  # nothing listens on `port` any more
    seen = Collector()
    raw, tx_hash = signed_transfer(0)
    endpoints = [
        Endpoint("down-http", f"http://127.0.0.1:{port}"),
        Endpoint("down-ws", f"ws://127.0.0.1:{port}"),
        Endpoint("anvil", anvil_node.ws_url),
    ]
    fanout = FanOut(endpoints, on_result=seen.on_result, max_attempts=2, backoff=no_delay)
    async with fanout:
        fanout.submit(raw, tx_hash)
        await seen.until(lambda: len(seen.finals()) == 3)
    for name in ("down-http", "down-ws"):
        down = [r for r in seen.results if r.endpoint == name]
        assert [(r.kind, r.attempt, r.written_ns) for r in down] == [
            (ErrorKind.TRANSIENT, 1, None),
            (ErrorKind.TRANSIENT, 2, None),
        ]
    assert [r.kind for r in seen.finals("anvil")] == [ErrorKind.ACCEPTED]


async def test_websocket_replies_out_of_order_are_matched_by_id() -> None:
    async def reversed_replies(ws: ServerConnection) -> None:
        first, second = await ws.recv(decode=False), await ws.recv(decode=False)
        await ws.send(ok_reply(second).decode())
        await ws.send(b'{"jsonrpc":"2.0","method":"eth_subscription","params":{}}'.decode())
        await ws.send(ok_reply(first).decode())
        await ws.wait_closed()

    seen = Collector()
    txs = [signed_transfer(0), signed_transfer(1)]
    async with serve(reversed_replies, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with FanOut(
            [Endpoint("ws", f"ws://127.0.0.1:{port}")], on_result=seen.on_result
        ) as fanout:
            for raw, tx_hash in txs:
                fanout.submit(raw, tx_hash)
            await seen.until(lambda: len(seen.finals()) == 2)
    assert [r.tx_hash for r in seen.results] == [txs[1][1], txs[0][1]]
    assert {r.kind for r in seen.results} == {ErrorKind.ACCEPTED}


async def test_a_websocket_that_closes_mid_request_fails_it_and_reconnects() -> None:
    connections = 0

    async def close_first(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        message = await ws.recv(decode=False)
        if connections == 1:
            await ws.close()
            return
        await ws.send(ok_reply(message).decode())
        await ws.wait_closed()

    seen = Collector()
    raw, tx_hash = signed_transfer(0)
    async with serve(close_first, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with FanOut(
            [Endpoint("ws", f"ws://127.0.0.1:{port}")],
            on_result=seen.on_result,
            backoff=no_delay,
        ) as fanout:
            fanout.submit(raw, tx_hash)
            await seen.until(lambda: len(seen.finals()) == 1)
    assert [(r.kind, r.attempt) for r in seen.results] == [
        (ErrorKind.TRANSIENT, 1),
        (ErrorKind.ACCEPTED, 2),
    ]
    assert connections == 2


REFUSAL = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"batch not supported"}}'


@pytest.mark.e2e  # a real anvil beside the broken endpoint
async def test_an_http_endpoint_without_batches_gets_the_jobs_one_by_one(
    anvil_node: Anvil, faulty: Callable[[Behaviour], Awaitable[FaultyHttp]]
) -> None:
    async def no_batches(n: int, body: bytes) -> bytes | None:
        return http_response(200, REFUSAL if body.startswith(b"[") else ok_reply(body))

    server = await faulty(no_batches)
    seen = Collector()
    txs = [signed_transfer(nonce) for nonce in range(3)]
    endpoints = [Endpoint("old", server.url), Endpoint("anvil", anvil_node.http_url)]
    async with FanOut(endpoints, on_result=seen.on_result) as fanout:
        fanout.submit_many([(raw, tx_hash, None) for raw, tx_hash in txs])
        await seen.until(lambda: len(seen.finals()) == 6)
        fanout.submit_many([(raw, tx_hash, None) for raw, tx_hash in txs])  # singles now
        await seen.until(lambda: len(seen.finals()) == 12)
    assert {r.kind for r in seen.results} == {ErrorKind.ACCEPTED}  # no failure reported
    batch, *singles = server.requests
    assert [call["params"][0] for call in orjson.loads(batch)] == ["0x" + r.hex() for r, _ in txs]
    assert sorted(orjson.loads(s)["params"][0] for s in singles) == sorted(
        ["0x" + raw.hex() for raw, _ in txs] * 2
    )
    stats = fanout.stats()
    assert (stats["old"].batches, stats["old"].batch_refusals) == (1, 1)
    assert (stats["anvil"].batches, stats["anvil"].batch_refusals) == (2, 0)


async def test_a_websocket_endpoint_without_batches_gets_the_jobs_one_by_one() -> None:
    received: list[bytes] = []

    async def no_batches(ws: ServerConnection) -> None:
        async for message in ws:
            body = message.encode() if isinstance(message, str) else message
            received.append(body)
            # JSON-RPC 2.0 section 5: an id the server could not read is answered as null.
            await ws.send((REFUSAL if body.startswith(b"[") else ok_reply(body)).decode())

    seen = Collector()
    txs = [signed_transfer(nonce) for nonce in range(3)]
    async with serve(no_batches, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with FanOut(
            [Endpoint("ws", f"ws://127.0.0.1:{port}")], on_result=seen.on_result
        ) as fanout:
            fanout.submit_many([(raw, tx_hash, n) for n, (raw, tx_hash) in enumerate(txs)])
            await seen.until(lambda: len(seen.finals()) == 3)
    assert [(r.context, r.kind, r.attempt) for r in seen.results] == [
        (n, ErrorKind.ACCEPTED, 2) for n in range(3)
    ]
    # The batch, then each transaction alone and in nonce order (one pipelined connection).
    assert [len(orjson.loads(b)) if b.startswith(b"[") else 1 for b in received] == [3, 1, 1, 1]
    assert [orjson.loads(b)["params"][0] for b in received[1:]] == ["0x" + r.hex() for r, _ in txs]
    assert fanout.stats()["ws"].batch_refusals == 1
