"""A lying read RPC cannot make the reconciler call a transaction foreign, nor hide one (issue 18).

Real anvil behind a real HTTP JSON-RPC proxy that lies in its full-block answers
(``eth_getBlockByHash(h, true)`` / ``eth_getBlockByNumber(n, true)``), listed first among the
service's public RPCs, so the reconciler's reader asks it first; the real enclave app; the real
service with ``[audit] stop_signing_on_foreign = true``; head clients on anvil itself (the
trusted tracker):

- it **injects** into every block a transaction "from" our account (consistent in itself: signed
  by another key, its hash right). Before issue 18 that was a foreign transaction and, with
  ``stop_signing_on_foreign``, one RPC stopping our signing. Now the body no longer hashes to the
  header's ``transactionsRoot``: refused, counted (``audit_bad_blocks_total{reason=
  "transactions_root"}``), the block read from anvil directly; nothing foreign, signing goes on;
- it **relabels** the ``from`` of every transaction of ours (to hide one signed outside the
  enclave with our key): the sender is recovered from the signature, so the stolen transaction
  in a reorg's new branch is flagged all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from eth_account import Account

from broadcaster.api.client import GWEI, ApiError, BroadcasterClient
from broadcaster.dev.anvil import DEV_ADDRESS, DEV_KEY, free_port, start_anvil
from broadcaster.dev.stack import dev_stack

pytestmark = pytest.mark.e2e

RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
THIEF_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"  # anvil's 3rd
THIEF = Account.from_key(THIEF_KEY).address
SENDER = DEV_ADDRESS.lower()
FOREIGN = ("broadcaster_foreign_transactions_total", {"sender": SENDER})
BAD_ROOT = ("broadcaster_audit_bad_blocks_total", {"reason": "transactions_root"})


def signed(key: str, nonce: int, to: str, value: int) -> Any:
    tx = {
        "type": 2, "chainId": 31337, "nonce": nonce, "to": to, "value": value, "gas": 21_000,
        "maxFeePerGas": 3 * GWEI, "maxPriorityFeePerGas": GWEI,
    }  # fmt: skip
    return Account.sign_transaction(tx, key)


def planted(block: dict[str, Any]) -> dict[str, Any]:
    """A transaction object "from" our account, consistent in itself (the thief's signature)."""
    tx = signed(THIEF_KEY, 7, THIEF, 1)
    return {
        "type": "0x2", "chainId": "0x7a69", "nonce": "0x7", "to": THIEF.lower(), "value": "0x1",
        "gas": hex(21_000), "maxFeePerGas": hex(3 * GWEI), "maxPriorityFeePerGas": hex(GWEI),
        "gasPrice": hex(3 * GWEI), "input": "0x", "accessList": [], "r": hex(tx.r),
        "s": hex(tx.s), "yParity": hex(tx.v), "v": hex(tx.v), "hash": "0x" + tx.hash.hex(),
        "from": SENDER, "blockHash": block["hash"], "blockNumber": block["number"],
        "transactionIndex": hex(len(block["transactions"])),
    }  # fmt: skip


class LyingRpc:
    """An HTTP JSON-RPC proxy to ``target`` that rewrites full blocks per ``mode``."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.mode = "inject"
        self.lies = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def rewrite(self, call: dict[str, Any], reply: dict[str, Any]) -> None:
        params = call.get("params") or []
        full = call.get("method") in ("eth_getBlockByHash", "eth_getBlockByNumber")
        block = reply.get("result")
        if not full or len(params) < 2 or params[1] is not True or type(block) is not dict:
            return
        if self.mode == "inject":
            block["transactions"].append(planted(block))
            self.lies += 1
        elif self.mode == "relabel":
            for tx in block["transactions"]:
                if tx["from"].lower() == SENDER:
                    tx["from"] = THIEF.lower()
                    self.lies += 1

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LyingRpc]:
        async with aiohttp.ClientSession() as session:

            async def handle(request: web.Request) -> web.Response:
                body = await request.read()
                async with session.post(
                    self.target, data=body, headers={"content-type": "application/json"}
                ) as upstream:
                    answer = orjson.loads(await upstream.read())
                calls = orjson.loads(body)
                if type(calls) is list and type(answer) is list:
                    by_id = {c.get("id"): c for c in calls}
                    for reply in answer:
                        self.rewrite(by_id.get(reply.get("id"), {}), reply)
                elif type(calls) is dict and type(answer) is dict:
                    self.rewrite(calls, answer)
                return web.Response(body=orjson.dumps(answer), content_type="application/json")

            app = web.Application()
            app.router.add_post("/", handle)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            try:
                yield self
            finally:
                await runner.cleanup()


async def until(predicate: Any, what: str, limit: float = 30.0) -> None:
    """Poll an async predicate until it holds (a deadline, not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + limit
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def intent(bot: BroadcasterClient, value: int) -> dict[str, Any]:
    return await bot.send_intent(
        to=RECIPIENT, value=value, gas=21_000, max_fee_per_gas=3 * GWEI,
        max_priority_fee_per_gas=GWEI,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def lied_to(tmp_path: Path) -> AsyncIterator[tuple[Any, LyingRpc, BroadcasterClient]]:
    async with contextlib.AsyncExitStack() as stack:
        node = await stack.enter_async_context(start_anvil("anvil"))
        liar = await stack.enter_async_context(LyingRpc(node.http_url).running())
        dev = await stack.enter_async_context(
            dev_stack(
                tmp_path,
                node=node,
                endpoints=[("liar", liar.url, "public"), ("honest", node.http_url, "public")],
                stop_signing_on_foreign=True,
            )
        )
        bot = await stack.enter_async_context(
            await BroadcasterClient.connect(dev.api_url, token=dev.token)
        )
        yield dev, liar, bot


async def checked_up_to_tip(dev: Any) -> bool:
    tip = int(await dev.node.rpc("eth_blockNumber"), 16)
    reconciler = dev.service.reconciler
    return any(a.number == tip for a in reconciler.checked)


async def included(bot: BroadcasterClient, ref: str) -> bool:
    return (await bot.get_intent(ref))["status"] == "included"


@pytest.mark.timeout(120)
async def test_a_fake_tx_with_our_from_injected_by_a_read_rpc_is_not_foreign(
    tmp_path: Path,
) -> None:
    async with lied_to(tmp_path) as (dev, liar, bot):
        service = dev.service
        first = await intent(bot, 1000)
        await until(lambda: included(bot, first["id"]), "the first intent's inclusion")
        await until(lambda: checked_up_to_tip(dev), "the reconciler to reach the tip")
        assert liar.lies > 0  # the reconciler did read the liar's blocks
        assert service.metrics.sample(*FOREIGN) == 0
        assert service.health()["audit"]["stopped_senders"] == []
        assert (service.metrics.sample(*BAD_ROOT) or 0) > 0  # ...and refused them
        second = await intent(bot, 2000)  # signing goes on
        await until(lambda: included(bot, second["id"]), "the second intent's inclusion")
        await until(lambda: checked_up_to_tip(dev), "the reconciler to reach the new tip")
        assert service.metrics.sample(*FOREIGN) == 0


@pytest.mark.timeout(120)
async def test_a_real_foreign_tx_relabelled_by_a_read_rpc_is_still_flagged(
    tmp_path: Path,
) -> None:
    async with lied_to(tmp_path) as (dev, liar, bot):
        liar.mode = "relabel"
        service = dev.service
        first = await intent(bot, 1000)  # nonce 0, by the enclave
        await until(lambda: included(bot, first["id"]), "the first intent's inclusion")
        await until(lambda: checked_up_to_tip(dev), "the reconciler to reach the tip")
        assert service.metrics.sample(*FOREIGN) == 0
        # Our key, outside the enclave, at the nonce of the block the reorg drops.
        stolen = signed(DEV_KEY, 0, THIEF, 10**18)
        await dev.node.rpc("anvil_reorg", 1, [["0x" + stolen.raw_transaction.hex(), 0]])

        async def flagged() -> bool:
            return service.metrics.sample(*FOREIGN) == 1

        await until(flagged, "the relabelled foreign transaction to be flagged")
        assert liar.lies > 0  # the liar did relabel what the reconciler read
        found = service.manager.observer.report.seen[(SENDER, 0)]
        assert found is not None and found.hash == bytes(stolen.hash)
        with pytest.raises(ApiError) as refused:
            await intent(bot, 3000)
        assert "signing for " + SENDER + " is stopped" in refused.value.message
