"""Adversarial review of the API (issue 13): hostile connections, continuity against a lagging
node, raw-transaction rule evasion. Real aiohttp server on 127.0.0.1 over the stub manager."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import rlp

from broadcaster.api.server import ApiLimits
from broadcaster.api.subscriptions import Subscriptions
from nonce import AttemptReason, BlockRef
from signer_client.txcodec import SECP256K1_N
from tests.broadcaster.api.test_api import (
    CHAIN_ID,
    GWEI,
    RECIPIENT,
    TOKEN,
    call,
    conn,
    error_of,
    make_api,
    request,
)
from tests.broadcaster.api.test_api_access import (
    RAW,
    as_,
    attempt,
    hex_raw,
    record_with,
    tenant_api,
)
from tests.broadcaster.api.test_api_http import http_served


def keep_alive_request(body: bytes, token: str = TOKEN) -> bytes:
    head = (
        f"POST /{token} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def one_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str = TOKEN
) -> bytes:
    writer.write(keep_alive_request(orjson.dumps(request("eth_chainId")), token))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head


async def test_idle_keep_alive_connections_count_against_the_token_cap() -> None:
    api = make_api(limits=ApiLimits(max_connections_per_token=2))
    async with http_served(api) as where:
        host, port = where.split(":")
        held = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection(host, int(port))
            head = await one_exchange(reader, writer)
            assert head.startswith(b"HTTP/1.1 200")
            held.append((reader, writer))
        # Two idle keep-alive connections held open by the token: a third is refused.
        reader, writer = await asyncio.open_connection(host, int(port))
        head = await one_exchange(reader, writer)
        assert head.startswith(b"HTTP/1.1 429"), head
        writer.close()
        # A held connection still serves its token.
        assert (await one_exchange(*held[0])).startswith(b"HTTP/1.1 200")
        for _, w in held:
            w.close()
            await w.wait_closed()


async def test_a_receipt_from_a_lagging_node_in_another_block_is_not_passed_on() -> None:
    canonical = "0x" + "11" * 32
    abandoned = "0x" + "22" * 32

    async def lagging(method: str, *params: Any) -> Any:
        return {"transactionHash": params[0], "blockHash": abandoned, "status": "0x1"}

    api = tenant_api(passthrough=lagging)
    first, second = attempt(1), attempt(2, AttemptReason.REORG)
    record = record_with(api, first, second)
    record.included_hash, record.block = second.hash, BlockRef(1, canonical)
    a = as_(api, "tok-a")
    reply = await call(api, request("eth_getTransactionReceipt", "0x" + first.hash.hex()), a)
    assert reply["result"] is None


async def test_after_a_cancel_a_lagging_nodes_payload_receipt_is_never_passed_on() -> None:
    async def lagging(method: str, *params: Any) -> Any:
        # The payload mined in a block the canonical chain abandoned: status 1.
        return {"transactionHash": params[0], "blockHash": "0x" + "22" * 32, "status": "0x1"}

    api = tenant_api(passthrough=lagging)
    payload, noop = attempt(1), attempt(3, AttemptReason.CANCEL)
    record_with(api, payload, noop, included=3)  # the noop is in canonical block 0x11..
    a = as_(api, "tok-a")
    reply = await call(api, request("eth_getTransactionReceipt", "0x" + payload.hash.hex()), a)
    assert reply["result"] is None


async def test_a_batch_over_the_limit_is_one_invalid_request_answer() -> None:
    seen: list[str] = []
    api = make_api(limits=ApiLimits(max_batch=3), on_intent=seen.append)
    client = conn(api)
    three = orjson.loads(await api.handle_message(client, orjson.dumps([1, 1, 1])))  # type: ignore[arg-type]
    assert [item["error"]["code"] for item in three] == [-32600] * 3
    reply = orjson.loads(await api.handle_message(client, orjson.dumps([1, 1, 1, 1])))  # type: ignore[arg-type]
    assert reply["error"] == {
        "code": -32600,
        "message": "batch of 4 requests exceeds the limit of 3: split it",
    }
    assert seen == ["rate_limited"]


async def test_malformed_batch_items_cost_rate_tokens_too() -> None:
    api = make_api(limits=ApiLimits(rate_per_second=1e-9, burst=2))
    client = conn(api)
    reply = orjson.loads(await api.handle_message(client, orjson.dumps([1, 1, 1, 1])))  # type: ignore[arg-type]
    assert [item["error"]["code"] for item in reply] == [-32600, -32600, -32005, -32005]
    later = await call(api, request("eth_chainId", id=7), client)
    assert later["error"]["code"] == -32005 and later["id"] == 7


LEGACY_155: dict[str, Any] = {
    "chainId": CHAIN_ID,
    "nonce": 0,
    "to": RECIPIENT,
    "value": 5,
    "gas": 21_000,
    "gasPrice": GWEI,
}


def _typed(mutate: Any) -> str:
    raw = bytes.fromhex(hex_raw(RAW)[2:])
    items = rlp.decode(raw[1:])
    return "0x" + (raw[:1] + rlp.encode(mutate(list(items)))).hex()


def _legacy(mutate: Any) -> str:
    items = list(rlp.decode(bytes.fromhex(hex_raw(LEGACY_155)[2:])))
    return "0x" + rlp.encode(mutate(items)).hex()


def _set(items: list[Any], index: int, value: bytes) -> list[Any]:
    items[index] = value
    return items


def _legacy_high_s(items: list[Any]) -> list[Any]:
    v = int.from_bytes(items[6], "big")
    s = int.from_bytes(items[8], "big")
    items[8] = (SECP256K1_N - s).to_bytes(32, "big").lstrip(b"\0")
    items[6] = (v + 1 if v % 2 else v - 1).to_bytes(4, "big").lstrip(b"\0")
    return items


EVASIONS = {
    "trailing-bytes": (lambda: hex_raw(RAW) + "00", "decode", "rlp: trailing bytes"),
    "yparity-2": (lambda: _typed(lambda i: _set(i, 9, b"\x02")), "decode", "yParity must be 0"),
    "yparity-27": (lambda: _typed(lambda i: _set(i, 9, b"\x1b")), "decode", "yParity must be 0"),
    "yparity-padded": (
        lambda: _typed(lambda i: _set(i, 9, b"\x00\x01")),
        "decode",
        "yParity: integer with leading zero",
    ),
    "s-padded": (
        lambda: _typed(lambda i: _set(i, 11, b"\x00" + i[11])),
        "decode",
        "s: integer with leading zero",
    ),
    "r-zero": (lambda: _typed(lambda i: _set(i, 10, b"")), "decode", "does not recover"),
    "type-3": (lambda: "0x03" + hex_raw(RAW)[4:], "decode", "type-3 transaction: expected 14"),
    "legacy-v27": (
        lambda: _legacy(lambda i: _set(i, 6, b"\x1b")),
        "chain-id",
        "a legacy transaction without an EIP-155 chain id",
    ),
    "legacy-v-next-chain": (
        lambda: _legacy(
            lambda i: _set(i, 6, (int.from_bytes(i[6], "big") + 2).to_bytes(4, "big").lstrip(b"\0"))
        ),
        "chain-id",
        f"signed for chain {CHAIN_ID + 1}",
    ),
    "legacy-high-s": (lambda: _legacy(_legacy_high_s), "low-s", "above secp256k1n/2"),
    "typed-chain-0": (
        lambda: hex_raw({**RAW, "chainId": 0}),
        "chain-id",
        "signed for chain 0",
    ),
}


@pytest.mark.parametrize(("raw", "rule", "words"), EVASIONS.values(), ids=EVASIONS.keys())
async def test_raw_transaction_rule_evasions_are_refused(raw: Any, rule: str, words: str) -> None:
    api = tenant_api()
    code, message = error_of(
        await call(api, request("eth_sendRawTransaction", raw()), as_(api, "tok-b"))
    )
    assert code == -32602
    assert message.startswith(f"invalid params: params[0]: raw transaction refused ({rule}): ")
    assert words in message
    assert api.manager.submitted == []  # type: ignore[attr-defined]


async def test_idle_and_half_sent_connections_are_closed_and_free_their_tokens_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from broadcaster.api import transport

    monkeypatch.setattr(transport, "KEEPALIVE_SECONDS", 0.2)
    api = make_api(limits=ApiLimits(max_connections_per_token=1))
    async with http_served(api) as where:
        host, port = where.split(":")
        # Slowloris: headers never finished. The server closes the connection (EOF).
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
        # An idle keep-alive connection holding the token's one slot is closed too ...
        reader, writer = await asyncio.open_connection(host, int(port))
        assert (await one_exchange(reader, writer)).startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
        # ... which frees the slot for a new connection.
        reader, writer = await asyncio.open_connection(host, int(port))
        assert (await one_exchange(reader, writer)).startswith(b"HTTP/1.1 200")
        writer.close()
        await writer.wait_closed()


async def test_a_refused_connection_is_closed_after_its_answer() -> None:
    api = make_api(limits=ApiLimits(max_connections_per_token=1))
    async with http_served(api) as where:
        host, port = where.split(":")
        held = await asyncio.open_connection(host, int(port))
        assert (await one_exchange(*held)).startswith(b"HTTP/1.1 200")
        for token in (TOKEN, "not-a-token"):
            reader, writer = await asyncio.open_connection(host, int(port))
            head = await one_exchange(reader, writer, token)
            assert head.startswith((b"HTTP/1.1 429", b"HTTP/1.1 401")), head
            assert await asyncio.wait_for(reader.read(), 30) == b""
            writer.close()
        held[1].close()
        await held[1].wait_closed()


@pytest.mark.parametrize(
    "auth", [b"Bearer \xff\xfe", b"Bearer \xed\xa0\x80", b"\xff \xff", b"Bearer \xc3\xa9"]
)
async def test_a_token_header_that_is_not_utf8_is_401_not_a_crash(auth: bytes) -> None:
    async with http_served(make_api()) as where:
        host, port = where.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
            + auth
            + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 401"), reply[:200]


async def test_a_lagging_nodes_transaction_in_an_abandoned_block_is_not_passed_on() -> None:
    canonical, abandoned = "0x" + "11" * 32, "0x" + "22" * 32
    answers: dict[str, Any] = {}

    async def node(method: str, *params: Any) -> Any:
        return answers.get(params[0])

    api = tenant_api(passthrough=node)
    a = as_(api, "tok-a")
    # Cancelled: the noop is in our canonical block; the node still has the payload mined in
    # an abandoned one. The payload's hash must not read as mined.
    payload, noop = attempt(1), attempt(3, AttemptReason.CANCEL)
    record_with(api, payload, noop, included=3)
    asked = "0x" + payload.hash.hex()
    answers[asked] = {"hash": asked, "blockHash": abandoned, "blockNumber": "0x1"}
    assert (await call(api, request("eth_getTransactionByHash", asked), a))["result"] is None
    # Included in our canonical block, the node still on the abandoned branch: not passed on;
    # once it catches up (same block), it is.
    api2 = tenant_api(passthrough=node)
    first = attempt(4)
    record = record_with(api2, first)
    record.included_hash, record.block = first.hash, BlockRef(1, canonical)
    mined = "0x" + first.hash.hex()
    answers[mined] = {"hash": mined, "blockHash": abandoned, "blockNumber": "0x1"}
    a2 = as_(api2, "tok-a")
    assert (await call(api2, request("eth_getTransactionByHash", mined), a2))["result"] is None
    answers[mined] = {"hash": mined, "blockHash": canonical, "blockNumber": "0x1"}
    assert (await call(api2, request("eth_getTransactionByHash", mined), a2))["result"] == (
        answers[mined]
    )
    # Pending (nothing included): the node's pending view passes as it is.
    api3 = tenant_api(passthrough=node)
    pending = attempt(5)
    record_with(api3, pending)
    waiting = "0x" + pending.hash.hex()
    answers[waiting] = {"hash": waiting, "blockHash": None}
    reply = await call(api3, request("eth_getTransactionByHash", waiting), as_(api3, "tok-a"))
    assert reply["result"] == answers[waiting]


async def test_a_slow_follower_neither_delays_nor_reorders_a_fast_ones_notifications() -> None:
    import aiohttp

    api = tenant_api(limits=ApiLimits(notify_queue=64))
    record = record_with(api, attempt(1))
    async with http_served(api) as where, aiohttp.ClientSession() as session:
        slow = await session.ws_connect(f"ws://{where}/full", max_msg_size=0)
        fast = await session.ws_connect(f"ws://{where}/full", max_msg_size=0)
        for ws in (slow, fast):
            await ws.send_bytes(orjson.dumps(request("broadcaster_subscribe")))
            assert "result" in orjson.loads((await ws.receive()).data)
        # The slow follower never reads again; the fast one gets every event, in order,
        # while the slow one's queue stays bounded (the excess dropped and counted).
        followers = list(api.subscriptions.followers())
        sent = 0
        pad = "x" * 4000  # 200 bursts x 50 x 4 kB: far beyond any socket buffer
        for _burst in range(200):
            for _ in range(50):
                api.notify(record, f"e{sent}{pad}")
                sent += 1
            for n in range(sent - 50, sent):
                note = orjson.loads((await fast.receive()).data)
                assert note["params"]["result"]["event"] == f"e{n}{pad}"
            assert all(f.outbox.qsize() <= 64 for f in followers)
        assert sum(f.dropped for f in followers) > 0  # the slow one's, not the fast one's
        await slow.close()
        await fast.close()


async def test_a_follower_that_lost_a_notification_is_closed_and_counted() -> None:
    """A dropped status change must not leave the bot believing the old status: the connection
    is closed (1013) so it reconnects and asks again, and the drop is counted for operators."""
    import aiohttp

    dropped: list[int] = []
    subscriptions = Subscriptions(on_dropped=lambda: dropped.append(1))
    api = tenant_api(limits=ApiLimits(notify_queue=8), subscriptions=subscriptions)
    record = record_with(api, attempt(1))
    async with http_served(api) as where, aiohttp.ClientSession() as session:
        slow = await session.ws_connect(f"ws://{where}/full", max_msg_size=0)
        fast = await session.ws_connect(f"ws://{where}/full", max_msg_size=0)
        for ws in (slow, fast):
            await ws.send_bytes(orjson.dumps(request("broadcaster_subscribe")))
            assert "result" in orjson.loads((await ws.receive()).data)
        pad = "x" * 4000
        sent = 0
        while not dropped:  # the slow one never reads: its socket buffers fill, then its queue
            for _ in range(8):
                api.notify(record, f"e{sent}{pad}")
                sent += 1
            for n in range(sent - 8, sent):
                note = orjson.loads((await fast.receive()).data)
                assert note["params"]["result"]["event"] == f"e{n}{pad}"
        # The slow one, read now, ends in a close (1013 when the close frame got through the
        # unread backlog, else an aborted socket), not in an endless stream missing events.
        async with asyncio.timeout(30):  # a hang guard: without the close it streams forever
            while True:
                message = await slow.receive()
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                    aiohttp.WSMsgType.ERROR):  # fmt: skip
                    break
        assert slow.close_code in (1013, 1006, None)
        assert slow.closed or message.type is aiohttp.WSMsgType.CLOSE
        assert len(api.subscriptions.followers()) == 1  # only the fast one follows now
        assert dropped and not any(f.dropped for f in api.subscriptions.followers())
        await fast.close()
