"""ChainReader.mined_at against a real anvil, also as a geth-family node would answer it.

anvil 1.7.1 serves ``eth_getTransactionBySenderAndNonce`` (and otterscan's
``ots_getTransactionBySenderAndNonce``, and ``eth_getRawTransactionByHash``). geth serves
neither lookup: a proxy in front of the same anvil answers both as geth does (``-32601 the
method ... does not exist/is not available``) and forwards everything else, so the fallback
search runs over anvil's real state. Both ways must give the same answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from broadcaster.dev.local_http import serve_post
from broadcaster.rpc.chain_reader import ChainReader
from tests.anvil import DEV_ADDRESS, Anvil, running_anvil
from tests.broadcaster.rpc.fanout_helpers import signed_transfer

pytestmark = pytest.mark.e2e

LOOKUPS = ("eth_getTransactionBySenderAndNonce", "ots_getTransactionBySenderAndNonce")
SECOND = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # anvil's account 1 (unlocked)


class GethLike:
    """An HTTP JSON-RPC proxy to ``upstream`` without the sender-and-nonce lookups."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.refused: list[str] = []
        self.forwarded: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> GethLike:
        self._session = aiohttp.ClientSession(headers={"content-type": "application/json"})
        self._runner, port = await serve_post(self._handle)
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    async def _handle(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = orjson.loads(await request.read())
        calls = body if isinstance(body, list) else [body]
        answers: dict[Any, Any] = {}
        forward = []
        for call in calls:
            if call["method"] in LOOKUPS:
                self.refused.append(call["method"])
                message = f"the method {call['method']} does not exist/is not available"
                answers[call["id"]] = {
                    "jsonrpc": "2.0",
                    "id": call["id"],
                    "error": {"code": -32601, "message": message},
                }
            else:
                self.forwarded.append(call["method"])
                forward.append(call)
        if forward:
            async with self._session.post(self.upstream, data=orjson.dumps(forward)) as reply:
                for answer in orjson.loads(await reply.read()):
                    answers[answer["id"]] = answer
        out = [answers[call["id"]] for call in calls]
        payload = out if isinstance(body, list) else out[0]
        return web.Response(body=orjson.dumps(payload), content_type="application/json")


@pytest.fixture
def node() -> Iterator[Anvil]:
    with running_anvil() as anvil:
        yield anvil


@pytest.fixture
async def geth_like(node: Anvil) -> AsyncIterator[GethLike]:
    async with GethLike(node.http_url) as proxy:
        yield proxy


async def rpc(node: Anvil, method: str, *params: Any) -> Any:
    return await asyncio.to_thread(node.rpc, method, *params)


async def test_the_search_finds_what_anvils_own_lookup_finds(
    node: Anvil, geth_like: GethLike
) -> None:
    # Blocks 1..3: one transfer each (automine). Then block 4 with three of ours and one of
    # another sender, some empty blocks, block 7 with our last one; nonce 6 stays in the pool.
    raws = [signed_transfer(nonce, value=nonce + 1) for nonce in range(7)]
    for raw, _ in raws[:3]:
        await rpc(node, "eth_sendRawTransaction", "0x" + raw.hex())
    await rpc(node, "evm_setAutomine", False)
    for raw, _ in raws[3:6]:
        await rpc(node, "eth_sendRawTransaction", "0x" + raw.hex())
    await rpc(node, "eth_sendTransaction", {"from": SECOND, "to": SECOND, "value": "0x1"})
    await rpc(node, "evm_mine")
    for _ in range(2):
        await rpc(node, "evm_mine")
    await rpc(node, "eth_sendRawTransaction", "0x" + signed_transfer(6, value=7)[0].hex())
    await rpc(node, "evm_mine")
    await rpc(node, "eth_sendRawTransaction", "0x" + signed_transfer(7, value=8)[0].hex())
    assert int(await rpc(node, "eth_blockNumber"), 16) == 7

    async with ChainReader([node.http_url]) as direct, ChainReader([geth_like.url]) as search:
        for nonce in range(7):
            by_lookup = await direct.mined_at(DEV_ADDRESS, nonce)
            by_search = await search.mined_at(DEV_ADDRESS, nonce)
            assert by_lookup is not None, nonce
            assert by_search == by_lookup, nonce
        blocks = [(await search.mined_at(DEV_ADDRESS, n)) for n in range(7)]
        assert [m.block_number for m in blocks if m is not None] == [1, 2, 3, 4, 4, 4, 7]
        first = blocks[0]
        assert first is not None
        assert (first.raw, first.hash, first.value) == (raws[0][0], raws[0][1], 1)
        # Nonce 7 is in the pool only, nonce 8 was never used: not mined, both ways.
        for nonce in (7, 8):
            assert await direct.mined_at(DEV_ADDRESS, nonce) is None
            assert await search.mined_at(DEV_ADDRESS, nonce) is None
        other = await search.mined_at(SECOND, 0)
        assert other is not None and other.block_number == 4
    # The search really ran: the lookups were refused and the counts asked per block.
    assert set(geth_like.refused) == set(LOOKUPS)
    assert "eth_getTransactionCount" in geth_like.forwarded
    assert "eth_getBlockByNumber" in geth_like.forwarded


async def test_counts_from_every_endpoint_and_receipts_with_their_block(
    node: Anvil, geth_like: GethLike
) -> None:
    raw, tx_hash = signed_transfer(0)
    await rpc(node, "eth_sendRawTransaction", "0x" + raw.hex())
    # anvil's automine answers the send before the block is in: wait for the receipt, so both
    # endpoints count from the same block (a CI run once saw latest 0 on one of them).
    for _ in range(500):
        if await rpc(node, "eth_getTransactionReceipt", "0x" + tx_hash.hex()) is not None:
            break
        await asyncio.sleep(0.01)
    async with ChainReader([node.http_url, geth_like.url]) as reader:
        counts = await reader.transaction_counts_each(DEV_ADDRESS)
        assert counts == {node.http_url: (1, 1), geth_like.url: (1, 1)}
        receipts = await reader.receipts([tx_hash])
    block = await rpc(node, "eth_getBlockByNumber", "0x1", False)
    assert (receipts[tx_hash].block_number, receipts[tx_hash].block_hash) == (1, block["hash"])
