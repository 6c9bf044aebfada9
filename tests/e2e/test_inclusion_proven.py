"""Inclusion is proven by the block's body, not a hash list's word (issue 18, DESIGN.md §5).

Real anvil (automine off, our transaction left pending in its pool) behind a real HTTP JSON-RPC
proxy that lies, listed first in a real :class:`ChainReader`, so it is asked first:

- its ``eth_getBlockByHash(h, false)`` hash list names our *unmined* transaction: the list alone
  made it ``included`` before (the simulator's strict xfail, now passing, pins the tracker's
  side in tests/broadcaster/tx/test_sim_adversarial.py);
- its full answer (``true``) either holds the block as it is (the proven body lacks ours), or
  plants our pending transaction in it (the body no longer hashes to ``transactionsRoot``:
  refused, counted, the block read from anvil), or makes the header unprovable (an extra header
  field: counted ``unverified``, the block read from anvil).

In every case :meth:`ChainReader.proven_blocks` returns anvil's real body, which does not hold
our transaction, and only that.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from eth_account import Account

from broadcaster.dev.anvil import free_port
from broadcaster.rpc.chain_reader import ChainReader
from tests.anvil import DEV_KEY, Anvil

pytestmark = pytest.mark.e2e

GWEI = 10**9
TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def pending_tx(anvil: Anvil) -> tuple[Any, dict[str, Any]]:
    """Our transaction sent to anvil's pool and left unmined, and its RPC object."""
    tx = Account.sign_transaction(
        {"type": 2, "chainId": 31337, "nonce": 0, "to": TO, "value": 1, "gas": 21_000,
         "maxFeePerGas": 3 * GWEI, "maxPriorityFeePerGas": GWEI},
        DEV_KEY,
    )  # fmt: skip
    anvil.rpc("eth_sendRawTransaction", "0x" + tx.raw_transaction.hex())
    obj = anvil.rpc("eth_getTransactionByHash", "0x" + tx.hash.hex())
    assert obj is not None and obj.get("blockHash") is None  # pending, not mined
    return tx, obj


class Liar:
    """A JSON-RPC proxy to anvil that names ``planted`` in every block it is asked about."""

    def __init__(self, target: str, planted: dict[str, Any], mode: str) -> None:
        self.target = target
        self.planted = planted
        self.mode = mode
        self.url = f"http://127.0.0.1:{free_port()}"

    def rewrite(self, call: dict[str, Any], reply: dict[str, Any]) -> None:
        block = reply.get("result")
        if call.get("method") != "eth_getBlockByHash" or type(block) is not dict:
            return
        if call["params"][1] is not True:
            block["transactions"].append(self.planted["hash"])
        elif self.mode == "plant":
            block["transactions"].append({**self.planted, "blockHash": block["hash"]})
        elif self.mode == "unprovable":
            block["someFutureField"] = "0x01"  # a header this code cannot hash
            block["transactions"].append({**self.planted, "blockHash": block["hash"]})

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Liar]:
        async with aiohttp.ClientSession() as session:

            async def handle(request: web.Request) -> web.Response:
                body = await request.read()
                async with session.post(
                    self.target, data=body, headers={"content-type": "application/json"}
                ) as upstream:
                    answer = orjson.loads(await upstream.read())
                calls = orjson.loads(body)
                by_id = {c.get("id"): c for c in calls}
                for reply in answer:
                    self.rewrite(by_id.get(reply.get("id"), {}), reply)
                return web.Response(body=orjson.dumps(answer), content_type="application/json")

            app = web.Application()
            app.router.add_post("/", handle)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", int(self.url.rsplit(":", 1)[1])).start()
            try:
                yield self
            finally:
                await runner.cleanup()


@pytest.mark.parametrize(
    ("mode", "counted"),
    # ``unverified`` counts a block *no* endpoint proved: anvil proves this one (next test).
    [("honest_body", []), ("plant", ["transactions_root"]), ("unprovable", [])],
)
async def test_a_lying_hash_list_cannot_prove_our_unmined_transaction_included(
    anvil: Anvil, mode: str, counted: list[str]
) -> None:
    anvil.rpc("evm_setAutomine", False)
    anvil.rpc("evm_mine")
    block_hash = anvil.rpc("eth_getBlockByNumber", "latest", False)["hash"]
    tx, obj = pending_tx(anvil)
    ours = bytes(tx.hash)
    liar = Liar(anvil.http_url, obj, mode)
    refused: list[tuple[str, str]] = []
    async with liar.running(), ChainReader([liar.url, anvil.http_url]) as reader:
        listed = await reader.blocks([block_hash])
        assert ours in listed[block_hash].tx_hashes  # the lie the scan used to believe
        assert reader.last_url == liar.url
        proven = await reader.proven_blocks(
            [block_hash], lambda url, why: refused.append((url, why))
        )
    body = proven[block_hash]
    assert ours not in {t.hash for t in body.txs}
    assert body.hash == block_hash and body.txs == ()  # anvil's real (empty) block
    assert refused == [(liar.url, why) for why in counted]


async def test_a_lone_lying_endpoint_with_an_unprovable_block_proves_nothing(anvil: Anvil) -> None:
    """The liar is the only read endpoint and makes the block unprovable: nothing is proven (the
    scan asks again, up to ``SCAN_RETRIES``; the intent stays ``broadcast``, never ``included``
    on the liar's word nor ``failed``), and the answer is counted ``unverified``."""
    anvil.rpc("evm_setAutomine", False)
    anvil.rpc("evm_mine")
    block_hash = anvil.rpc("eth_getBlockByNumber", "latest", False)["hash"]
    _, obj = pending_tx(anvil)
    liar = Liar(anvil.http_url, obj, "unprovable")
    refused: list[tuple[str, str]] = []
    async with liar.running(), ChainReader([liar.url]) as reader:
        proven = await reader.proven_blocks(
            [block_hash], lambda url, why: refused.append((url, why))
        )
    assert proven == {}
    assert refused == [(liar.url, "unverified")]
