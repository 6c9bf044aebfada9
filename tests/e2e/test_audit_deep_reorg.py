"""Every block of a reorg's new branch is reconciled live, not only the new tip (issue 18).

Real anvil (automine), the real enclave app, the real service. Three intents are mined in blocks
1-3; then ``anvil_reorg 3`` replaces all three with a branch whose *first* block (not its tip)
holds a transaction signed with our key outside the enclave. It is flagged live in that block:

- with the default window (``finality_depth = 64``) the tracker sees the fork point and emits a
  ``Reorg`` naming the whole new branch;
- with ``finality_depth = 2`` the fork point (genesis) is below the window: the tracker emits a
  ``DeepReorg`` naming only the new tip, and the reconciler walks the branch back itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from broadcaster.api.client import GWEI, BroadcasterClient
from broadcaster.dev.anvil import DEV_ADDRESS, DEV_KEY
from broadcaster.dev.stack import dev_stack

pytestmark = pytest.mark.e2e

RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
THIEF = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
SENDER = DEV_ADDRESS.lower()
FOREIGN = ("broadcaster_foreign_transactions_total", {"sender": SENDER})


async def until(predicate: Any, what: str, limit: float = 30.0) -> None:
    """Poll an async predicate until it holds (a deadline, not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + limit
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("finality_depth", [64, 2], ids=["reorg", "deep-reorg"])
async def test_a_foreign_tx_in_a_non_tip_block_of_a_depth_3_reorg_is_flagged_live(
    tmp_path: Path, finality_depth: int
) -> None:
    async with dev_stack(tmp_path, finality_depth=finality_depth) as stack:
        service, node = stack.service, stack.node
        async with await BroadcasterClient.connect(stack.api_url, token=stack.token) as bot:
            for value in (1000, 2000, 3000):  # nonces 0-2, blocks 1-3
                sent = await bot.send_intent(
                    to=RECIPIENT, value=value, gas=21_000, max_fee_per_gas=3 * GWEI,
                    max_priority_fee_per_gas=GWEI,
                )  # fmt: skip

                async def included(ref: str = sent["id"]) -> bool:
                    return (await bot.get_intent(ref))["status"] == "included"

                await until(included, f"intent {value}'s inclusion")
            reconciler = service.reconciler
            assert reconciler is not None
            assert int(await node.rpc("eth_blockNumber"), 16) == 3

            async def checked_up_to_tip() -> bool:
                return any(a.number == 3 for a in reconciler.checked)

            await until(checked_up_to_tip, "the reconciler to reach block 3")
            assert service.metrics.sample(*FOREIGN) == 0

            stolen = Account.sign_transaction(
                {"type": 2, "chainId": 31337, "nonce": 0, "to": THIEF, "value": 10**18,
                 "gas": 21_000, "maxFeePerGas": 3 * GWEI, "maxPriorityFeePerGas": GWEI},
                DEV_KEY,
            )  # fmt: skip
            await node.rpc("anvil_reorg", 3, [["0x" + stolen.raw_transaction.hex(), 0]])

            async def flagged() -> bool:
                return service.metrics.sample(*FOREIGN) == 1

            await until(flagged, "the foreign transaction to be flagged")

            async def reconciled() -> bool:  # by the reconciler itself (the tx side's
                # inclusion tracker also reports a nonce of ours taken by another tx)
                return any(
                    f.hash == bytes(stolen.hash) for a in reconciler.checked for f in a.foreign
                )

            await until(reconciled, "the reconciler to flag it in block 1 of the new branch")
            (audit,) = [a for a in reconciler.checked if a.foreign]
            assert audit.number == 1
            found = service.manager.observer.report.seen[(SENDER, 0)]  # type: ignore[union-attr]
            assert found is not None and found.hash == bytes(stolen.hash)
            mined = await node.rpc("eth_getTransactionReceipt", "0x" + stolen.hash.hex())
            assert found.block == int(mined["blockNumber"], 16) == 1
            assert found.block_hash == mined["blockHash"]
            assert int(await node.rpc("eth_blockNumber"), 16) >= 3  # block 1 is not the tip
            deep = service.metrics.sample("broadcaster_deep_reorgs_total") or 0
            reorgs = service.metrics.sample("broadcaster_reorgs_total") or 0
            if finality_depth == 2:
                assert deep >= 1  # the walk-back path was the one taken
            else:
                assert deep == 0 and reorgs >= 1
