"""Adversarial review of the API (issue 13): hostile connections, continuity against a lagging
node, raw-transaction rule evasion. Real aiohttp server on 127.0.0.1 over the stub manager."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from broadcaster.api.server import ApiLimits
from nonce import AttemptReason, BlockRef
from tests.broadcaster.api.test_api import TOKEN, call, make_api, request
from tests.broadcaster.api.test_api_access import (
    as_,
    attempt,
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


async def one_exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(keep_alive_request(orjson.dumps(request("eth_chainId"))))
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
