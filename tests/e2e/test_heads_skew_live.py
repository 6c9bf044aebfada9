"""Two head sources relaying one real anvil, one of them 400 ms late (DESIGN.md §3, rules v2).

The service follows two websocket relays of the same anvil (:class:`ChaosProxy`, the late one
delays every frame by 400 ms). A block holding our transaction is mined and at once reorged out
with ``anvil_reorg 1`` (automine off, so the replacement waits in the pool until both clients
delivered the reorg): the late client delivers its copy of the abandoned block after the fast
client announced the new branch, at the same height. Under rules v1 (ties to the latest
announcement) that copy flipped the tip back and its own copy of the new block flipped it again:
three reorgs and a replacement of the replacement (fees x1.21). Exactly one reorg is counted and
exactly one replacement goes out, at +10% (not compounded by a flip back and forth), and it is
mined.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from broadcaster.api.client import GWEI, BroadcasterClient
from broadcaster.dev.anvil import start_anvil, start_enclave
from tests.reliability.common import (
    TOKEN,
    ChaosProxy,
    running_service,
    service_config,
    until,
)

pytestmark = pytest.mark.e2e  # real anvil, real enclave app, real websockets

RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


async def test_a_reorg_seen_by_a_fast_and_a_late_client_is_one_reorg_and_one_replacement(
    tmp_path: Path,
) -> None:
    async with (
        start_anvil("chain") as node,
        start_enclave(tmp_path / "enclave") as signer_url,
        contextlib.AsyncExitStack() as stack,
    ):
        fast = await stack.enter_async_context(ChaosProxy(node.port))
        late = await stack.enter_async_context(ChaosProxy(node.port))
        late.slow(0.4)
        config = service_config(
            tmp_path,
            clients=[("fast", fast.ws_url), ("late", late.ws_url)],
            rpcs=[("rpc", node.http_url)],
            signer_url=signer_url,
        )
        async with running_service(config) as running:
            service = running.service
            hub = service.hub
            assert hub is not None
            await until(lambda: all(s.connected for s in hub.status()), "both clients up")
            async with await BroadcasterClient.connect(running.api_url, token=TOKEN) as bot:
                sent = await bot.send_intent(
                    to=RECIPIENT,
                    value=1234,
                    gas=21_000,
                    max_fee_per_gas=3 * GWEI,
                    max_priority_fee_per_gas=GWEI,
                )

                async def included() -> bool:
                    return (await bot.get_intent(sent["id"]))["status"] == "included"

                await until(included, "our transaction included (seen by the fast client)")
                mined = await node.rpc("eth_getTransactionReceipt", sent["hash"])
                assert mined is not None
                # The replacement must wait in the pool: were it mined at once, the new branch
                # would be higher than the late copies before they arrive and hide a flip back.
                await node.rpc("evm_setAutomine", False)
                # At once: the late client has not delivered the block holding our tx yet.
                await node.rpc("anvil_reorg", 1, [])
                reorged = (await node.rpc("eth_getBlockByNumber", "latest", False))["hash"]
                assert reorged != mined["blockHash"]

                def both_at(block_hash: str) -> bool:
                    return all(s.head_hash == block_hash for s in hub.status())

                await until(lambda: both_at(reorged), "the late client delivered the reorg")
                # The late client's copy of the abandoned block came in between: no flip back.
                assert running.metric("broadcaster_reorgs_total") == 1
                await node.rpc("evm_mine")

                async def replaced() -> bool:
                    intent = await bot.get_intent(sent["id"])
                    return intent["status"] == "included" and intent["hash"] != sent["hash"]

                await until(replaced, "the replacement mined")
                latest = (await node.rpc("eth_getBlockByNumber", "latest", False))["hash"]
                await until(lambda: both_at(latest), "the late client delivered everything")
                final = await bot.get_intent(sent["id"])
            tx = await node.rpc("eth_getTransactionByHash", final["hash"])
            assert int(tx["nonce"], 16) == int(sent["nonce"], 16)
            assert running.metric("broadcaster_reorgs_total") == 1
            assert running.metric("broadcaster_resends_total", reason="reorg") == 1
            assert final["hashes"] == [sent["hash"], final["hash"]]  # one replacement
            max_fee = int(tx["maxFeePerGas"], 16)
            tip = int(tx["maxPriorityFeePerGas"], 16)
            assert 3 * GWEI * 110 // 100 <= max_fee < 3 * GWEI * 121 // 100  # +10%, not x1.21
            assert GWEI * 110 // 100 <= tip < GWEI * 121 // 100
            assert hub.tracker.tip is not None and hub.tracker.tip.hash == latest
